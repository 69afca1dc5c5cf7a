"""The shared evaluation job's scoring: the base model and every trained method, one eval split.

Run (normally the launcher does this, after every training job ended)::

    python -m launch.jobs EXP_DIR        # score, then the report and the W&B comparison

For each model it writes ``EXP/eval/predictions/<name>.jsonl`` (one line per question: gold,
prediction, per-letter log-likelihoods) and ``EXP/eval/results/<name>.json``
(:class:`~launch.store.expdir.EvalResult`: accuracy, Wilson 95% interval). A model already scored is
not scored again, and a model being scored keeps every chunk of questions already done, so a
rerun after a crash only does what is missing. The report is the next step of the evaluation
job (:mod:`launch.results.finalize`), not this module's.

Scoring is exact match on the answer letter: ``loglik`` picks the letter with
the highest log-likelihood after ``ANSWER:``; ``generate`` decodes greedily and
parses ``ANSWER: X`` strictly (anything else is a parse failure, counted wrong).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import torch

from launch.questions.data import load_jsonl_questions
from launch.spec import sweep
from launch.spec.config import ExperimentConfig
from launch.store.expdir import EvalDir, EvalProgress, EvalResult, ExperimentDir, now_iso, parse_result_ref, result_dir
from launch.store.fsio import atomic_write_jsonl
from train import batches, runtime
from train.features import HeadModel, LetterHead, score_head
from train.scoring import score_generate, score_loglik
from train.soft_prompt import SoftPrompted

# --------------------------------------------------------------------------- models


def eval_dtype(model_dtype: str, model: torch.nn.Module) -> torch.dtype | None:
    """The dtype the evaluation casts ``model`` to before scoring, or None to score it as loaded.

    ``model.dtype: auto`` on a CPU with bf16 matrix units (:func:`train.runtime.cpu_bf16_native`) scores a
    model of :data:`~train.runtime.CPU_BF16_MIN_PARAMS` parameters or more in bf16 weights (a 0.5B model's
    scoring forward ran 3.75x fp32 there, issue 27); the letters are still projected in fp32
    (:func:`train.scoring.letter_logprobs`). Elsewhere, and for an explicit ``model.dtype``, as loaded.
    """
    if model_dtype != "auto" or runtime.on_gpu() or not runtime.cpu_bf16_native():
        return None
    n = sum(p.numel() for p in model.parameters())
    return torch.bfloat16 if n >= runtime.CPU_BF16_MIN_PARAMS else None


def _for_scoring(cfg: ExperimentConfig, model: tp.Any) -> tp.Any:
    dtype = eval_dtype(cfg.model.dtype, model)
    return model.to(dtype) if dtype is not None else model


_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def precision_of(model: tp.Any) -> str:
    """The dtype most of ``model``'s floating-point weights are in (``fp32``, ``bf16``...); ``nf4/`` before it
    when 4-bit layers hold the rest."""
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model  # a HeadModel
    sizes: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel()
    dtype = max(sizes, key=sizes.__getitem__) if sizes else torch.float32
    name = _SHORT.get(dtype, str(dtype).removeprefix("torch."))
    quantised = any(p.__class__.__name__ == "Params4bit" for p in model.parameters())
    return f"nf4/{name}" if quantised else name


def load_for_eval(cfg: ExperimentConfig, name: str, exp_dir: str | os.PathLike) -> tp.Any:
    """What to score as ``name``, by its method's kind.

    The base model (``base``, and ``few_shot``: its examples are in the prompt), a full model
    (``full_sft``, ``multi_task`` with ``adapt: full``), the base with a LoRA adapter merged (``lora``,
    ``multi_task``) or on the 4-bit base it was trained with (``qlora``), the base with its soft prompt
    (``prompt_tuning``, :class:`~train.soft_prompt.SoftPrompted`), or the base and its head
    (``feature_head``, :class:`~train.features.HeadModel`). A plain causal LM (base, few-shot, full, merged
    LoRA) is then cast to :func:`eval_dtype`'s dtype when there is one.
    """
    from transformers import AutoModelForCausalLM

    dtype = runtime.resolve_dtype(cfg.model.dtype)
    device = "cuda" if runtime.on_gpu() else "cpu"
    kw = {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code}
    kind = "base" if name == "base" else cfg.method(name).kind
    trained = ExperimentDir(exp_dir).method(name)
    if kind == "qlora":  # the adapter on the same 4-bit base it was trained with
        from peft import PeftModel

        from train import quant

        base = quant.load_4bit(cfg.model.name_or_path, dtype, cfg.model.trust_remote_code)
        return PeftModel.from_pretrained(base, trained.adapter_dir)
    if kind in ("full_sft", "multi_task") and cfg.method(name).adapts == "full_sft":
        return _for_scoring(cfg, AutoModelForCausalLM.from_pretrained(trained.model_dir, **kw).to(device))
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kw).to(device)
    if kind in ("base", "few_shot"):
        return _for_scoring(cfg, base)
    if kind == "feature_head":
        return HeadModel(base, LetterHead.load(trained.head_file))
    from peft import PeftModel

    if kind == "prompt_tuning":
        return SoftPrompted(PeftModel.from_pretrained(base, trained.adapter_dir))
    # LoRA (and multi-task's LoRA): merged weights give the same outputs and a faster forward.
    return _for_scoring(cfg, PeftModel.from_pretrained(base, trained.adapter_dir).merge_and_unload())


def load_earlier(cfg: ExperimentConfig, name: str) -> tp.Any:
    """The result method ``name`` continued from (its ``init_from``), loaded as a result of its kind is:
    a full model, or the base with the adapter merged (the two kinds that continue)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method = cfg.method(name)
    kw = {"dtype": runtime.resolve_dtype(cfg.model.dtype), "trust_remote_code": cfg.model.trust_remote_code}
    device = "cuda" if runtime.on_gpu() else "cpu"
    saved = result_dir(method.init_from, method.adapts)
    if method.adapts == "full_sft":
        return _for_scoring(cfg, AutoModelForCausalLM.from_pretrained(saved, **kw).to(device))
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kw).to(device)
    return _for_scoring(cfg, PeftModel.from_pretrained(base, saved).merge_and_unload())


