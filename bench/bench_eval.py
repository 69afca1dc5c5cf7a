"""Benchmark: our evaluator (``train.scoring.score_loglik``) vs lm-evaluation-harness, and the bare forward.

Same model object, same questions, same prompt tokens, same batch size, in one process:

* **ours**: ``score_loglik`` (renders each prompt, tokenizes it, batches by length, runs the prompt
  prefix every question shares once and reuses its KV cache, one forward per batch keeping only the
  last position's logits, log-softmax, argmax). The questions are loaded beforehand, as the
  evaluation job loads them once for every model it scores. **ours without the prefix cache** is the
  same with ``share_prefix=False``: what the shared prefix buys.
* **lm-eval end to end**: what a user of the harness pays: ``TaskManager(include_path=...)``
  (which also indexes the built-in tasks), ``HFLM(pretrained=<the model object>)`` and
  ``simple_evaluate`` on a local ``multiple_choice`` task whose context is our scoring context,
  decoded (so it re-tokenises to exactly our ids), with choices ``" A"``..``" D"``.
  **lm-eval loglikelihood only** is the time inside ``HFLM.loglikelihood`` in those same runs.
* **bare forward (ceiling)**: the model's forward over the full contexts in our batches (prebuilt
  tensors, same left padding, ``logits_to_keep=1``, no KV cache built), nothing else: no evaluator that runs every
  prompt token through the model can be faster than this. Ours can, by the shared prefix it skips.

Predictions are compared question by question; every run must agree (the count is reported).

Two cases, each with its own rows:

* **40M** (the bench-sized model): a randomly initialised Llama of about 40M parameters (hidden
  512, 8 layers, 8 heads, MLP 2560), fp32 on CPU, on all the questions (``--limit N``: the first N;
  on 2 cores one pass over the 500 takes about 45 s, a run of the four contenders about 3 minutes).
  The forward dominates here, as it does for a real model. With ``--limit`` the notes also scale the
  result to all the questions from the measured per-question and fixed costs.
* **0.7M** (the smoke test's tiny model shape) on all the questions: the forward is cheap, so
  every evaluator's own overhead shows.

Both use the tiny model's tokenizer (``train.tiny_model.build_tokenizer`` on the bundled sample
questions). ``--model DIR`` instead checks a real model with its own tokenizer and chat template
(``make real-model``'s SmolLM2: ``--model .cache/smollm2-135m-instruct --limit 100``, one run): that
each answer letter is one token after ``ANSWER:`` in the context lm-eval re-tokenises, and that our
predictions equal lm-eval's on the same model, prompt and questions. Data: CyberMetric-500 from
``../shared/data/cybermetric`` (the bundled ``data/sample/cyber_mcq.json`` when absent).

    python bench/bench_eval.py [--runs 5] [--limit N] [--json out.json] [--model DIR]
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

# Nothing may reach a hub. Set before anything imports datasets / transformers; main() also points
# lm-eval's dataset cache at a private temp dir (removed at the end), not ~/.cache.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(_k, _v)
_CACHE = ""

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MATMUL_N,
    REPO,
    Bench,
    Row,
    Target,
    bench_main,
    log,
    machine_info,
    matmul_gflops,
    matmul_params,
    parse_args,
)

NAME = "eval"
CM500 = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"
SAMPLE = REPO / "data" / "sample" / "cyber_mcq.json"
TASK = "cyberft_bench_mcq"
BATCH_SIZE = 32
MAX_LEN = 2048
DEFAULT_LIMIT = 0
BENCH_SIZES = dict(
    hidden_size=512,
    intermediate_size=2560,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=MAX_LEN,
)
"""The bench-sized model: about 40M parameters, so the forward dominates (as for a real model on a GPU)."""
TINY_SIZES = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=MAX_LEN,
)
"""The smoke test's tiny model (build_tiny_model's defaults): the forward is cheap, so overheads show."""


def build_bench_model(sizes: dict) -> tuple[tp.Any, tp.Any]:
    """(model, tokenizer): the tiny model's tokenizer and a Llama of ``sizes`` with random weights."""
    from train.tiny_model import DEFAULT_DATA, _corpus, build_model, build_tokenizer

    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    model = build_model(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0, **sizes)
    return model.eval(), tok


