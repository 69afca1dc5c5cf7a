"""Benchmark: a 200-cell sweep: submission and status on the dev cluster, the report from made-up scores.

The sweep: ``configs/smoke.yaml`` with its three classic methods (``bench_submit.bench_config``; the
other kinds would add 10 cells each and change the shape the targets were set on), 10 seeds and a grid
(full_sft: 4 learning rates = 40 cells; lora and qlora: 4 learning rates x 2 ranks = 80 cells each),
200 cells and 20 rows over seeds.

* **submit** (dev cluster, ``ACCT=dbd``): wall time of ``cyberft submit`` in a new process (config and
  sweep checks, memory estimate at every grid point, data split, 212 pickles: 3 training arrays, the
  scoring array (201 models past ``eval.models_per_job`` 20: 11 tasks) and the evaluation); the ``sbatch``
  calls are counted by a wrapper on PATH; the job ids come from the experiment's manifest. Baseline: the
  same shape as 5 plain ``sbatch`` calls.
* **status** (dev cluster, right after the submission: tasks pending and running): wall time of
  ``cyberft status EXP`` in a new process; its ``squeue`` and ``sacct`` calls are counted.
* **report** (no cluster needed): every cell's predictions and training record are written as the jobs
  would (made-up scores, 500 questions); timed: the evaluation job's report step
  (``finalize.main``: rows, 23 paired bootstraps with Holm, letters, frontier, chart, summary files) in
  this process, with the cells' sacct records given (the one ``sacct`` call is timed under status), and
  ``cyberft report EXP`` in a new process. Fake scores are honest here: the step reads files only.

After each submission the arrays are cancelled and the queue drained (untimed). The cluster is always
stopped at the end, also on an error or SIGTERM, with every process it left behind (``bench/_cluster.py``).
Targets (issue 15):
submit under 2 s, status under 1 s with one squeue and one sacct call, report under 5 s.

    python bench/bench_sweep.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cluster import dev_cluster  # noqa: E402
from _common import REPO, Bench, Row, Target, bench_main, log, machine_info, parse_args, timed_subprocess, venv_bin  # noqa: E402
from bench_submit import (  # noqa: E402
    bench_config,
    cancel_and_drain,
    cancel_quietly,
    manifest_job_ids,
    slurm,
    submitted_experiment,
)

sys.path.insert(0, str(REPO))
NAME = "sweep"
LRS = "[1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]"
SWEEP = [
    "sweep.seeds=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
    "sweep.max_parallel=2",
    f"sweep.grid.methods.full_sft.learning_rate={LRS}",
    f"sweep.grid.methods.lora.learning_rate={LRS}",
    "sweep.grid.methods.lora.lora.r=[8, 16]",
    f"sweep.grid.methods.qlora.learning_rate={LRS}",
    "sweep.grid.methods.qlora.lora.r=[8, 16]",
]
CELLS = 200
SCORING_TASKS = 11  # 201 models (base and the cells), eval.models_per_job 20: an array of 11 before the report
JOBS = CELLS + SCORING_TASKS + 1
SBATCH_CALLS = 5  # the 3 training arrays, the scoring array, the last evaluation job
N_QUESTIONS = 500


def counting_wrappers(folder: Path, names: tp.Sequence[str], env: dict) -> dict:
    """``env`` with wrappers of ``names`` first on PATH: each call appends a line to ``<name>.calls``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        real = shutil.which(name, path=env.get("PATH"))
        if real is None:
            raise RuntimeError(f"{name} not found on PATH")
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "$*" >> "{folder}/{name}.calls"\nexec "{real}" "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return dict(env, PATH=f"{folder}:{env.get('PATH', os.defpath)}")


def calls(folder: Path, name: str) -> int:
    path = folder / f"{name}.calls"
    n = len(path.read_text().splitlines()) if path.is_file() else 0
    path.unlink(missing_ok=True)
    return n


def submit_sweep(config: Path, tiny: Path, out_dir: Path, env: dict) -> tuple[float, Path]:
    """Time ``cyberft submit`` of the sweep in a new process; return (seconds, the experiment directory).

    The experiment and its jobs are read from ``out_dir`` and the manifest, not from the printed output.
    Raises ``RuntimeError`` (after cancelling what was submitted) unless it exits 0 having submitted
    :data:`JOBS` jobs in :data:`SBATCH_CALLS` sbatch calls.
    """
    argv = ["submit", str(config), "--profile", "dev", f"model.name_or_path={tiny}", f"output_dir={out_dir}"]
    dt, rc, out, err = timed_subprocess([venv_bin("cyberft"), *argv, *SWEEP], env=env)
    exp = submitted_experiment(out_dir)
    jobs = manifest_job_ids(exp)
    arrays = {i.split("_")[0] for i in jobs.values()}
    if rc != 0 or exp is None or len(jobs) != JOBS or len(arrays) != SBATCH_CALLS:
        cancel_quietly(jobs.values(), env)
        raise RuntimeError(
            f"cyberft submit of the {CELLS}-cell sweep failed: exit {rc}, experiment {exp}, {len(jobs)} job(s) "
            f"in {len(arrays)} submission(s) in the manifest, expected {JOBS} in {SBATCH_CALLS}; if the config's "
            f"methods or the sweep changed, update SWEEP, CELLS and SCORING_TASKS together.\n"
            f"stderr:\n{err[-3000:]}\nstdout:\n{out[-3000:]}"
        )
    return dt, exp