def scored_mode(cfg: ExperimentConfig, name: str) -> str:
    """How ``name`` is scored: ``eval.mode``, or ``head`` for a feature head (it never generates)."""
    return "head" if name != "base" and cfg.method(name).kind == "feature_head" else cfg.eval.mode


def shots_of(cfg: ExperimentConfig, name: str, exp: ExperimentDir) -> list:
    """The solved examples a ``few_shot`` method puts before each question (none for other kinds)."""
    if name == "base" or cfg.method(name).kind != "few_shot":
        return []
    return load_jsonl_questions(exp.method(name).shots_file)


def evaluate_model(
    cfg: ExperimentConfig,
    name: str,
    exp: ExperimentDir,
    questions: list,
    tokenizer: tp.Any,
    progress: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
    *,
    where: EvalDir | None = None,
    record_as: str | None = None,
    load: tp.Callable[[], tp.Any] | None = None,
) -> EvalResult:
    """Score one model, write its predictions and result; return the result.

    By default model ``name`` into the experiment's ``eval/``; a continued model's extra scoring
    (:func:`score_continual`) writes into ``where`` as ``record_as``, the model made by ``load``.
    """
    where, record_as = where or exp.eval, record_as or name
    t0 = time.perf_counter()
    model = load() if load is not None else load_for_eval(cfg, name, exp.root)
    shots, mode = shots_of(cfg, name, exp), scored_mode(cfg, name)
    precision = precision_of(model)
    if progress:
        print(f"[eval] {name}: scoring in {precision}", flush=True)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()

    def score(chunk: list) -> list[dict]:
        size, max_len, desc = cfg.eval.batch_size, cfg.model.max_seq_len, f"eval {name}"
        if mode == "head":
            return score_head(model, tokenizer, chunk, size, max_len, on_batch)
        if mode == "generate":
            new_tokens = cfg.eval.max_new_tokens
            return score_generate(
                model, tokenizer, chunk, size, max_len, new_tokens, desc, progress, on_batch, shots=shots
            )
        return score_loglik(model, tokenizer, chunk, size, max_len, desc, progress, on_batch=on_batch, shots=shots)

    chunk_file = functools.partial(where.chunk_file, record_as)
    scored = score_in_chunks(score, questions, chunk_file, chunk_size=max(256, 8 * cfg.eval.batch_size))
    eval_s = time.perf_counter() - t1
    model = None  # free it before the next model loads (the scoring closure above holds the name)
    gc.collect()
    predictions = [
        {"index": i, "question": q.question, "gold": q.solution, **s, "correct": s["pred"] == q.solution}
        for i, (q, s) in enumerate(zip(questions, scored))
    ]
    result = EvalResult.from_counts(
        record_as,
        sum(p["correct"] for p in predictions),
        len(predictions),
        mode,
        parse_failures=sum(p["pred"] is None for p in predictions) if mode == "generate" else None,
        # Questions whose best letter score two letters share (loglik, head; chunks scored before ties were
        # recorded count 0).
        ties=sum(bool(p.get("tie")) for p in predictions) if mode != "generate" else None,
        load_s=load_s,
        eval_s=eval_s,
        precision=precision,
    )
    where.write_predictions(record_as, predictions)
    where.write_result(result)
    shutil.rmtree(where.partial_dir(record_as), ignore_errors=True)  # the result file now holds it all
    return result


