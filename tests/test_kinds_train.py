"""The four kinds added to full SFT, LoRA and QLoRA, on the compute side: each entrypoint runs and its
result is scored by the shared evaluation; few-shot examples, soft prompts under the evaluator's padding
and prefix cache, the feature head's features, and multi-task losses per task."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from launch.jobs import ENTRYPOINTS
from launch.questions import prompting
from launch.questions.data import load_questions, normalize_question
from launch.spec.config import LETTERS, DataSource
from support.experiments import new_experiment
from train import batches, evaluate, packing, scoring
from train.features import LetterHead, extract, hidden_index, score_head
from train.few_shot import select_shots
from train.soft_prompt import SoftPrompted

NEW_KINDS = ("few_shot", "prompt_tuning", "feature_head", "multi_task")


@pytest.fixture(scope="module")
def model_and_questions(tiny_model, repo):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = batches.load_tokenizer(str(tiny_model))
    questions = load_questions(DataSource(path=str(repo / "data" / "sample" / "cyber_mcq.json")))
    return model, tokenizer, questions


def _last_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)


def _assert_scores_equal(got: list[dict], want: list[torch.Tensor], codec, abs_tol: float = 2e-5) -> None:
    for row, logp in zip(got, want):
        for letter in LETTERS:
            assert row["logprobs"][letter] == pytest.approx(float(logp[codec.letter_ids[letter][0]]), abs=abs_tol)


# --------------------------------------------------------------------------- few-shot


def test_shots_are_seeded_balanced_and_never_an_eval_question(model_and_questions):
    _, _, questions = model_and_questions
    train, eval_ = questions[:400], questions[400:] + questions[:40]  # 40 training questions also in eval
    shots = select_shots(train, eval_, 10, seed=3)
    assert shots == select_shots(train, eval_, 10, seed=3) and shots != select_shots(train, eval_, 10, seed=4)
    counts = Counter(q.solution for q in shots)
    assert len(shots) == 10 and set(counts) == set(LETTERS) and max(counts.values()) - min(counts.values()) <= 1
    in_eval = {normalize_question(q.question) for q in eval_}
    assert not any(normalize_question(q.question) in in_eval for q in shots)
    with pytest.raises(ValueError, match="few_shot.k: 361, but only 360"):
        select_shots(train, eval_, 361, seed=0)


def test_few_shot_scores_with_the_prefix_cache_equal_full_contexts(model_and_questions):
    """The examples are in every scored context (and in the prefix computed once), and the scores are those
    of a plain forward of each full context. Fails on the code that took ``shots`` and dropped them."""
    model, tokenizer, questions = model_and_questions
    shots, scored = questions[:3], questions[100:106]
    codec = prompting.AnswerCodec(tokenizer)
    contexts = [prompting.scoring_context(tokenizer, codec, q, 1024, shots) for q in scored]
    shot_ids = prompting.prompt_ids(tokenizer, shots[-1])  # the last example's text is inside the shared prefix
    assert scoring.shared_prefix_len(contexts) > len(shot_ids)
    got = scoring.score_loglik(model, tokenizer, scored, batch_size=4, max_len=1024, progress=False, shots=shots)
    _assert_scores_equal(got, [_last_logprobs(model, c) for c in contexts], codec)
    plain = scoring.score_loglik(model, tokenizer, scored, batch_size=4, max_len=1024, progress=False)
    assert any(g["logprobs"] != p["logprobs"] for g, p in zip(got, plain))


def test_shots_are_prior_chat_turns(model_and_questions):
    _, tokenizer, questions = model_and_questions
    q, shots = questions[200], questions[:2]
    text = prompting.prompt_text(tokenizer, q, shots)
    for shot in shots:
        assert prompting.user_message(shot) in text and f"ANSWER: {shot.solution}" in text
    assert text.index(prompting.user_message(shots[1])) < text.index(prompting.user_message(q))
    assert text.endswith(prompting.prompt_text(tokenizer, q).split(prompting.user_message(q))[1])


# --------------------------------------------------------------------------- soft prompts


@pytest.fixture(scope="module")
def soft_prompted(model_and_questions, tiny_model):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    with torch.no_grad():  # a prompt far from peft's small random init, so a misplaced one shows
        peft_model.prompt_encoder["default"].embedding.weight.normal_(0, 1.0)
    return peft_model.eval()


@pytest.mark.parametrize("share_prefix", [True, False])
def test_soft_prompt_scores_under_left_padding_and_prefix_cache_equal_peft_plain_forward(
    soft_prompted, model_and_questions, share_prefix
):
    _, tokenizer, questions = model_and_questions
    scored = questions[::41][:7]
    codec = prompting.AnswerCodec(tokenizer)
    contexts = [prompting.scoring_context(tokenizer, codec, q, 256) for q in scored]
    assert len({len(c) for c in contexts}) > 1  # rows of different lengths: left padding is exercised
    with torch.no_grad():  # peft's own forward of one unpadded row: the virtual tokens first
        want = [
            torch.log_softmax(soft_prompted(input_ids=torch.tensor([c])).logits[0, -1].float(), -1) for c in contexts
        ]
    model = SoftPrompted(soft_prompted)
    got = scoring.score_loglik(model, tokenizer, scored, 3, 256, progress=False, share_prefix=share_prefix)
    _assert_scores_equal(got, want, codec, abs_tol=1e-4)


def test_soft_prompt_training_loss_equals_peft_loss_on_right_padded_rows(soft_prompted, examples, tok):
    batch = batches.collate(examples[:4], tok.pad_token_id)
    with torch.no_grad():
        ours = packing.answer_loss(SoftPrompted(soft_prompted), batch)
        theirs = soft_prompted(**batch).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


# --------------------------------------------------------------------------- feature head


def test_features_batched_equal_one_at_a_time_and_the_layer_index(model_and_questions):
    model, tokenizer, questions = model_and_questions
    scored = questions[::53][:6]
    batched = extract(model, tokenizer, scored, 1, batch_size=4, max_len=256)
    single = extract(model, tokenizer, scored, 1, batch_size=1, max_len=256)
    assert batched.shape == (6, model.config.hidden_size)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    n = model.config.num_hidden_layers
    assert [hidden_index(i, n, "m") for i in (0, n, -1, -(n + 1))] == [0, n, n, 0]
    with pytest.raises(ValueError, match=rf"m.feature_head.layer: {n + 1}, but the model has {n} layers"):
        hidden_index(n + 1, n, "m")


def test_head_saved_and_loaded_scores_the_same(model_and_questions, tmp_path):
    from launch.spec.config import FeatureHeadSettings

    model, tokenizer, questions = model_and_questions
    features = extract(model, tokenizer, questions[:20], 2, batch_size=8, max_len=256)
    torch.manual_seed(0)
    head = LetterHead.for_features(features, 2, FeatureHeadSettings())
    head.save(tmp_path / "head.safetensors")
    loaded = LetterHead.load(tmp_path / "head.safetensors")
    assert loaded.layer == 2
    torch.testing.assert_close(loaded(features), head(features))
    rows = score_head(evaluate.HeadModel(model, loaded), tokenizer, questions[:20], 8, 256)
    for row, logits in zip(rows, head(features)):
        assert sum(torch.tensor(list(row["logprobs"].values())).exp()) == pytest.approx(1.0, abs=1e-5)
        assert row["pred"] == LETTERS[int(logits.argmax())]


# --------------------------------------------------------------------------- multi-task losses


def test_each_task_loss_is_the_mean_over_its_own_answer_tokens(model_and_questions, examples, tok):
    import dataclasses

    model, _, _ = model_and_questions
    mixed = [dataclasses.replace(e, task=i % 2) for i, e in enumerate(examples[:6])]
    for collate in (batches.collate, packing.collate_packed):
        losses, tasks = packing.answer_token_losses(model, collate(mixed, tok.pad_token_id))
        for task in (0, 1):
            alone = [e for e in mixed if e.task == task]
            with torch.no_grad():
                want = packing.answer_loss(model, batches.collate(alone, tok.pad_token_id))
            assert float(losses[tasks == task].mean()) == pytest.approx(float(want), rel=1e-4), collate.__name__


# --------------------------------------------------------------------------- each entrypoint, then its score


def _experiment(smoke_overrides, kind):
    steps = [f"methods.{kind}.max_steps=4", f"methods.{kind}.micro_batch_size=8"] if kind != "few_shot" else []
    limits = ["tracking.backend=none", "data.max_train=64", "data.max_eval=16"]
    return new_experiment(smoke_overrides + limits + steps)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_entrypoint_runs_and_the_evaluation_scores_it(kind, smoke_overrides, monkeypatch):
    cfg, exp = _experiment(smoke_overrides, kind)
    metrics = importlib.import_module(ENTRYPOINTS[kind]).main(cfg, kind, exp, threads=1)
    trained = exp.method(kind)
    assert json.loads(trained.metrics_file.read_text()) == metrics and metrics["status"] == "completed"
    tokenizer = batches.load_tokenizer(cfg.model.name_or_path)
    eval_ = batches.load_split(cfg, exp, "eval")
    result = evaluate.evaluate_model(cfg, kind, exp, eval_, tokenizer, progress=False)
    preds = [json.loads(line) for line in exp.eval.predictions_file(kind).read_text().splitlines()]
    assert result.n == len(preds) == 16 and {"gold", "pred", "logprobs", "correct"} <= preds[0].keys()
    _check_kind(kind, cfg, exp, metrics, result, monkeypatch)


def _check_kind(kind, cfg, exp, metrics, result, monkeypatch):
    trained = exp.method(kind)
    if kind == "few_shot":
        shots = load_questions(DataSource(path=str(trained.shots_file), format="jsonl"))
        assert len(shots) == cfg.method(kind).few_shot.k and metrics["trainable_params"] == 0
        in_eval = {normalize_question(q.question) for q in batches.load_split(cfg, exp, "eval")}
        assert not any(normalize_question(q.question) in in_eval for q in shots)
    elif kind == "prompt_tuning":
        assert (trained.adapter_dir / "adapter_model.safetensors").is_file() and metrics["steps"] == 4
        assert metrics["trainable_params"] == 16 * _hidden(cfg)  # the virtual tokens' embeddings
    elif kind == "feature_head":
        assert result.mode == "head" and trained.head_file.is_file() and trained.features_file("train").is_file()
        assert metrics["trainable_params"] == 4 * (_hidden(cfg) + 1)
        from train import feature_head

        monkeypatch.setattr(feature_head, "extract", _no_extraction)  # a rerun reads the cached features
        assert feature_head.main(cfg, kind, exp, threads=1)["status"] == "completed"
    else:
        assert set(metrics["task_losses"]) == {"target", "netsys"} and all(
            v > 0 for v in metrics["task_losses"].values()
        )
        assert metrics["task_examples"]["netsys"] == round(metrics["task_examples"]["target"] * 0.5)
        progress = json.loads(trained.progress_file.read_text())
        assert set(progress["task_losses"]) <= {"target", "netsys"} and progress["task_losses"]
        assert (trained.adapter_dir / "adapter_model.safetensors").is_file()


def _hidden(cfg) -> int:
    return json.loads((Path(cfg.model.name_or_path) / "config.json").read_text())["hidden_size"]


def _no_extraction(*args, **kwargs):
    raise AssertionError("features extracted again although they are cached")