def data_file() -> Path:
    return CM500 if CM500.is_file() else SAMPLE


def load(path: Path, limit: int) -> list:
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource

    qs = load_questions(DataSource(path=str(path)))
    return qs[:limit] if limit else qs


# --------------------------------------------------------------------------- the three contenders


def run_ours(model: tp.Any, tok: tp.Any, questions: list, share_prefix: bool = True) -> tuple[float, list[dict]]:
    """score_loglik alone. The questions are loaded once per evaluation job for every model it
    scores (train.evaluate.main), so loading them (~0.15 ms a question) is not part of this time."""
    from train.scoring import score_loglik

    t = time.perf_counter()
    scored = score_loglik(model, tok, questions, BATCH_SIZE, MAX_LEN, progress=False, share_prefix=share_prefix)
    return time.perf_counter() - t, scored


def forward_batches(tok: tp.Any, questions: list) -> list[dict]:
    """Exactly the batches score_loglik builds: contexts sorted by length, left-padded, on the model's device."""
    import torch

    from launch.questions import prompting
    from train import scoring

    codec = prompting.AnswerCodec(tok)
    contexts = [prompting.scoring_context(tok, codec, q, MAX_LEN) for q in questions]
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    return [
        scoring.left_pad([contexts[i] for i in order[j : j + BATCH_SIZE]], tok.pad_token_id, torch.device("cpu"))
        for j in range(0, len(order), BATCH_SIZE)
    ]


def shared_prefix_tokens(tok: tp.Any, questions: list) -> int:
    from launch.questions import prompting
    from train import scoring

    codec = prompting.AnswerCodec(tok)
    return scoring.shared_prefix_len([prompting.scoring_context(tok, codec, q, MAX_LEN) for q in questions])


def run_ceiling(model: tp.Any, batches: list[dict]) -> float:
    import torch

    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(**b, logits_to_keep=1, use_cache=False)  # as score_loglik: no KV cache is built
    return time.perf_counter() - t