def score_continual(
    cfg: ExperimentConfig, exp: ExperimentDir, names: list[str], questions: list, tokenizer: tp.Any, progress: bool
) -> None:
    """For each scored model with ``init_from``: the earlier result on this split (``new``), and the model,
    the earlier result and base on the earlier experiment's eval split (``old``; ``EXP_DIR:method`` only).

    What :mod:`launch.results.finalize` pairs into the forgetting and gain of each continued row; like the main
    scoring, a model already scored is read back, not scored again.
    """
    for name in (n for n in names if n != "base" and model_config(cfg, n).method(n).init_from):
        view = model_config(cfg, name)
        ref = parse_result_ref(view.method(name).init_from)
        old = load_jsonl_questions(ref[0].data.eval_file) if ref else []
        earlier = functools.partial(load_earlier, view, name)
        jobs = [("new", "earlier", questions, earlier)]
        if old:
            base = functools.partial(load_for_eval, cfg, "base", exp.root)
            jobs += [("old", "continued", old, None), ("old", "earlier", old, earlier), ("old", "base", old, base)]
        for split, role, qs, load in jobs:
            where = exp.eval.continual(name, split)
            result = where.read_result(role) or evaluate_model(
                view, name, exp, qs, tokenizer, progress, where=where, record_as=role, load=load
            )
            print(f"[eval] {name} ({split} questions) {role}: accuracy {result.accuracy:.3f} of {result.n}", flush=True)


def score_in_chunks(
    score: tp.Callable[[list], list[dict]],
    questions: list,
    chunk_file: tp.Callable[[int, int], Path],
    chunk_size: int,
) -> list[dict]:
    """Score ``questions`` chunk by chunk, each chunk's scores saved atomically as it finishes.

    ``chunk_file(index, count)`` is where chunk ``index`` of ``count`` is kept
    (:meth:`launch.store.expdir.EvalDir.chunk_file`). A restarted evaluation job (requeued,
    preempted, killed) reuses every chunk already on disk and scores only the rest, so a long
    evaluation never starts over. A chunk file is written whole (temp file + rename) or not at
    all; one with the wrong number of rows is scored again.
    """
    out: list[dict] = []
    n_chunks = (len(questions) + chunk_size - 1) // chunk_size
    reused = 0
    for c in range(n_chunks):
        chunk = questions[c * chunk_size : (c + 1) * chunk_size]
        path = chunk_file(c, n_chunks)
        rows = _read_chunk(path, len(chunk))
        if rows is None:
            rows = score(chunk)
            atomic_write_jsonl(path, rows)
        else:
            reused += 1
        out.extend(rows)
    if reused:
        print(f"[eval] resumed: {reused}/{n_chunks} chunk(s) of {path.parent.name} already scored", flush=True)
    return out


