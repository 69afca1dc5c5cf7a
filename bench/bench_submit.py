"""Benchmark: wall time of ``cyberft submit`` on a real (local) Slurm cluster.

Starts the dev cluster (``slurm/dev-cluster/up`` through ``tests/support/slurm_cluster.py``: one node,
``ACCT=dbd``, on free ports so a developer's own cluster is left alone), builds the tiny model
once, then times, each run in a new process:

* ``cyberft submit configs/smoke.yaml --profile dev model.name_or_path=<tiny> output_dir=<tmp>``:
  validate config + profile, memory estimate, create the experiment, prepare the data split,
  snapshot the code, submit 3 training jobs and the evaluation job (``afterany`` on the three)
  through submitit, record the ids;
* baseline: a plain loop of 4 ``sbatch --wrap`` calls, the 4th with ``--dependency=afterany:...``.

Right after each, the jobs are cancelled (untimed; we measure submission, not training) and the
queue is drained before the next run. The cluster is always stopped at the end. Target: under 1.5 s.
Needs root and the Slurm packages (``up`` installs them with apt-get); otherwise it is skipped.

    python bench/bench_submit.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DS_ACCELERATOR": "cpu",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Bench, Row, Target, bench_main, log, machine_info, parse_args, timed_subprocess, venv_bin  # noqa: E402

sys.path.insert(0, str(REPO))
NAME = "submit"
JOB_LINE = re.compile(r"^\s+(\S+)\s+job (\d+)\s*$", re.M)


def slurm(cmd: list[str], env: dict, timeout: float = 30) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def cancel_and_drain(ids: list[str], env: dict, timeout: float = 60) -> None:
    """scancel ``ids``, then wait until the cluster's queue is empty (their processes gone)."""
    if ids:
        slurm(["scancel", *ids], env)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not slurm(["squeue", "-h", "-o", "%i"], env).strip():
            return
        time.sleep(0.2)
    raise RuntimeError(f"jobs still queued {timeout}s after scancel")


def submit_ours(tiny: Path, out_dir: Path, env: dict) -> tuple[float, list[str]]:
    cmd = [
        venv_bin("cyberft"),
        "submit",
        "configs/smoke.yaml",
        "--profile",
        "dev",
        f"model.name_or_path={tiny}",
        f"output_dir={out_dir}",
    ]
    dt, rc, out, err = timed_subprocess(cmd, env=env)
    ids = [m.group(2) for m in JOB_LINE.finditer(out)]
    if rc != 0 or len(ids) != 4:
        cancel_and_drain(ids, env)
        raise RuntimeError(f"cyberft submit failed (rc={rc}, {len(ids)} job ids):\n{err[-3000:]}{out[-2000:]}")
    return dt, ids


def submit_baseline(work: Path, env: dict) -> tuple[float, list[str]]:
    """4 plain sbatch calls (the shape of the smoke experiment: 3 jobs, then one depending on them)."""
    common = [
        "sbatch",
        "--parsable",
        "--partition=debug",
        "--time=20",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--mem=2G",
        "--gpus-per-node=1",
        f"--output={work}/sbatch-%j.out",
    ]
    ids: list[str] = []
    t = time.perf_counter()
    for i in range(3):
        ids.append(slurm(common + [f"--job-name=bench.train{i}", "--wrap", "sleep 600"], env).strip().split(";")[0])
    ids.append(
        slurm(common + ["--job-name=bench.eval", f"--dependency=afterany:{':'.join(ids)}", "--wrap", "sleep 600"], env)
        .strip()
        .split(";")[0]
    )
    return time.perf_counter() - t, ids


def build(args: tp.Any) -> Bench:
    from tests.support import slurm_cluster as sc

    bench = Bench(NAME)
    reason = sc.unavailable_reason("dbd")
    if reason:
        bench.skipped = reason
        log(NAME, f"skipped: {reason}")
        return bench
    work = Path(tempfile.mkdtemp(prefix="cyberft-bench-submit-"))
    base = sc.make_base("cyberft-bench-")
    try:
        t0 = time.perf_counter()
        from train.tiny_model import build_tiny_model

        tiny = build_tiny_model(work / "tiny-llama", seed=0, pretrain_steps=0)
        log(NAME, f"tiny model built in {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
        env = dict(os.environ, **sc.start_cluster(base, topo="single", acct="dbd"))
        log(NAME, f"dev cluster (single, dbd) up in {time.perf_counter() - t0:.1f}s at {base}")

        # Warm-up, untimed: the page cache, the first sbatch of slurmctld.
        cancel_and_drain(submit_ours(tiny, work / "runs", env)[1], env)
        cancel_and_drain(submit_baseline(work, env)[1], env)

        ours, plain = [], []
        for i in range(args.runs):
            dt_ours, ids = submit_ours(tiny, work / "runs", env)
            cancel_and_drain(ids, env)
            dt_plain, ids2 = submit_baseline(work, env)
            cancel_and_drain(ids2, env)
            ours.append(dt_ours)
            plain.append(dt_plain)
            log(
                NAME,
                f"run {i + 1}/{args.runs}: cyberft submit {dt_ours:.3f}s (jobs {','.join(ids)}), "
                f"4x sbatch {dt_plain:.3f}s",
            )
        bench.rows = [
            Row("sbatch", "4x sbatch --wrap (3 + 1 afterany)", "s", plain, False, baseline="sbatch"),
            Row(
                "ours",
                "cyberft submit smoke.yaml (3 train + eval)",
                "s",
                ours,
                False,
                baseline="sbatch",
                targets=[Target("<1.5s", "max", 1.5)],
            ),
        ]
        bench.info = {
            "machine": machine_info(),
            "cluster": "slurm/dev-cluster/up TOPO=single ACCT=dbd",
            "config": "configs/smoke.yaml",
            "profile": "dev",
            "model": "tiny (build_tiny_model, random weights)",
        }
        bench.notes = [
            "cyberft submit includes: config + profile checks, memory estimate, data split, code snapshot, "
            "4 submitit submissions (pickle + sbatch each), manifest writes"
        ]
    finally:
        try:
            sc.stop_cluster(base, remove=True)
            log(NAME, "dev cluster stopped")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    return bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    raise SystemExit(main())
