"""Evaluation: batched log-likelihood scoring equals one-at-a-time scoring; strict ANSWER parsing."""

from __future__ import annotations

import functools

import pytest
import torch

from launch.questions import prompting
from launch.questions.data import load_questions
from launch.spec.config import DataSource
from launch.store.expdir import ExperimentDir
from train import batches, evaluate, scoring


@pytest.fixture(scope="module")
def model_and_questions(tiny_model, repo):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = batches.load_tokenizer(str(tiny_model))
    questions = load_questions(DataSource(path=str(repo / "data" / "sample" / "cyber_mcq.json")))[::37][:12]
    return model, tokenizer, questions


def test_batched_scores_equal_single_scores(model_and_questions):
    model, tokenizer, questions = model_and_questions
    batched = scoring.score_loglik(model, tokenizer, questions, batch_size=5, max_len=256, progress=False)
    single = scoring.score_loglik(model, tokenizer, questions, batch_size=1, max_len=256, progress=False)
    assert len({len(prompting.prompt_ids(tokenizer, q)) for q in questions}) > 1, (
        "need prompts of different lengths to exercise padding"
    )
    for b, s in zip(batched, single):
        assert b["pred"] == s["pred"]
        for k in "ABCD":
            assert b["logprobs"][k] == pytest.approx(s["logprobs"][k], abs=1e-4)


def test_scores_match_a_plain_forward(model_and_questions):
    """The fast path (last-position logits only) equals the full forward of the context."""
    model, tokenizer, questions = model_and_questions
    q = questions[0]
    codec = prompting.AnswerCodec(tokenizer)
    ctx = prompting.scoring_context(tokenizer, codec, q, 256)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx])).logits[0, -1].float(), -1)
    got = scoring.score_loglik(model, tokenizer, [q], batch_size=1, max_len=256, progress=False)[0]
    for k in "ABCD":
        assert got["logprobs"][k] == pytest.approx(float(logp[codec.letter_ids[k][0]]), abs=1e-5)


def test_shared_prefix_is_the_system_turn_and_leaves_each_question_a_token(model_and_questions):
    _, tokenizer, questions = model_and_questions
    codec = prompting.AnswerCodec(tokenizer)
    ctxs = [prompting.scoring_context(tokenizer, codec, q, 256) for q in questions]
    n = scoring.shared_prefix_len(ctxs)
    assert n >= scoring.SHARED_PREFIX_MIN and all(c[:n] == ctxs[0][:n] for c in ctxs)
    assert len({c[n] for c in ctxs}) > 1  # the first token after it differs somewhere
    assert prompting.SYSTEM_PROMPT in tokenizer.decode(ctxs[0][:n])
    assert scoring.shared_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # identical contexts keep their last token
    assert scoring.shared_prefix_len([ctxs[0]]) == 0


@pytest.mark.parametrize("batch_size", [1, 5, 12])
def test_shared_prefix_cache_gives_the_scores_of_full_contexts(model_and_questions, batch_size):
    """Reusing the prefix's keys and values (padding between prefix and question) changes no score."""
    model, tokenizer, questions = model_and_questions
    shared = scoring.score_loglik(model, tokenizer, questions, batch_size=batch_size, max_len=256, progress=False)
    full = scoring.score_loglik(
        model, tokenizer, questions, batch_size=batch_size, max_len=256, progress=False, share_prefix=False
    )
    codec = prompting.AnswerCodec(tokenizer)
    assert (
        scoring.PrefixCache.build(model, [prompting.scoring_context(tokenizer, codec, q, 256) for q in questions])
        is not None
    )
    for a, b in zip(shared, full):
        assert a["pred"] == b["pred"]
        assert [a["logprobs"][k] for k in "ABCD"] == pytest.approx([b["logprobs"][k] for k in "ABCD"], abs=1e-4)


