"""Benchmark: wall time of ``cyberft submit`` on a real (local) Slurm cluster.

Starts the dev cluster (``slurm/dev-cluster/up`` through ``tests/support/slurm_cluster.py``: one node,
``ACCT=dbd``, on free ports so a developer's own cluster is left alone), builds the tiny model
once, then times, each run in a new process:

* ``cyberft submit <smoke-classic> --profile dev model.name_or_path=<tiny> output_dir=<tmp>``, where
  ``<smoke-classic>`` is ``configs/smoke.yaml`` with its three classic methods (full SFT, LoRA, QLoRA;
  ``tests/support/experiments.classic_smoke``), the shape this benchmark has always measured:
  validate config + profile, memory estimate, create the experiment, prepare the data split,
  snapshot the code, submit 3 training jobs and the evaluation job (``afterany`` on the three)
  through submitit, record the ids;
* baseline: a plain loop of ``sbatch --wrap`` calls of the same shape (one per training job, then one
  with ``--dependency=afterany:...``).

The job ids are read from the experiment's manifest, not from the command's output. Right after each
run, the jobs are cancelled (untimed; we measure submission, not training) and the queue is drained
before the next run. The cluster is always stopped at the end, also on an error or SIGTERM, with every
process it left behind (``bench/_cluster.py``). Target: under 1.5 s.
Needs root and the Slurm packages (``up`` installs them with apt-get); otherwise it is skipped.

    python bench/bench_submit.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import os
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
from _cluster import dev_cluster  # noqa: E402
from _common import REPO, Bench, Row, Target, bench_main, log, machine_info, parse_args, timed_subprocess, venv_bin  # noqa: E402

sys.path.insert(0, str(REPO))
NAME = "submit"


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


def bench_config(folder: Path) -> Path:
    """``configs/smoke.yaml`` with only its three classic methods, written into ``folder``.

    The smoke study grew to seven method kinds; this benchmark and its baseline keep measuring the
    three training jobs plus the evaluation that its earlier results (and the target) were taken on.
    """
    from tests.support.experiments import classic_smoke

    return classic_smoke(folder)


def training_jobs(config: Path) -> int:
    """How many training jobs ``config`` submits (one per method; the benchmark's config has no sweep)."""
    from launch.spec import yamlio

    return len(yamlio.parse(config.read_text(encoding="utf-8"))["methods"])


def submitted_experiment(out_dir: Path) -> Path | None:
    """The experiment ``cyberft submit`` made in ``out_dir`` (each submission gets a new, empty one).

    None when there is none; more than one means ``out_dir`` was reused, a mistake in the benchmark.
    """
    found = sorted(p for p in out_dir.iterdir() if p.is_dir()) if out_dir.is_dir() else []
    if len(found) > 1:
        raise RuntimeError(f"{out_dir} holds {len(found)} experiments; give every submission a new output_dir")
    return found[0] if found else None


def manifest_job_ids(exp: Path | None) -> dict[str, str]:
    """Job name -> Slurm job id (``4242`` or array task ``4242_3``), from the experiment's manifest.

    The manifest is what ``cyberft submit`` records for ``status``, ``cancel`` and ``report``; unlike
    its printed output, no library warning or changed wording can add or hide an id.
    """
    if exp is None or not exp.is_dir():
        return {}
    from launch.store.expdir import ExperimentDir

    edir = ExperimentDir(exp)
    if not edir.manifest_file.is_file():
        return {}
    return {name: rec.job_id for name, rec in edir.read_manifest().jobs.items()}


def cancel_quietly(job_ids: tp.Iterable[str], env: dict) -> None:
    """Cancel what a failed submission left (array tasks by their array), before its error is raised.

    A failure here is only logged: the error being raised says more, and the cluster's teardown
    ends whatever is left anyway.
    """
    ids = sorted({i.split("_")[0] for i in job_ids})
    try:
        cancel_and_drain(ids, env)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(NAME, f"could not cancel jobs {ids}: {exc}")


def submit_ours(config: Path, tiny: Path, out_dir: Path, env: dict) -> tuple[float, list[str]]:
    """Time ``cyberft submit config`` in a new process; return (seconds, its job ids from the manifest).

    Raises ``RuntimeError`` (after cancelling whatever was submitted) when it exits non-zero or did not
    submit exactly one job per method plus the evaluation.
    """
    cmd = [
        venv_bin("cyberft"),
        "submit",
        str(config),
        "--profile",
        "dev",
        f"model.name_or_path={tiny}",
        f"output_dir={out_dir}",
    ]
    dt, rc, out, err = timed_subprocess(cmd, env=env)
    jobs = manifest_job_ids(submitted_experiment(out_dir))
    expected = training_jobs(config) + 1
    if rc != 0 or len(jobs) != expected:
        cancel_quietly(jobs.values(), env)
        raise RuntimeError(
            f"cyberft submit {config} failed: exit {rc}, {len(jobs)} job(s) in the manifest "
            f"({', '.join(jobs) or 'none'}), expected {expected} (one per method and the evaluation); "
            f"if the config's methods changed, bench_config() should pick the methods to measure.\n"
            f"stderr:\n{err[-3000:]}\nstdout:\n{out[-2000:]}"
        )
    return dt, list(jobs.values())


def submit_baseline(work: Path, env: dict, n_train: int) -> tuple[float, list[str]]:
    """``n_train`` plain sbatch calls, then one depending on them (the shape of ``cyberft submit``'s jobs)."""
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
    for i in range(n_train):
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
    work = Path(tempfile.mkdtemp(prefix="cyberft-bench-submit-work-"))
    try:
        t0 = time.perf_counter()
        from train.tiny_model import build_tiny_model

        tiny = build_tiny_model(work / "tiny-llama", seed=0, pretrain_steps=0)
        log(NAME, f"tiny model built in {time.perf_counter() - t0:.1f}s")
        config = bench_config(work)
        n_train = training_jobs(config)
        with dev_cluster(NAME) as (_base, env):
            # Warm-up, untimed: the page cache, the first sbatch of slurmctld.
            cancel_and_drain(submit_ours(config, tiny, work / "warm", env)[1], env)
            cancel_and_drain(submit_baseline(work, env, n_train)[1], env)

            ours, plain = [], []
            for i in range(args.runs):
                dt_ours, ids = submit_ours(config, tiny, work / f"runs{i}", env)
                cancel_and_drain(ids, env)
                dt_plain, ids2 = submit_baseline(work, env, n_train)
                cancel_and_drain(ids2, env)
                ours.append(dt_ours)
                plain.append(dt_plain)
                log(
                    NAME,
                    f"run {i + 1}/{args.runs}: cyberft submit {dt_ours:.3f}s (jobs {','.join(ids)}), "
                    f"{n_train + 1}x sbatch {dt_plain:.3f}s",
                )
        bench.rows = [
            Row(
                "sbatch",
                f"{n_train + 1}x sbatch --wrap ({n_train} + 1 afterany)",
                "s",
                plain,
                False,
                baseline="sbatch",
            ),
            Row(
                "ours",
                f"cyberft submit smoke.yaml ({n_train} train + eval)",
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
            "config": "configs/smoke.yaml, classic methods (full_sft, lora, qlora)",
            "profile": "dev",
            "model": "tiny (build_tiny_model, random weights)",
        }
        bench.notes = [
            "cyberft submit includes: config + profile checks, memory estimate, data split, code snapshot, "
            f"{n_train + 1} submitit submissions (pickle + sbatch each), manifest writes"
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    return bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    raise SystemExit(main())
