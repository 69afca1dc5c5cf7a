"""Token counts without torch (launch/cost/tokencount.py) against what the training and evaluation jobs tokenise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from launch.cost import tokencount as tc
from launch.questions.data import load_questions
from launch.questions.prompting import SYSTEM_PROMPT, user_message
from launch.spec.config import DataSource

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "data" / "sample" / "cyber_mcq.json"
SMOLLM2 = REPO / ".cache" / "smollm2-135m-instruct"
CYBERMETRIC_500 = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"

# A Llama-3-style template: a BOS variable, header tokens, a loop with a namespace-free condition.
LLAMA3_STYLE = (
    "{{ bos_token }}{% for message in messages %}<|system|>{{ message['role'] }}<|end|>\n\n"
    "{{ message['content'] | trim }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def questions():
    return load_questions(DataSource(path=str(SAMPLE_DATA)))


def _save_tokenizer(directory: Path, template: str | None) -> Path:
    from train.tiny_model import DEFAULT_DATA, _corpus, build_tokenizer

    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    tok.chat_template = template
    tok.save_pretrained(directory)
    if template is None:
        (directory / "chat_template.jinja").unlink(missing_ok=True)
    return directory


def _what_the_jobs_see(directory: Path, train, eval_, max_len):
    """Lengths of launch.questions.prompting's training examples and scoring contexts, through transformers."""
    from launch.questions import prompting
    from train import batches

    tok = batches.load_tokenizer(str(directory))
    codec = prompting.AnswerCodec(tok)
    examples = [prompting.encode_training_example(tok, codec, q, max_len)[0] for q in train]
    answers = [len(codec.answer_ids(q.solution)) for q in train]
    contexts = [prompting.scoring_context(tok, codec, q, max_len) for q in eval_]
    return examples, answers, contexts


@pytest.mark.parametrize("template", ["tiny", "llama3-style", None])
@pytest.mark.parametrize("max_len", [512, 48])
def test_counted_tokens_equal_the_jobs_tokenisation(tmp_path, questions, monkeypatch, template, max_len):
    """Every count equals what the jobs build with transformers, chat template and truncation included."""
    from train.tiny_model import CHAT_TEMPLATE

    tpl = {"tiny": CHAT_TEMPLATE, "llama3-style": LLAMA3_STYLE, None: None}[template]
    directory = _save_tokenizer(tmp_path / "tok", tpl)
    monkeypatch.setattr(tc, "SAMPLE", 10**6)  # every example, no scaling
    train, eval_ = questions[:120], questions[120:180]
    counts = tc.count_tokens(train, eval_, str(directory), max_len, mode="count")
    examples, answers, contexts = _what_the_jobs_see(directory, train, eval_, max_len)
    assert counts.counted and counts.source == "tokens: counted with the tokenizer"
    assert counts.train.examples == 120 and counts.eval.examples == 60
    assert counts.train.tokens == sum(map(len, examples))
    assert counts.train.squared == sum(len(e) ** 2 for e in examples)
    assert counts.train.logit_tokens == sum(answers)
    assert counts.eval.tokens == sum(map(len, contexts))
    assert counts.eval.logit_tokens == 60
    assert counts.eval.shared_prefix == len(os.path.commonprefix(contexts))
    if max_len == 512:
        assert counts.eval.shared_prefix > 5  # the system prompt and "Question:" open every prompt


def test_large_splits_are_counted_on_a_sample_and_scaled(tmp_path, questions, monkeypatch):
    from train.tiny_model import CHAT_TEMPLATE

    directory = _save_tokenizer(tmp_path / "tok", CHAT_TEMPLATE)
    monkeypatch.setattr(tc, "SAMPLE", 10**6)
    full = tc.count_tokens(questions[:400], questions[400:], str(directory), 512, mode="count")
    monkeypatch.setattr(tc, "SAMPLE", 100)
    sampled = tc.count_tokens(questions[:400], questions[400:], str(directory), 512, mode="count")
    n_eval = len(questions) - 400
    assert sampled.source == (
        f"tokens: counted with the tokenizer on 100 of 400 training examples and 100 of "
        f"{n_eval:,} evaluation examples, scaled"
    )
    assert sampled.train.examples == 400
    assert sampled.train.tokens == pytest.approx(full.train.tokens, rel=0.03)
    assert sampled.eval.tokens == pytest.approx(full.eval.tokens, rel=0.03)
    again = tc.count_tokens(questions[:400], questions[400:], str(directory), 512, mode="count")
    assert again == sampled  # the same sample every run