def test_shared_prefix_cache_on_a_4bit_adapter_model(tiny_model, model_and_questions):
    """The QLoRA model as the eval job loads it (NF4 base + PeftModel): same scores with and without the cache."""
    from peft import LoraConfig, get_peft_model

    from train import quant

    _, tokenizer, questions = model_and_questions
    base = quant.load_4bit(str(tiny_model), torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    shared = scoring.score_loglik(model, tokenizer, questions[:6], batch_size=3, max_len=256, progress=False)
    full = scoring.score_loglik(
        model, tokenizer, questions[:6], batch_size=3, max_len=256, progress=False, share_prefix=False
    )
    for a, b in zip(shared, full):
        assert [a["logprobs"][k] for k in "ABCD"] == pytest.approx([b["logprobs"][k] for k in "ABCD"], abs=1e-3)


def test_letters_are_single_tokens_for_the_tiny_tokenizer(model_and_questions):
    _, tokenizer, _ = model_and_questions
    codec = prompting.AnswerCodec(tokenizer)
    assert codec.single_token
    assert len(set(tuple(v) for v in codec.letter_ids.values())) == 4


def test_multi_token_path_agrees_with_fast_path(model_and_questions):
    model, tokenizer, questions = model_and_questions
    codec = prompting.AnswerCodec(tokenizer)
    ctxs = [prompting.scoring_context(tokenizer, codec, q, 256) for q in questions[:4]]
    with torch.no_grad():
        slow = scoring._multi_token_logp(model, ctxs, [codec.letter_ids[k] for k in "ABCD"], tokenizer.pad_token_id)
    fast = scoring.score_loglik(model, tokenizer, questions[:4], batch_size=4, max_len=256, progress=False)
    for row, f in zip(slow, fast):
        assert [float(x) for x in row] == pytest.approx([f["logprobs"][k] for k in "ABCD"], abs=1e-4)


@pytest.mark.parametrize(
    "text, letter",
    [
        ("ANSWER: B", "B"),
        (" ANSWER:C", "C"),
        ("ANSWER: D because", "D"),
        ("answer: B", None),
        ("B", None),
        ("The ANSWER: A", None),
        ("ANSWER: E", None),
        ("ANSWER: AB", None),
    ],
)
def test_strict_answer_parsing(text, letter):
    assert prompting.parse_answer(text) == letter


def test_generation_mode_reports_parse_failures(model_and_questions):
    model, tokenizer, questions = model_and_questions
    out = scoring.score_generate(
        model, tokenizer, questions[:4], batch_size=2, max_len=256, max_new_tokens=6, progress=False
    )
    assert len(out) == 4
    for o in out:  # an untrained model produces noise: parse failures are None, never a guess
        assert o["pred"] in (None, "A", "B", "C", "D")
        assert o["pred"] == prompting.parse_answer(o["generated"])


def test_training_and_scoring_use_the_same_prompt(model_and_questions):
    _, tokenizer, questions = model_and_questions
    codec = prompting.AnswerCodec(tokenizer)
    q = questions[0]
    ids, labels = prompting.encode_training_example(tokenizer, codec, q, 256)
    ctx = prompting.scoring_context(tokenizer, codec, q, 256)
    assert ids[: len(ctx)] == ctx
    assert ids[len(ctx) : len(ctx) + 1] == codec.letter_ids[q.solution]
    assert all(x == -100 for x in labels[: len(ctx) - len(codec.prefix_ids)])
    assert labels[-1] == tokenizer.eos_token_id
    assert "<|assistant|>" in tokenizer.decode(ids) and "Question:" in tokenizer.decode(ids)


def test_interrupted_evaluation_resumes_from_the_chunks_already_scored(model_and_questions, tmp_path):
    """A killed evaluation leaves complete chunk files only; the rerun scores just the rest
    and gives the same predictions as an uninterrupted run."""
    model, tokenizer, questions = model_and_questions
    calls: list[int] = []

    def score(chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-evaluation")
        return scoring.score_loglik(model, tokenizer, chunk, batch_size=4, max_len=256, progress=False)

    scored = ExperimentDir(tmp_path).eval
    chunk_file = functools.partial(scored.chunk_file, "m")
    with pytest.raises(KeyboardInterrupt):
        evaluate.score_in_chunks(score, questions, chunk_file, chunk_size=5)  # 12 questions: chunks of 5, 5, 2
    partial = scored.partial_dir("m")
    assert sorted(p.name for p in partial.iterdir()) == ["chunk-00000-of-00003.jsonl", "chunk-00001-of-00003.jsonl"]
    # A torn write (not through the atomic helper) is not trusted: that chunk is scored again.
    chunk_file(1, 3).write_text('{"pred": "A"}\n')
    calls.clear()
    resumed = evaluate.score_in_chunks(score, questions, chunk_file, chunk_size=5)
    assert calls == [5, 2]
    fresh = scoring.score_loglik(model, tokenizer, questions, batch_size=4, max_len=256, progress=False)
    assert [r["pred"] for r in resumed] == [r["pred"] for r in fresh]
    for r, f in zip(resumed, fresh):
        assert r["logprobs"] == pytest.approx(f["logprobs"], abs=1e-5)
