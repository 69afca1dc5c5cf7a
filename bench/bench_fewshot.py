"""Benchmark: few-shot scoring (``k`` solved examples before every question) with and without the prefix cache.

The ``few_shot`` kind's examples are the same for every question, so they sit in the prompt prefix every
scored context shares, which the evaluator runs once and reuses as a KV cache (``train.scoring.PrefixCache``).
Same model object, same questions, same examples, same batch size, in one process:

* **ours, k-shot**: ``score_loglik(..., shots=examples)``, the evaluation job's path for a few-shot method.
* **ours, k-shot without the prefix cache**: the same with ``share_prefix=False``: every prompt token of
  every question through the model. The ratio of the two is what the cache buys.
* **ours, zero-shot**: the base row's scoring of the same questions: the few-shot method's extra
  evaluation time is the difference.
* **lm-eval, num_fewshot=k** (baseline; the ``bench`` extra): lm-evaluation-harness 0.4.13 on a local
  ``multiple_choice`` task whose few-shot split holds exactly our ``k`` examples (``sampler: first_n``,
  in our order), rendered as ours are: the chat template with our system prompt
  (``system_instruction``), each example a user turn (the question in our template) and an assistant
  turn (``ANSWER: X``; ``fewshot_as_multiturn``), then the question; choices ``ANSWER: A`` ..
  ``ANSWER: D``. The ``ANSWER:`` tokens are common to the four choices, so the argmax is comparable
  with ours: predictions are compared question by question (the count is reported).

The model is the bench-sized random Llama of ``bench_eval.py`` (about 40M parameters, fp32 on CPU, the
tiny model's tokenizer and chat template), so the forward dominates as it does for a real model. The
questions are the first ``--limit`` of CyberMetric-500 (``../shared/data/cybermetric``; the bundled
sample when absent); the examples are drawn by ``train.few_shot.select_shots`` from the bundled sample
questions (seeded, balanced over the letters, none an evaluated question).

    python bench/bench_fewshot.py [--runs 5] [--limit 100] [--k 4] [--json out.json]
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, Row, Target, bench_main, log, machine_info, parse_args  # noqa: E402

# bench_eval keeps everything offline (hubs, datasets) before transformers is imported
from bench_eval import (  # noqa: E402
    BATCH_SIZE,
    BENCH_SIZES,
    MAX_LEN,
    SAMPLE,
    build_bench_model,
    data_file,
    disagreements,
    load,
)

NAME = "fewshot"
TASK = "cyberft_bench_fewshot"
DEFAULT_LIMIT = 100
DEFAULT_K = 4


def run_ours(model: tp.Any, tok: tp.Any, questions: list, shots: list, share_prefix: bool) -> tuple[float, list[dict]]:
    from train.scoring import score_loglik

    t = time.perf_counter()
    scored = score_loglik(
        model, tok, questions, BATCH_SIZE, MAX_LEN, progress=False, share_prefix=share_prefix, shots=shots
    )
    return time.perf_counter() - t, scored


def write_task(task_dir: Path, questions: list, shots: list) -> None:
    """The lm-eval task: the evaluated questions (test split), our examples (few-shot split, in order)."""
    from launch.questions import prompting

    def rows(qs: list) -> str:
        records = [{"text": prompting.user_message(q), "label": "ABCD".index(q.solution)} for q in qs]
        return "".join(json.dumps(r) + "\n" for r in records)

    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "test.jsonl").write_text(rows(questions), encoding="utf-8")
    (task_dir / "examples.jsonl").write_text(rows(shots), encoding="utf-8")
    choices = json.dumps([prompting.answer_text(letter) for letter in "ABCD"])
    (task_dir / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n"
        f"    test: {json.dumps(str(task_dir / 'test.jsonl'))}\n"
        f"    shots: {json.dumps(str(task_dir / 'examples.jsonl'))}\n"
        "test_split: test\n"
        "fewshot_split: shots\n"
        "fewshot_config:\n  sampler: first_n\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{text}}"\n'
        "doc_to_target: label\n"
        f"doc_to_choice: {choices}\n"
        'target_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )


def run_lmeval(model: tp.Any, tok: tp.Any, task_dir: Path, k: int, limit: int | None = None) -> tuple[float, list]:
    """(end-to-end seconds, per-question {pred, logprobs}) of lm-eval's ``num_fewshot=k`` on our examples."""
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from launch.questions import prompting

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    t = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=BATCH_SIZE, add_bos_token=False, max_length=MAX_LEN)
    results = simple_evaluate(
        model=lm,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)),
        num_fewshot=k,
        batch_size=BATCH_SIZE,
        apply_chat_template=True,
        fewshot_as_multiturn=True,
        system_instruction=prompting.SYSTEM_PROMPT,
        log_samples=True,
        verbosity="ERROR",
        limit=limit,
    )
    total = time.perf_counter() - t
    out = []
    for s in sorted(results["samples"][TASK], key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        out.append({"pred": "ABCD"[max(range(4), key=lls.__getitem__)], "logprobs": dict(zip("ABCD", lls))})
    return total, out


def prompt_tokens(tok: tp.Any, questions: list, shots: list) -> tuple[int, int]:
    """(prompt tokens over all questions, tokens of the prefix they share) of the k-shot scoring contexts."""
    from launch.questions import prompting
    from train import scoring

    codec = prompting.AnswerCodec(tok)
    contexts = [prompting.scoring_context(tok, codec, q, MAX_LEN, shots) for q in questions]
    return sum(map(len, contexts)), scoring.shared_prefix_len(contexts)


def measure(bench: Bench, k: int, limit: int, runs: int, cache: Path) -> None:
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource
    from train.few_shot import select_shots

    model, tok = build_bench_model(BENCH_SIZES)
    questions = load(data_file(), limit)
    shots = select_shots(load_questions(DataSource(path=str(SAMPLE))), questions, k, seed=0)
    tokens, shared = prompt_tokens(tok, questions, shots)
    n = len(questions)
    task_dir = cache / f"task-k{k}"
    write_task(task_dir, questions, shots)
    log(NAME, f"[k={k}] {n} questions, {tokens} prompt tokens, {shared} shared by every prompt (examples included)")
    run_ours(model, tok, questions[:BATCH_SIZE], shots, True)  # warm-up, untimed: first-call kernel costs
    lm_ok = True
    try:
        run_lmeval(model, tok, task_dir, k, limit=1)
    except ImportError as exc:  # the bench extra is not installed: ours only
        lm_ok = False
        bench.notes.append(f"k={k}: lm-eval not installed ({exc}); `make bench` installs it")
    samples: dict[str, list[float]] = {"cached": [], "plain": [], "zero": [], "lmeval": []}
    diffs: list[int] = []
    for i in range(runs):
        gc.collect()
        if lm_ok:
            dt, theirs = run_lmeval(model, tok, task_dir, k)
            samples["lmeval"].append(dt)
        dt_cached, ours = run_ours(model, tok, questions, shots, True)
        dt_plain, plain = run_ours(model, tok, questions, shots, False)
        dt_zero, _ = run_ours(model, tok, questions, [], True)
        samples["cached"].append(dt_cached)
        samples["plain"].append(dt_plain)
        samples["zero"].append(dt_zero)
        same = disagreements(ours, plain)[0]
        diffs.append(disagreements(ours, theirs)[0] if lm_ok else -1)
        log(
            NAME,
            f"[k={k}] run {i + 1}/{runs}: cached {dt_cached:.2f}s, without cache {dt_plain:.2f}s, zero-shot "
            f"{dt_zero:.2f}s" + (f", lm-eval {samples['lmeval'][-1]:.2f}s" if lm_ok else "") + f"; cache on/off "
            f"disagreements {same}, vs lm-eval {diffs[-1]}",
        )
    qps = lambda xs: [n / x for x in xs]  # noqa: E731
    ref = f"k{k}_lmeval" if lm_ok else f"k{k}_plain"
    bench.rows += [
        Row(
            f"k{k}_cached",
            f"{k}-shot: ours with the prefix cache",
            "q/s",
            qps(samples["cached"]),
            True,
            baseline=ref,
            targets=[Target(">=2x without the cache", "ratio_min", 2.0, ref=f"k{k}_plain")],
        ),
        Row(
            f"k{k}_plain", f"{k}-shot: ours without the prefix cache", "q/s", qps(samples["plain"]), True, baseline=ref
        ),
        Row(f"k{k}_zero", "zero-shot: ours (the base row's scoring)", "q/s", qps(samples["zero"]), True, baseline=ref),
    ]
    if lm_ok:
        label = f"{k}-shot: lm-eval num_fewshot={k}, end to end"
        bench.rows.append(Row(ref, label, "q/s", qps(samples["lmeval"]), True, baseline=ref))
    bench.info[f"k{k}"] = {
        "questions": n,
        "data": str(data_file()),
        "prompt_tokens": tokens,
        "shared_prefix_tokens": shared,
        "shot_letters": "".join(q.solution for q in shots),
        "disagreements_vs_lmeval_per_run": diffs,
        "seconds": samples,
    }


def build(args: tp.Any) -> Bench:
    bench = Bench(NAME)
    bench.info["machine"] = machine_info()
    cache = Path(tempfile.mkdtemp(prefix="cyberft-bench-fewshot-"))
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    try:
        for k in args.k:
            measure(bench, k, args.limit, args.runs, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    def extra(p: tp.Any) -> None:
        p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"questions (default {DEFAULT_LIMIT})")
        p.add_argument("--k", type=int, nargs="+", default=[DEFAULT_K], help=f"examples (default {DEFAULT_K})")

    return bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], argv, extra))


if __name__ == "__main__":
    raise SystemExit(main())