def test_without_the_tokenizer_tokens_are_estimated_from_characters(tmp_path, questions, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    q = questions[0]
    counts = tc.count_tokens([q], [q, q], "meta-llama/Meta-Llama-3-8B", 512)
    assert not counts.counted
    assert counts.source == (
        "tokens: estimated from characters (3.6 characters per token; the tokenizer is not on this machine)"
    )
    prompt = len(f"{SYSTEM_PROMPT}\n\n{user_message(q)}\n\n") / 3.6
    assert counts.train.tokens == pytest.approx(prompt + tc.ANSWER_TOKENS)
    assert counts.train.logit_tokens == tc.ANSWER_TOKENS
    assert counts.eval.tokens == pytest.approx(2 * (prompt + len("ANSWER:") / 3.6))
    assert counts.eval.shared_prefix == round(len(f"{SYSTEM_PROMPT}\n\n{user_message(q)}\n\n") / 3.6)
    cut = tc.count_tokens([q], [q], "meta-llama/Meta-Llama-3-8B", 16)
    assert cut.train.tokens == 16  # cut at max_seq_len, as the jobs cut it
    assert tc.count_tokens([q], [q], "x", 512, mode="chars").source == (
        "tokens: estimated from characters (3.6 characters per token)"
    )


def test_auto_skips_a_tokenizer_too_large_for_the_dry_run(tmp_path, questions, monkeypatch):
    from train.tiny_model import CHAT_TEMPLATE

    directory = _save_tokenizer(tmp_path / "tok", CHAT_TEMPLATE)
    monkeypatch.setattr(tc, "TOKENIZER_BYTES_LIMIT", 1000)
    auto = tc.count_tokens(questions[:10], questions[10:20], str(directory), 512)
    assert not auto.counted and "tokenizer would slow the dry run, count it with mode='count'" in auto.source
    assert tc.count_tokens(questions[:10], questions[10:20], str(directory), 512, mode="count").counted
    with pytest.raises(ValueError, match="mode"):
        tc.count_tokens(questions[:10], questions[10:20], str(directory), 512, mode="exact")


def test_an_unreadable_tokenizer_falls_back_to_characters_and_says_why(tmp_path, questions):
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "tokenizer.json").write_text("{not json")
    counts = tc.count_tokens(questions[:10], questions[10:20], str(directory), 512)
    assert not counts.counted
    assert "; the tokenizer could not be used: Exception:" in counts.source


def test_without_the_tokenizers_package_tokens_are_estimated(tmp_path, questions, monkeypatch):
    from train.tiny_model import CHAT_TEMPLATE

    directory = _save_tokenizer(tmp_path / "tok", CHAT_TEMPLATE)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # the login node's base install
    counts = tc.count_tokens(questions[:10], questions[10:20], str(directory), 512)
    assert not counts.counted
    assert counts.source.endswith(
        "; tokenizers is not installed here (pip install tokenizers jinja2 counts with the tokenizer))"
    )


def test_hub_model_in_the_cache_is_counted(tmp_path, questions, monkeypatch):
    from train.tiny_model import CHAT_TEMPLATE

    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc"
    _save_tokenizer(snap, CHAT_TEMPLATE)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert tc.tokenizer_dir("org/tiny") == snap
    assert tc.count_tokens(questions[:10], questions[10:20], "org/tiny", 512).counted


@pytest.mark.skipif(
    not (SMOLLM2 / "tokenizer.json").is_file() or not CYBERMETRIC_500.is_file(),
    reason="needs .cache/smollm2-135m-instruct (make real-model) and ../shared CyberMetric-500",
)
def test_chars_per_token_constant_is_what_smollm2_measures_on_cybermetric():
    questions = load_questions(DataSource(path=str(CYBERMETRIC_500)))
    from launch.questions import prompting
    from train import batches

    tok = batches.load_tokenizer(str(SMOLLM2))
    tokens = sum(len(prompting.prompt_ids(tok, q)) for q in questions)
    chars = sum(len(tc.plain_prompt(q)) for q in questions)
    assert chars / tokens == pytest.approx(tc.CHARS_PER_TOKEN, rel=0.02)
    estimated = tc.count_tokens(questions, questions, "x", 2048, mode="chars")
    counted = tc.count_tokens(questions, questions, str(SMOLLM2), 2048, mode="count")
    assert estimated.train.tokens == pytest.approx(counted.train.tokens, rel=0.03)