def write_task(task_dir: Path, tok: tp.Any, questions: list) -> dict:
    """The lm-eval task: a JSONL of {context, label} and a multiple_choice YAML; returns tokenisation checks."""
    import json

    from launch.questions import prompting

    codec = prompting.AnswerCodec(tok)
    letters = [codec.letter_ids[k] for k in "ABCD"]
    rows, same_ctx, same_cont = [], 0, 0
    for q in questions:
        ids = prompting.scoring_context(tok, codec, q, MAX_LEN)
        text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        rows.append({"context": text, "label": "ABCD".index(q.solution)})
        # What lm-eval will do (HFLM._encode_pair): encode the context, and context + " X".
        back = tok(text, add_special_tokens=False)["input_ids"]
        same_ctx += back == ids
        same_cont += all(
            tok(text + f" {k}", add_special_tokens=False)["input_ids"] == ids + letters[i] for i, k in enumerate("ABCD")
        )
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (task_dir / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        "doc_to_target: label\n"
        'doc_to_choice: ["A", "B", "C", "D"]\n'
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    return {"context_tokens_identical": same_ctx, "continuation_tokens_identical": same_cont, "n": len(questions)}


def run_lmeval(model: tp.Any, tok: tp.Any, task_dir: Path, limit: int | None = None) -> tuple[float, float, list[dict]]:
    """(end-to-end seconds, seconds inside loglikelihood, per-question {pred, logprobs})."""
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    t = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=BATCH_SIZE, add_bos_token=False, max_length=MAX_LEN)
    inner, spent = lm.loglikelihood, [0.0]

    def loglikelihood(requests: tp.Any, *a: tp.Any, **k: tp.Any) -> tp.Any:
        t1 = time.perf_counter()
        k.setdefault("disable_tqdm", True)  # its progress bars only (kept off the benchmark's output)
        try:
            return inner(requests, *a, **k)
        finally:
            spent[0] += time.perf_counter() - t1

    lm.loglikelihood = loglikelihood  # simple_evaluate calls getattr(lm, "loglikelihood")
    results = simple_evaluate(
        model=lm,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)),
        batch_size=BATCH_SIZE,
        log_samples=True,
        verbosity="ERROR",
        limit=limit,
    )
    total = time.perf_counter() - t
    out: list[dict] = []
    for s in sorted(results["samples"][TASK], key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        out.append({"pred": "ABCD"[max(range(4), key=lls.__getitem__)], "logprobs": dict(zip("ABCD", lls))})
    return total, spent[0], out


def disagreements(ours: list[dict], theirs: list[dict]) -> tuple[int, float]:
    """(questions whose argmax differs, largest |log-prob difference|)."""
    diff = sum(a["pred"] != b["pred"] for a, b in zip(ours, theirs, strict=True))
    worst = max(abs(a["logprobs"][k] - b["logprobs"][k]) for a, b in zip(ours, theirs) for k in "ABCD")
    return diff, worst


# --------------------------------------------------------------------------- benchmark


def measure(bench: Bench, tag: str, label: str, sizes: dict, limit: int, runs: int) -> None:
    """One model on one question set: warm-up, then ``runs`` interleaved runs of the three contenders."""
    import torch

    t0 = time.perf_counter()
    model, tok = build_bench_model(sizes)
    path = data_file()
    questions = load(path, limit)
    batches = forward_batches(tok, questions)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    task_dir = Path(_CACHE) / f"task-{tag}"
    tok_check = write_task(task_dir, tok, questions)
    n = len(questions)
    shared_prefix = shared_prefix_tokens(tok, questions)
    params = sum(p.numel() for p in model.parameters())
    flops = 2 * matmul_params(model) * tokens  # the forward's matmuls over every prompt token
    log(
        NAME,
        f"[{label}] {params / 1e6:.2f}M params (fp32, {torch.get_num_threads()} threads), {n} questions of "
        f"{path.name}, "
        f"{tokens} tokens ({padded} with padding; {shared_prefix} shared by every prompt) in {len(batches)} "
        f"batch(es) of {BATCH_SIZE}; setup {time.perf_counter() - t0:.1f}s",
    )
    log(
        NAME,
        f"[{label}] tokens lm-eval will see: context identical to ours {tok_check['context_tokens_identical']}/{n}, "
        f"context + each letter identical {tok_check['continuation_tokens_identical']}/{n}",
    )

    # Warm-up, untimed and short: first-call costs (oneDNN kernels for these shapes, lm-eval's
    # imports and its dataset cache, which one question of the task builds whole).
    run_ceiling(model, batches[:1])
    run_lmeval(model, tok, task_dir, limit=1)
    log(NAME, f"[{label}] warm-up done")

    ours_s, plain_s, ceil_s, lm_s, lm_ll_s, peak, diffs, worst = [], [], [], [], [], [], [], 0.0
    ours_scored: list[dict] = []
    rotation = ["ours", "ceiling", "plain"]
    for i in range(runs):
        # lm-eval first; then ours, the bare forward and ours without the prefix cache back to
        # back (they see the same load), in a rotating order: whichever runs first after lm-eval
        # pays for the memory it freed. gc.collect() before each: no contender pays for the
        # garbage another one left.
        gc.collect()
        peak.append(matmul_gflops())
        dt_lm, dt_ll, lm_scored = run_lmeval(model, tok, task_dir)
        for which in rotation[i % 3 :] + rotation[: i % 3]:
            gc.collect()
            if which == "ours":
                dt_ours, ours_scored = run_ours(model, tok, questions)
            elif which == "plain":
                dt_plain, plain_scored = run_ours(model, tok, questions, share_prefix=False)
            else:
                dt_ceil = run_ceiling(model, batches)
        d, w = disagreements(ours_scored, lm_scored)
        d_plain, w_plain = disagreements(plain_scored, lm_scored)
        diffs.append(d + d_plain)
        worst = max(worst, w, w_plain)
        ours_s.append(dt_ours)
        plain_s.append(dt_plain)
        lm_s.append(dt_lm)
        lm_ll_s.append(dt_ll)
        ceil_s.append(dt_ceil)  # noqa: E702
        log(
            NAME,
            f"[{label}] run {i + 1}/{runs}: ours {n / dt_ours:.1f} q/s ({dt_ours:.2f}s; without the prefix cache "
            f"{dt_plain:.2f}s), lm-eval {n / dt_lm:.1f} q/s ({dt_lm:.2f}s, of which loglikelihood {dt_ll:.2f}s), "
            f"bare forward {n / dt_ceil:.1f} q/s ({dt_ceil:.2f}s), disagreements {d + d_plain}",
        )

    def qps(xs: list[float]) -> list[float]:
        return [n / x for x in xs]

    k = lambda name: f"{tag}_{name}"  # noqa: E731
    bench.rows += [
        Row(k("lmeval"), f"{label}: lm-eval simple_evaluate, end to end", "q/s", qps(lm_s), True, baseline=k("lmeval")),
        Row(k("lmeval_ll"), f"{label}: lm-eval loglikelihood only", "q/s", qps(lm_ll_s), True, baseline=k("lmeval")),
        Row(
            k("ours"),
            f"{label}: ours (score_loglik)",
            "q/s",
            qps(ours_s),
            True,
            baseline=k("lmeval"),
            targets=[
                Target(">=2x lm-eval", "ratio_min", 2.0, ref=k("lmeval")),
                Target(">=0.85x forward", "ratio_min", 0.85, ref=k("ceiling")),
            ],
        ),
        Row(
            k("ours_plain"), f"{label}: ours without the prefix cache", "q/s", qps(plain_s), True, baseline=k("lmeval")
        ),
        Row(k("ceiling"), f"{label}: bare forward (ceiling)", "q/s", qps(ceil_s), True, baseline=k("lmeval")),
        Row(
            k("peak"),
            f"{label}: fp32 matmul {MATMUL_N}^3 (hardware ceiling)",
            "GFLOP/s",
            peak,
            True,
            baseline=k("peak"),
        ),
        Row(
            k("ours_flops"),
            f"{label}: ours, model FLOP/s (vs = fraction of the matmul)",
            "GFLOP/s",
            [flops / x / 1e9 for x in ours_s],
            True,
            baseline=k("peak"),
        ),
    ]
    setup = sorted(a - b for a, b in zip(lm_s, lm_ll_s))[len(lm_s) // 2]
    bench.info[tag] = {
        "data": str(path),
        "questions": n,
        "batch_size": BATCH_SIZE,
        "model": {"params": params, "dtype": "float32", **sizes, "vocab_size": len(tok), "weights": "random (seed 0)"},
        "tokens": tokens,
        "tokens_with_padding": padded,
        "batches": len(batches),
        "tokenisation_check": tok_check,
        "disagreements_per_run": diffs,
        "max_abs_logprob_diff": worst,
        "accuracy_ours": sum(s["pred"] == q.solution for s, q in zip(ours_scored, questions)) / n,
        "lmeval_outside_loglikelihood_s_median": setup,
        "shared_prefix_tokens": shared_prefix,
        "matmul_gflops": peak,
        "model_flops_per_pass": flops,
        "seconds": {
            "ours": ours_s,
            "ours_without_prefix_cache": plain_s,
            "lmeval": lm_s,
            "lmeval_loglikelihood": lm_ll_s,
            "ceiling": ceil_s,
        },
    }
    bench.notes.append(
        f"{label}: {n} questions of {path.name} ({tokens} prompt tokens), batch {BATCH_SIZE}; prediction disagreements "
        f"ours vs lm-eval per run {diffs} (max |log-prob diff| {worst:.1e}); lm-eval outside loglikelihood "
        f"(task index, dataset, requests, metrics): median {setup:.2f}s per run"
    )
    full = len(load(path, 0))
    if n < full:  # lm-eval's fixed cost weighs less as questions grow: say what the whole file would give
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        at_full = (med(lm_ll_s) / n * full + setup) / (med(ours_s) / n * full)
        bench.info[tag]["predicted_ours_vs_lmeval_at_all_questions"] = {"questions": full, "ratio": at_full}
        bench.notes.append(
            f"{label}: scaled to all {full} questions (per-question costs + lm-eval's fixed cost): "
            f"ours ~{at_full:.2f}x lm-eval end to end"
        )
    del model


def measure_real(bench: Bench, model_dir: Path, limit: int) -> None:
    """A real model with its own tokenizer and chat template: tokenisation check, ours vs lm-eval once."""
    import torch
    from transformers import AutoModelForCausalLM

    from launch.questions import prompting
    from train import batches

    tok = batches.load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    questions = load(data_file(), limit)
    n = len(questions)
    codec = prompting.AnswerCodec(tok)
    tok_check = write_task(Path(_CACHE) / "task-real", tok, questions)
    letters = {k: tok.convert_ids_to_tokens(v) for k, v in codec.letter_ids.items()}
    log(
        NAME,
        f"[real] {model_dir}: {n} questions; answer prefix {tok.convert_ids_to_tokens(codec.prefix_ids)}, "
        f"letters {letters} (one token each: {codec.single_token}); lm-eval's re-tokenised context identical "
        f"{tok_check['context_tokens_identical']}/{n}, context + each letter "
        f"{tok_check['continuation_tokens_identical']}/{n}",
    )
    dt_ours, ours = run_ours(model, tok, questions)
    dt_lm, _, theirs = run_lmeval(model, tok, Path(_CACHE) / "task-real")
    diff, worst = disagreements(ours, theirs)
    acc = [sum(s["pred"] == q.solution for s, q in zip(x, questions)) / n for x in (ours, theirs)]
    log(
        NAME,
        f"[real] ours {dt_ours:.1f}s accuracy {acc[0]:.3f}; lm-eval {dt_lm:.1f}s accuracy {acc[1]:.3f}; "
        f"prediction disagreements {diff}/{n}, max |log-prob diff| {worst:.1e}",
    )
    bench.rows += [
        Row("real_ours", "real model: ours (score_loglik)", "q/s", [n / dt_ours], True, baseline="real_lmeval"),
        Row("real_lmeval", "real model: lm-eval simple_evaluate", "q/s", [n / dt_lm], True, baseline="real_lmeval"),
    ]
    bench.info["real"] = {
        "model": str(model_dir),
        "questions": n,
        "single_token_letters": codec.single_token,
        "letters": letters,
        "tokenisation_check": tok_check,
        "disagreements": diff,
        "max_abs_logprob_diff": worst,
        "accuracy_ours": acc[0],
        "accuracy_lmeval": acc[1],
    }
    bench.notes.append(
        f"real model {model_dir}: letters one token each after ANSWER: {codec.single_token}; "
        "context + letter tokens identical in lm-eval "
        f"{tok_check['continuation_tokens_identical']}/{n}; "
        f"disagreements {diff}/{n} (max |log-prob diff| {worst:.1e})"
    )


def build(args: tp.Any) -> Bench:
    bench = Bench(NAME)
    bench.info["machine"] = machine_info()
    if args.model:
        measure_real(bench, Path(args.model), args.limit)
        return bench
    measure(bench, "m40", f"40M, {args.limit or 'all'} q", BENCH_SIZES, args.limit, args.runs)
    if not args.no_tiny:
        measure(bench, "tiny", "0.7M, all q", TINY_SIZES, 0, args.runs)
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    def extra(p: tp.Any) -> None:
        p.add_argument(
            "--limit",
            type=int,
            default=DEFAULT_LIMIT,
            help=f"40M model: the first N questions (default {DEFAULT_LIMIT}; 0 = all)",
        )
        p.add_argument("--no-tiny", action="store_true", help="skip the tiny-model case (all questions)")
        p.add_argument("--model", help="a real model directory (e.g. .cache/smollm2-135m-instruct): check it instead")

    args = parse_args(NAME, __doc__.split("\n\n")[0], argv, extra)
    global _CACHE
    _CACHE = tempfile.mkdtemp(prefix="cyberft-bench-eval-")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "datasets")
    try:
        return bench_main(build, args)
    finally:
        shutil.rmtree(_CACHE, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