def _read_chunk(path: Path, expected: int) -> list[dict] | None:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return None
    return rows if len(rows) == expected else None


def models_to_score(cfg: ExperimentConfig, exp: ExperimentDir, shard: tuple[int, int] | None = None) -> list[str]:
    """``base`` (if asked) and every cell (a method without a sweep) whose training completed, or that
    trains nothing; with ``shard = (i, n)`` the share of one evaluation task: every ``n``-th of the
    planned models from the ``i``-th, so the tasks of an array never score the same model."""
    cells = {c.id: c for c in sweep.cells(cfg)}
    planned = (["base"] if cfg.eval.include_base else []) + list(cells)
    if shard is not None:
        planned = planned[shard[0] :: shard[1]]
    return [
        name
        for name in planned
        if name == "base" or not cells[name].trains or exp.method(name).read_metrics().completed
    ]


def model_config(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config a model is loaded and scored with: the experiment's for ``base``, a cell's view otherwise."""
    return cfg if name == "base" else sweep.locate(cfg, name)[0]


class ScoringProgress:
    """Writes ``EXP/eval/progress.json`` (:class:`~launch.store.expdir.EvalProgress`) for the launcher to show:
    atomically when a model starts and ends, and at most every :attr:`EVERY_S` seconds between."""

    EVERY_S = 1.0

    def __init__(self, where: EvalDir, models: list[str], total: int, shard: int | None = None) -> None:
        self.where, self.models, self.shard = where, models, shard
        self.record = EvalProgress(models=len(models), total=total)
        self._written = 0.0

    def start(self, name: str) -> None:
        self.record.model, self.record.index, self.record.done = name, self.models.index(name) + 1, 0
        self._write()

    def advance(self, n: int) -> None:
        self.record.done += n
        if time.monotonic() - self._written >= self.EVERY_S:
            self._write()

    def finish(self, accuracy: float) -> None:
        self.record.done = self.record.total
        self.record.finished.append({"model": self.record.model, "accuracy": accuracy})
        self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        self.record.updated_at = now_iso()
        self.where.write_progress(self.record, self.shard)


# --------------------------------------------------------------------------- main


@dataclass
class Scored:
    """What the scoring step hands to the report (:mod:`launch.results.finalize`)."""

    results: dict[str, EvalResult]
    """Model name (``base`` included) -> its result."""
    n_questions: int
    gpus: int
    """GPUs the job holds (0 on CPU): the evaluation's own cost."""
    threads: int


def main(
    cfg: ExperimentConfig,
    exp_dir: str | os.PathLike,
    threads: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> Scored:
    """Score every model (those already scored are read back); write predictions and results.

    ``shard = (i, n)``: only task ``i``'s share of ``n`` (:func:`models_to_score`).
    """
    # --- config & setup
    exp = ExperimentDir(exp_dir)
    runtime.setup_runtime(cfg.seed, threads)

    # --- data
    tokenizer = batches.load_tokenizer(cfg.model.name_or_path)
    questions = batches.load_split(cfg, exp, "eval")

    # --- score each model (skipping those already scored: the job is idempotent)
    results: dict[str, EvalResult] = {}
    names = models_to_score(cfg, exp, shard)
    tracker = ScoringProgress(exp.eval, names, len(questions), shard[0] if shard else None)
    for name in names:
        tracker.start(name)
        results[name] = exp.eval.read_result(name) or evaluate_model(
            model_config(cfg, name), name, exp, questions, tokenizer, progress, on_batch=tracker.advance
        )
        tracker.finish(results[name].accuracy)
        print(f"[eval] {name}: accuracy {results[name].accuracy:.3f} on {results[name].n} questions", flush=True)
    if shard is None:  # the evaluation job itself (not a task of an array) scores the continued rows' extras
        score_continual(cfg, exp, names, questions, tokenizer, progress)
    r = cfg.eval.resources
    gpus = r.nodes * r.gpus_per_node if runtime.on_gpu() else 0
    return Scored(results, len(questions), gpus, threads or torch.get_num_threads())


if __name__ == "__main__":
    import sys

    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[1])