def array_ids(exp: Path) -> list[str]:
    return sorted({job_id.split("_")[0] for job_id in manifest_job_ids(exp).values()})


def submit_baseline(work: Path, env: dict) -> tuple[float, list[str]]:
    """The same shape with plain sbatch: 3 arrays (40, 80, 80 tasks, %2), the scoring array after them, the last job."""
    common = ["sbatch", "--parsable", "--partition=debug", "--time=20", "--cpus-per-task=1", "--mem=1G"]
    common += ["--gpus-per-node=1", f"--output={work}/sbatch-%A_%a.out"]
    t = time.perf_counter()
    ids = [slurm([*common, f"--array=0-{n - 1}%2", "--wrap", "sleep 600"], env).strip() for n in (40, 80, 80)]
    after = f"--dependency=afterany:{':'.join(ids)}"
    ids.append(slurm([*common, after, f"--array=0-{SCORING_TASKS - 1}", "--wrap", "sleep 600"], env).strip())
    ids.append(slurm([*common, f"{after}:{ids[-1]}", "--wrap", "sleep 600"], env).strip())
    return time.perf_counter() - t, [i.split(";")[0] for i in ids]


def cluster_rows(args: tp.Any, bench: Bench, config: Path, tiny: Path, work: Path) -> None:
    """submit and status against the dev cluster; nothing when it cannot start (the reason in the notes)."""
    from tests.support import slurm_cluster as sc

    reason = sc.unavailable_reason("dbd")
    if reason:
        bench.notes.append(f"submit and status not measured: {reason}")
        log(NAME, f"cluster rows skipped: {reason}")
        return
    with dev_cluster(NAME) as (_base, env):
        shims = work / "shims"
        env = counting_wrappers(shims, ("sbatch", "squeue", "sacct"), env)
        cancel_and_drain(array_ids(submit_sweep(config, tiny, work / "warm", env)[1]), env)  # warm-up, untimed
        cancel_and_drain(submit_baseline(work, env)[1], env)
        ours, plain, status_s, ended_s, counts = [], [], [], [], []
        for i in range(args.runs):
            calls(shims, "sbatch")
            dt, exp = submit_sweep(config, tiny, work / f"runs{i}", env)
            n_sbatch = calls(shims, "sbatch")
            calls(shims, "squeue"), calls(shims, "sacct")
            st, n_queries = timed_status(exp, env, shims)
            cancel_and_drain(array_ids(exp), env)
            st_ended, n_ended = timed_status(exp, env, shims)  # every task ended: sacct answers
            dt_plain, ids = submit_baseline(work, env)
            cancel_and_drain(ids, env)
            ours.append(dt), plain.append(dt_plain), status_s.append(st), ended_s.append(st_ended)
            counts.append({"sbatch": n_sbatch, "status_queued": n_queries, "status_ended": n_ended})
            log(
                NAME,
                f"run {i + 1}: submit {dt:.3f}s ({n_sbatch} sbatch), status {st:.3f}s "
                f"({n_queries[0]} squeue, {n_queries[1]} sacct), after scancel {st_ended:.3f}s "
                f"({n_ended[0]} squeue, {n_ended[1]} sacct), 5x sbatch {dt_plain:.3f}s",
            )
    bench.rows += [
        Row("sbatch", "5x sbatch (3 --array, 1 --array afterany, 1 afterany)", "s", plain, False, baseline="sbatch"),
        Row(
            "submit",
            f"cyberft submit, {CELLS}-cell sweep",
            "s",
            ours,
            False,
            baseline="sbatch",
            targets=[Target("<2s", "max", 2.0)],
        ),
        Row(
            "status",
            f"cyberft status, {CELLS} cells queued",
            "s",
            status_s,
            False,
            targets=[Target("<1s", "max", 1.0)],
        ),
        Row(
            "status_ended",
            f"cyberft status, {CELLS} cells ended",
            "s",
            ended_s,
            False,
            targets=[Target("<1s", "max", 1.0)],
        ),
    ]
    bench.info["calls_per_run"] = counts  # status: (squeue calls, sacct calls)
    bench.info["cluster"] = "slurm/dev-cluster/up TOPO=single ACCT=dbd"


