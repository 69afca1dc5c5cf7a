"""The shared evaluation job: the base model and every trained method, one eval split.

Run (normally the launcher does this, after every training job ended)::

    python -m train.evaluate EXP_DIR

For each model it writes ``EXP/eval/predictions/<name>.jsonl`` (one line per
question: gold, prediction, per-letter log-likelihoods) and
``EXP/eval/results/<name>.json`` (accuracy, Wilson 95% interval), then the
comparison report (``summary.json``, ``report.md``, ``report.html``) and one W&B
run with the comparison table and chart. A model already scored is not
scored again, so a rerun after a crash only does what is missing.

Scoring is exact match on the answer letter: ``loglik`` picks the letter with
the highest log-likelihood after ``ANSWER:``; ``generate`` decodes greedily and
parses ``ANSWER: X`` strictly (anything else is a parse failure, counted wrong).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import shutil
import sys
import time
import typing as tp
from pathlib import Path

import torch

from launch import report, slurm
from launch.config import LETTERS, ExperimentConfig, TrackingConfig
from launch.fsio import atomic_write_json, atomic_write_jsonl, read_json
from launch.submit import load_experiment_profile
from train import common, prompting

# --------------------------------------------------------------------------- batching


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Left-pad so every row ends at the last column; positions count real tokens only."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    # Explicit positions make a left-padded row compute exactly what it would alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def _batches(order: list[int], size: int) -> tp.Iterator[list[int]]:
    for i in range(0, len(order), size):
        yield order[i : i + size]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- scoring


SHARED_PREFIX_MIN = 8
"""Below this many shared tokens, the extra prefix forward and the per-batch cache copy are not worth it."""


def shared_prefix_len(contexts: list[list[int]]) -> int:
    """How many leading tokens every context shares, leaving each at least its last token.

    Every question's prompt starts with the same system turn and ``Question:``; their
    keys and values do not depend on the question, so they are computed once.
    """
    if len(contexts) < 2:
        return 0
    common = os.path.commonprefix(contexts)  # element-wise, so it works on lists of ids
    return min(len(common), min(len(c) for c in contexts) - 1)


class PrefixCache:
    """The KV cache of the shared prefix, computed once and copied into each batch.

    A copy per batch, because the forward appends the batch's own keys and values to
    the cache it is given. ``None`` from :meth:`build` means: score without it (no
    shared prefix worth caching, or a model whose cache cannot be repeated per row).
    """

    def __init__(self, prefix_ids: list[int], past: tp.Any) -> None:
        self.prefix_ids = prefix_ids
        self.past = past

    @classmethod
    def build(cls, model: tp.Any, contexts: list[list[int]]) -> PrefixCache | None:
        n = shared_prefix_len(contexts)
        # Under a sliding window the padding between the prefix and a row's own tokens would count as
        # distance: exact only while every context fits in the window (Mistral's 4096, Gemma's 4096).
        window = getattr(getattr(model, "config", None), "sliding_window", None)
        if n < SHARED_PREFIX_MIN or (window and max(map(len, contexts)) > window):
            return None
        prefix = contexts[0][:n]
        past = model(
            input_ids=torch.tensor([prefix], device=_device(model)), use_cache=True, logits_to_keep=1
        ).past_key_values
        if not hasattr(past, "batch_repeat_interleave"):
            return None
        return cls(prefix, past)

    def extend(self, batch: dict[str, torch.Tensor]) -> dict[str, tp.Any]:
        """``batch`` (the contexts without the prefix, left-padded) made to follow the cached prefix."""
        rows, n = batch["input_ids"].shape[0], len(self.prefix_ids)
        past = copy.deepcopy(self.past)
        past.batch_repeat_interleave(rows)
        mask = batch["attention_mask"]
        # Padding sits between the prefix and each row's own tokens: masked out, and the
        # positions continue from the prefix, so every row computes what it would alone.
        return {
            "input_ids": batch["input_ids"],
            "past_key_values": past,
            "use_cache": True,
            "attention_mask": torch.cat([mask.new_ones(rows, n), mask], dim=1),
            "position_ids": batch["position_ids"] + n,
        }


def letter_logprobs(
    model: tp.Any, rows: list[list[int]], pad_id: int, prefix: PrefixCache | None, letter_cols: list[int]
) -> torch.Tensor:
    """Log-probabilities of the answer letters after each context, (rows, 4) in float32; one forward.

    The letters' logits are the last hidden state projected onto their 4 rows of the output
    layer in fp32: a bf16 model's logits of 16-32 are 0.125 apart, so close letters would tie
    (and the first would win), and which ones tie would depend on the batch. The normaliser
    (logsumexp over the vocabulary) comes from the model's own logits, upcast: it is the same
    for the 4 letters, so its rounding never changes a prediction.
    """
    if prefix is None:
        batch: dict[str, tp.Any] = {**left_pad(rows, pad_id, _device(model)), "use_cache": False}
    else:
        n = len(prefix.prefix_ids)
        batch = prefix.extend(left_pad([r[n:] for r in rows], pad_id, _device(model)))
    head = _plain_output_layer(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, args, out: seen.append(args[0])) if head is not None else None
    try:
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :]
    finally:
        if hook is not None:
            hook.remove()
    lse = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    if head is None or len(seen) != 1:
        return logits[:, letter_cols].float() - lse
    weight = head.weight[letter_cols].float()
    letters = seen[0][:, -1, :].float() @ weight.T
    if head.bias is not None:
        letters = letters + head.bias[letter_cols].float()
    return letters - lse


def _plain_output_layer(model: tp.Any) -> torch.nn.Linear | None:
    """The model's output layer when its logits are exactly ``hidden @ W.T (+ b)``, else None.

    None for layers wrapped by peft (an adapter on ``lm_head``) or quantised, and for models that
    transform logits after the projection (soft-capping, a logit scale).
    """
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if type(head) is torch.nn.Linear else None


def count_ties(scores: list[float]) -> int:
    """How many letters share the best score (1: a clear winner)."""
    best = max(scores)
    return sum(x == best for x in scores)


@torch.no_grad()
def score_loglik(
    model: tp.Any,
    tokenizer: tp.Any,
    questions: list,
    batch_size: int,
    max_len: int,
    desc: str = "eval",
    progress: bool = True,
    share_prefix: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
) -> list[dict]:
    """Log-likelihood of each answer letter after ``ANSWER:``; the argmax is the prediction.

    Questions are batched by length (less padding), the prompt prefix they all share
    is run once and its KV cache reused (``share_prefix``), and only the last
    position's logits are computed (``logits_to_keep=1``): with a 128k vocabulary
    the full logits of a batch would take gigabytes. The letters are scored in fp32
    (:func:`letter_logprobs`); ``tie`` marks a question whose best score two letters
    share (the first of them is the prediction). ``on_batch(n)`` is told each batch's size.
    """
    from tqdm.auto import tqdm

    model.eval()
    codec = prompting.AnswerCodec(tokenizer)
    contexts = [prompting.scoring_context(tokenizer, codec, q, max_len) for q in questions]
    letter_rows = [codec.letter_ids[k] for k in LETTERS]
    letter_cols = [r[0] for r in letter_rows]
    prefix = PrefixCache.build(model, contexts) if share_prefix and codec.single_token else None
    out: list[dict | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(contexts[i]))
    bar = tqdm(total=len(questions), desc=desc, disable=not progress, mininterval=1.0)
    for idx in _batches(order, batch_size):
        rows = [contexts[i] for i in idx]
        if codec.single_token:
            logp = letter_logprobs(model, rows, tokenizer.pad_token_id, prefix, letter_cols)
        else:  # a tokenizer that splits " A": score each letter's tokens in full
            logp = _multi_token_logp(model, rows, letter_rows, tokenizer.pad_token_id)
        for row, i in enumerate(idx):
            scores = [float(x) for x in logp[row]]
            pred = LETTERS[max(range(4), key=scores.__getitem__)]
            out[i] = {"pred": pred, "logprobs": dict(zip(LETTERS, scores)), "tie": count_ties(scores) > 1}
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    bar.close()
    return tp.cast(list[dict], out)


def _multi_token_logp(model: tp.Any, contexts: list[list[int]], letters: list[list[int]], pad_id: int) -> torch.Tensor:
    """Summed log-probabilities of multi-token continuations, one forward per letter."""
    cols = []
    for cont in letters:
        batch = left_pad([c + cont for c in contexts], pad_id, _device(model))
        logits = model(**batch, logits_to_keep=len(cont) + 1).logits[:, :-1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(cont, device=logp.device).expand(len(contexts), -1)
        cols.append(logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(cols, dim=1)


@torch.no_grad()
def score_generate(
    model: tp.Any,
    tokenizer: tp.Any,
    questions: list,
    batch_size: int,
    max_len: int,
    max_new_tokens: int,
    desc: str = "eval",
    progress: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
) -> list[dict]:
    """Greedy generation parsed strictly as ``ANSWER: X``; ``pred`` is None on a parse failure."""
    from tqdm.auto import tqdm

    model.eval()
    prompts = [prompting.prompt_ids(tokenizer, q)[-max_len:] for q in questions]
    out: list[dict | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(questions), desc=desc, disable=not progress, mininterval=1.0)
    for idx in _batches(order, batch_size):
        batch = left_pad([prompts[i] for i in idx], tokenizer.pad_token_id, _device(model))
        batch.pop("position_ids")  # generate() derives positions from the mask itself
        gen = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new = gen[:, batch["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            text = tokenizer.decode(new[row], skip_special_tokens=True)
            out[i] = {"pred": prompting.parse_answer(text), "generated": text}
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    bar.close()
    return tp.cast(list[dict], out)


# --------------------------------------------------------------------------- models


def load_for_eval(cfg: ExperimentConfig, name: str, exp_dir: Path) -> tp.Any:
    """The model to score as ``name``: the base, a full-SFT checkpoint, or base + adapter."""
    from transformers import AutoModelForCausalLM

    dtype = common.resolve_dtype(cfg.model.dtype)
    device = "cuda" if common.on_gpu() else "cpu"
    kw = {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code}
    if name == "base":
        return AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kw).to(device)
    method = cfg.method(name)
    out = common.method_dir(exp_dir, name)
    if method.kind == "full_sft":
        return AutoModelForCausalLM.from_pretrained(out / "model", **kw).to(device)
    from peft import PeftModel

    if method.kind == "qlora":  # the adapter on the same 4-bit base it was trained with
        from train import quant

        base = quant.load_4bit(cfg.model.name_or_path, dtype, cfg.model.trust_remote_code)
        return PeftModel.from_pretrained(base, out / "adapter")
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kw).to(device)
    # Merged LoRA weights give the same outputs and a faster forward.
    return PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()


def evaluate_model(
    cfg: ExperimentConfig,
    name: str,
    exp_dir: Path,
    questions: list,
    tokenizer: tp.Any,
    progress: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
) -> dict:
    """Score one model, write its predictions and result; return the result."""
    t0 = time.perf_counter()
    model = load_for_eval(cfg, name, exp_dir)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()

    def score(chunk: list) -> list[dict]:
        size, max_len, desc = cfg.eval.batch_size, cfg.model.max_seq_len, f"eval {name}"
        if cfg.eval.mode == "generate":
            new_tokens = cfg.eval.max_new_tokens
            return score_generate(model, tokenizer, chunk, size, max_len, new_tokens, desc, progress, on_batch)
        return score_loglik(model, tokenizer, chunk, size, max_len, desc, progress, on_batch=on_batch)

    partial_dir = exp_dir / "eval" / "partial" / name
    scored = score_in_chunks(score, questions, partial_dir, chunk_size=max(256, 8 * cfg.eval.batch_size))
    eval_s = time.perf_counter() - t1
    model = None  # free it before the next model loads (the scoring closure above holds the name)
    gc.collect()
    predictions = [
        {"index": i, "question": q.question, "gold": q.solution, **s, "correct": s["pred"] == q.solution}
        for i, (q, s) in enumerate(zip(questions, scored))
    ]
    correct = sum(p["correct"] for p in predictions)
    n = len(predictions)
    lo, hi = report.wilson_interval(correct, n)
    result = {
        "method": name,
        "accuracy": correct / n if n else 0.0,
        "ci95": [lo, hi],
        "n": n,
        "correct": correct,
        "parse_failures": sum(p["pred"] is None for p in predictions) if cfg.eval.mode == "generate" else None,
        # Questions whose best letter score two letters share (loglik; chunks scored before ties were recorded count 0).
        "ties": sum(bool(p.get("tie")) for p in predictions) if cfg.eval.mode == "loglik" else None,
        "mode": cfg.eval.mode,
        "load_s": round(load_s, 3),
        "eval_s": round(eval_s, 3),
        "questions_per_s": round(n / eval_s, 1) if eval_s else None,
    }
    atomic_write_jsonl(exp_dir / "eval" / "predictions" / f"{name}.jsonl", predictions)
    atomic_write_json(exp_dir / "eval" / "results" / f"{name}.json", result)
    shutil.rmtree(partial_dir, ignore_errors=True)  # the result file now holds it all
    return result


def score_in_chunks(
    score: tp.Callable[[list], list[dict]], questions: list, partial_dir: Path, chunk_size: int
) -> list[dict]:
    """Score ``questions`` chunk by chunk, each chunk's scores saved atomically as it finishes.

    A restarted evaluation job (requeued, preempted, killed) reuses every chunk already on disk and
    scores only the rest, so a long evaluation never starts over. A chunk file is written whole
    (temp file + rename) or not at all; one with the wrong number of rows is scored again.
    """
    out: list[dict] = []
    n_chunks = (len(questions) + chunk_size - 1) // chunk_size
    reused = 0
    for c in range(n_chunks):
        chunk = questions[c * chunk_size : (c + 1) * chunk_size]
        path = partial_dir / f"chunk-{c:05d}-of-{n_chunks:05d}.jsonl"
        rows = _read_chunk(path, len(chunk))
        if rows is None:
            rows = score(chunk)
            atomic_write_jsonl(path, rows)
        else:
            reused += 1
        out.extend(rows)
    if reused:
        print(f"[eval] resumed: {reused}/{n_chunks} chunk(s) of {partial_dir.name} already scored", flush=True)
    return out


def _read_chunk(path: Path, expected: int) -> list[dict] | None:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return None
    return rows if len(rows) == expected else None


def models_to_score(cfg: ExperimentConfig, exp_dir: Path) -> list[str]:
    """``base`` (if asked) and every method whose training completed."""
    names = ["base"] if cfg.eval.include_base else []
    for m in cfg.methods:
        metrics = common.method_dir(exp_dir, m.name) / "metrics.json"
        if metrics.exists() and read_json(metrics).get("status") == "completed":
            names.append(m.name)
    return names


class EvalProgress:
    """``EXP/eval/progress.json``: the model being scored and how far, for the launcher to show.

    ``{"model", "index", "models", "done", "total", "finished": [{"model", "accuracy"}], "updated_at"}``,
    written atomically when a model starts and ends, and at most every :attr:`EVERY_S` seconds between.
    """

    EVERY_S = 1.0

    def __init__(self, path: Path, models: list[str], total: int) -> None:
        self.path, self.models, self.total = path, models, total
        self.state: dict[str, tp.Any] = {
            "model": None,
            "index": 0,
            "models": len(models),
            "done": 0,
            "total": total,
            "finished": [],
        }
        self._written = 0.0

    def start(self, name: str) -> None:
        self.state.update(model=name, index=self.models.index(name) + 1, done=0)
        self._write()

    def advance(self, n: int) -> None:
        self.state["done"] += n
        if time.monotonic() - self._written >= self.EVERY_S:
            self._write()

    def finish(self, accuracy: float) -> None:
        self.state["done"] = self.total
        self.state["finished"].append({"model": self.state["model"], "accuracy": accuracy})
        self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        atomic_write_json(self.path, {**self.state, "updated_at": common.now_iso()})


# --------------------------------------------------------------------------- main


def main(cfg: ExperimentConfig, exp_dir: str | Path, threads: int | None = None, progress: bool = True) -> list[dict]:
    """Score every model, write predictions, results and the comparison report; return its rows."""
    # --- config & setup
    exp_dir = Path(exp_dir)
    common.setup_runtime(cfg.seed, threads)
    results_dir = exp_dir / "eval" / "results"

    # --- data
    tokenizer = common.load_tokenizer(cfg.model.name_or_path)
    questions = common.load_split(cfg, exp_dir, "eval")

    # --- score each model (skipping those already scored: the job is idempotent)
    results: dict[str, dict] = {}
    names = models_to_score(cfg, exp_dir)
    tracker = EvalProgress(exp_dir / "eval" / "progress.json", names, len(questions))
    for name in names:
        done = results_dir / f"{name}.json"
        tracker.start(name)
        results[name] = (
            read_json(done)
            if done.exists()
            else evaluate_model(cfg, name, exp_dir, questions, tokenizer, progress, on_batch=tracker.advance)
        )
        tracker.finish(results[name]["accuracy"])
        print(f"[eval] {name}: accuracy {results[name]['accuracy']:.3f} on {results[name]['n']} questions", flush=True)

    # --- report: summary.json, report.md, report.html, and the W&B comparison run
    metrics = report.load_train_metrics(exp_dir, [m.name for m in cfg.methods])
    # On Slurm the training jobs' cost comes from sacct (every attempt), not their own timers.
    accounts, cost_note = slurm.experiment_accounts(exp_dir)
    profile = load_experiment_profile(exp_dir)
    price = profile.price_per_gpu_hour if profile is not None else None
    rows = report.build_rows(
        [(m.name, m.kind) for m in cfg.methods], results, metrics, price_per_gpu_hour=price, slurm_accounts=accounts
    )
    print(f"[eval] cost source: {cost_note}", flush=True)
    r = cfg.eval.resources
    evaluation = report.evaluation_cost(
        results, r.nodes * r.gpus_per_node if common.on_gpu() else 0, threads or torch.get_num_threads(), price
    )
    print(f"[eval] {report.evaluation_line(evaluation)}", flush=True)
    paths = report.write_reports(
        exp_dir,
        rows,
        title=f"{cfg.name}: accuracy vs cost",
        evaluation=evaluation,
        extra={"experiment": exp_dir.name, "eval_mode": cfg.eval.mode, "n_eval": len(questions)},
    )
    log_to_wandb(cfg.tracking, exp_dir, rows, paths, evaluation)
    return rows


def log_to_wandb(
    tracking: TrackingConfig, exp_dir: Path, rows: list[dict], paths: dict, evaluation: dict | None = None
) -> None:
    """One W&B run for the evaluation: per-method accuracy, the comparison table, the chart."""
    from train.tracking import Tracker

    tracker = Tracker.start(
        tracking,
        run_dir=exp_dir,
        name="eval",
        group=exp_dir.name,
        job_type="eval",
        config={"experiment": exp_dir.name},
        run_id=f"{exp_dir.name}-eval",
    )
    columns = [key for key, _ in report.COLUMNS]
    tracker.log_table("comparison", rows, columns)
    tracker.log_image("accuracy_vs_cost", paths["chart"])
    tracker.summary({f"accuracy/{r['method']}": r["accuracy"] for r in rows if r.get("accuracy") is not None})
    if evaluation:
        tracker.summary({f"evaluation/{k}": v for k, v in evaluation.items() if isinstance(v, (int, float))})
    tracker.finish()


if __name__ == "__main__":
    from launch.config import load_config

    exp = Path(sys.argv[1])
    main(load_config(exp / "config.yaml"), exp)