def timed_status(exp: Path, env: dict, shims: Path) -> tuple[float, tuple[int, int]]:
    """Wall time of ``cyberft status EXP`` in a new process, and its (squeue, sacct) calls."""
    calls(shims, "squeue"), calls(shims, "sacct")
    dt, rc, out, err = timed_subprocess([venv_bin("cyberft"), "status", str(exp)], env=env)
    if rc not in (0, 1) or len(out.splitlines()) != JOBS + 1:  # header, the cells, scoring tasks, eval
        raise RuntimeError(f"cyberft status failed (rc={rc}):\n{err[-2000:]}{out[-2000:]}")
    return dt, (calls(shims, "squeue"), calls(shims, "sacct"))


def fake_scored_sweep(config: Path, tiny: Path, work: Path) -> tuple[tp.Any, tp.Any, dict, dict, int]:
    """A local 200-cell experiment whose cells are trained and scored with made-up figures."""
    from launch.spec.sweep import cells as all_cells
    from launch.store.expdir import EvalResult, TrainMetrics
    from tests.support.experiments import new_experiment

    overrides = [f"output_dir={work / 'report'}", f"model.name_or_path={tiny}", *SWEEP]
    cfg, exp = new_experiment(overrides, config=config)
    rng = random.Random(0)
    gold = [rng.choice("ABCD") for _ in range(N_QUESTIONS)]
    results, accounts = {}, {}
    for k, name in enumerate(["base", *(c.id for c in all_cells(cfg))]):
        skill = 0.3 if name == "base" else rng.uniform(0.4, 0.7)
        rows = [
            {"index": i, "gold": g, "pred": g if rng.random() < skill else rng.choice("ABCD")}
            for i, g in enumerate(gold)
        ]
        for r in rows:
            r["correct"] = r["pred"] == r["gold"]
        exp.eval.write_predictions(name, rows)
        results[name] = EvalResult.from_counts(name, sum(r["correct"] for r in rows), len(rows), "loglik")
        exp.eval.write_result(results[name])
        if name != "base":
            exp.method(name).write_metrics(TrainMetrics(name, status="completed", tokens_per_s=1000.0 + k, steps=200))
            hours = rng.uniform(0.01, 0.1)
            accounts[name] = {
                "job_id": f"7000_{k}",
                "slurm_state": "COMPLETED",
                "slurm_exit_code": "0:0",
                "slurm_reason": None,
                "attempts": 1,
                "restarts": 0,
                "gpu_hours": hours,
                "cpu_hours": hours,
                "cost": 2.0 * hours,
                "cost_source": "sacct",
            }
    return cfg, exp, results, accounts, len(gold)


def report_rows(args: tp.Any, bench: Bench, config: Path, tiny: Path, work: Path) -> None:
    from launch.results import finalize
    from launch.run import slurm

    cfg, exp, results, accounts, n_eval = fake_scored_sweep(config, tiny, work)
    slurm.experiment_accounts = lambda manifest, price, timeout_s=60: (accounts, "sacct")  # timed under status
    build, show = [], []
    for i in range(args.runs):
        t = time.perf_counter()
        done = finalize.main(cfg, exp, results, n_eval=n_eval, gpus=0, threads=1)
        build.append(time.perf_counter() - t)
        dt, rc, out, err = timed_subprocess([venv_bin("cyberft"), "report", str(exp.root)])
        if rc != 0 or "Holm-adjusted" not in out:
            raise RuntimeError(f"cyberft report failed (rc={rc}):\n{err[-2000:]}{out[-2000:]}")
        show.append(dt)
        log(
            NAME,
            f"run {i + 1}: report step {build[-1]:.3f}s ({len(done.analysis['comparisons'])} comparisons, "
            f"{len(done.analysis['groups'])} rows over seeds), cyberft report {dt:.3f}s",
        )
    bench.rows += [
        Row(
            "report",
            f"report step (finalize.main), {CELLS} cells",
            "s",
            build,
            False,
            targets=[Target("<5s", "max", 5.0)],
        ),
        Row("report_cli", "cyberft report EXP (prints summary.json)", "s", show, False),
    ]


def build(args: tp.Any) -> Bench:
    bench = Bench(NAME)
    work = Path(tempfile.mkdtemp(prefix="cyberft-bench-sweep-work-"))
    try:
        from train.tiny_model import build_tiny_model

        tiny = build_tiny_model(work / "tiny-llama", seed=0, pretrain_steps=0)
        config = bench_config(work)
        report_rows(args, bench, config, tiny, work)
        cluster_rows(args, bench, config, tiny, work)
        bench.info |= {"machine": machine_info(), "cells": CELLS, "sweep": SWEEP, "questions": N_QUESTIONS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    return bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    raise SystemExit(main())
