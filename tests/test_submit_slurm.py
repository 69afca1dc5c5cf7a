"""``cyberft submit`` against a real Slurm (the dev cluster: slurmctld + slurmd + slurmdbd).

Skipped without root or a way to install Slurm, unless ``CI`` is set (then they fail): see
tests/support/slurm_cluster.py. One single-node cluster with accounting serves the module.

Checked end to end: submit returns at once, the evaluation waits on its dependency while
training runs, ``status --wait`` ends with exit 0, the report's GPU-hours equal what ``sacct``
says for each job (every attempt), a method that fails still gets its row while the others are
evaluated, ``cancel`` cancels, ``resume`` continues a cancelled method from its checkpoint, and
planted secrets appear in no file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.experiments import SMOKE_METHODS
from support.runs import effective_steps
from support.slurm_cluster import cluster_or_skip, make_base, run, stop_all, stop_cluster
from support.wandb_offline import find_runs, read_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
CANARIES = {"WANDB_API_KEY": "canary-wandb-submit-0123456789", "HF_TOKEN": "hf_canarySUBMIT0123456789"}
TRAINED = [k for k in SMOKE_METHODS if k != "few_shot"]  # the smoke config names each method as its kind
FAST = [f"methods.{m}.max_steps=20" for m in TRAINED]


@pytest.fixture(scope="module")
def cluster():
    stop_all()
    base = make_base("cyberft-slurm-submit-")
    try:
        env = cluster_or_skip(base, topo="single", acct="dbd")
        yield base, env
    finally:
        stop_cluster(base, remove=True)


def cyberft(env: dict, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, **CANARIES, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(
    env: dict, tmp_path: Path, tiny_model: Path, *overrides: str, config: str | Path = "configs/smoke.yaml"
) -> tuple[Path, dict[str, str], float]:
    t0 = time.perf_counter()
    res = cyberft(
        env,
        "submit",
        str(config),
        "--profile",
        "dev",
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
        *overrides,
    )
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    exp = Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1))
    ids = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
    return exp, ids, wall


def sacct_gpu_hours(job_id: str, env: dict) -> float:
    """GPU-hours of a job straight from sacct: gres/gpu x ElapsedRaw over every attempt."""
    out = run(["sacct", "-j", job_id, "-X", "-D", "-n", "-P", "-o", "AllocTRES,ElapsedRaw"], env)
    total = 0
    for line in out.strip().splitlines():
        tres, elapsed = line.split("|")
        gpus = int(re.search(r"gres/gpu=(\d+)", tres).group(1)) if "gres/gpu=" in tres else 0
        total += gpus * int(elapsed)
    return total / 3600


def scan_for_canaries(*dirs: Path) -> list[str]:
    hits = []
    for d in dirs:
        for path in d.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits += [f"{path}: {k}" for k, v in CANARIES.items() if v.encode() in data]
    return hits


def test_smoke_experiment_end_to_end_with_sacct_cost(cluster, tmp_path, tiny_model):
    base, env = cluster
    exp, ids, wall = submit(env, tmp_path, tiny_model, *FAST)
    # "Returns at once" is checked by what it returned to (below: the evaluation still waits on its
    # dependency, training jobs pending or running); the time is printed, not asserted (bench_submit.py).
    print(f"submit returned in {wall:.2f} s (new interpreter included)")
    assert list(ids) == [*SMOKE_METHODS, "eval"]  # all seven kinds in one submission

    # Right after submission the evaluation waits on its dependency while training starts.
    status = cyberft(env, "status", str(exp))
    assert status.returncode == 0, status.stderr
    eval_line = next(line for line in status.stdout.splitlines() if line.startswith("eval "))
    assert "PENDING" in eval_line and "Dependency" in eval_line, status.stdout
    assert any(
        re.match(rf"{m}\s+\d+\s+(RUNNING|PENDING)", line)
        for m in ("full_sft", "lora", "qlora")
        for line in status.stdout.splitlines()
    ), status.stdout

    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stdout.strip().splitlines()[-1].split()[2] == "COMPLETED"

    summary = json.loads((exp / "summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert list(rows) == ["base", *SMOKE_METHODS]
    for name in SMOKE_METHODS:
        r = rows[name]
        assert r["status"] == "completed" and r["accuracy"] is not None
        # few-shot's price is its scoring in the evaluation job, added to its own job's (no GPU here)
        source = "sacct + eval scoring" if name == "few_shot" else "sacct"
        assert r["cost_source"] == source and r["job_id"] == ids[name] and r["restarts"] == 0
        expected = sacct_gpu_hours(ids[name], env)
        assert expected > 0 or name == "few_shot"  # its job asks for no GPU
        assert r["gpu_hours"] == pytest.approx(expected, abs=1e-6), (name, r["gpu_hours"], expected)
        assert r["cost"] == pytest.approx(2.0 * expected, abs=1e-5)  # dev profile: 2.0 per GPU-hour
        assert r["queue_wait_s"] is not None and r["slurm_state"] == "COMPLETED"
    # The W&B comparison table carries the same sacct figures.
    runs = {r.job_type + ":" + r.name: r for r in map(read_run, find_runs(exp / "wandb"))}
    table = runs["eval:eval"].tables["comparison"]
    logged = {row[table["columns"].index("method")]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert logged["lora"]["cost_source"] == "sacct"
    assert logged["lora"]["gpu_hours"] == pytest.approx(rows["lora"]["gpu_hours"])

    report = cyberft(env, "report", str(exp))
    assert report.returncode == 0 and "qlora" in report.stdout
    logs = cyberft(env, "logs", str(exp), "eval", "--tail", "50")
    assert logs.returncode == 0 and "cost source: sacct" in logs.stdout
    assert scan_for_canaries(exp) == []


def test_failed_method_gets_its_row_and_the_others_are_still_evaluated(cluster, tmp_path, tiny_model):
    base, env = cluster
    exp, ids, _ = submit(env, tmp_path, tiny_model, *FAST, "methods.lora.lora.target_modules=[no_such_proj]")
    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "not completed: lora" in waited.stderr
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    assert rows["lora"]["accuracy"] is None
    assert rows["lora"]["status"].startswith("failed: Slurm FAILED"), rows["lora"]["status"]
    assert rows["lora"]["slurm_state"] == "FAILED" and rows["lora"]["cost_source"] == "sacct"
    for name in ("base", *(k for k in SMOKE_METHODS if k != "lora")):
        assert rows[name]["accuracy"] is not None and rows[name]["status"] == "completed", rows[name]
    err = cyberft(env, "logs", str(exp), "lora", "--stream", "err")
    assert "no_such_proj" in err.stdout


def test_cancel_cancels_every_job(cluster, tmp_path, tiny_model):
    base, env = cluster
    exp, ids, _ = submit(env, tmp_path, tiny_model)
    res = cyberft(env, "cancel", str(exp))
    assert res.returncode == 0, res.stderr
    assert all(i in res.stdout for i in ids.values())
    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=120)
    assert waited.returncode == 1
    final = waited.stdout.strip().splitlines()[-len(ids) :]
    assert all(line.split()[2] == "CANCELLED" for line in final), final
    manifest = json.loads((exp / "manifest.json").read_text())
    assert sorted(manifest["cancelled"]) == sorted(ids.values())


def test_a_cancelled_method_is_resumed_from_its_checkpoint_and_costs_both_jobs(cluster, tmp_path, tiny_model):
    """Cancel one method mid-run; the evaluation reports it failed; `cyberft resume` sends it again,
    it continues from its newest complete checkpoint into the same W&B run, a new evaluation scores
    it, and its GPU-hours are both jobs' (sacct)."""
    base, env = cluster
    steps = 60
    exp, ids, _ = submit(
        env, tmp_path, tiny_model, *FAST, f"methods.lora.max_steps={steps}", "methods.lora.checkpoint.every_steps=10"
    )
    ckpts = exp / "methods" / "lora" / "checkpoints"
    deadline = time.monotonic() + 600
    while not any((d / "COMPLETE").is_file() for d in (ckpts.iterdir() if ckpts.is_dir() else [])):
        assert time.monotonic() < deadline, "lora wrote no complete checkpoint in 10 minutes"
        time.sleep(0.5)
    assert cyberft(env, "cancel", str(exp), "lora").returncode == 0

    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 1 and "not completed: lora" in waited.stderr, waited.stdout + waited.stderr
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    assert rows["lora"]["accuracy"] is None and rows["lora"]["slurm_state"] == "CANCELLED", rows["lora"]

    dry = cyberft(env, "resume", str(exp), "--dry-run")
    assert dry.returncode == 0 and "resubmit lora" in dry.stdout and "resubmit full_sft" not in dry.stdout, dry.stdout
    assert json.loads((exp / "manifest.json").read_text())["jobs"]["lora"]["job_id"] == ids["lora"]  # dry: nothing sent
    res = cyberft(env, "resume", str(exp))
    assert res.returncode == 0, res.stdout + res.stderr
    new = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
    assert set(new) == {"lora", "eval"} and new["lora"] != ids["lora"]
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["jobs"]["lora"]["previous_job_ids"] == [ids["lora"]]
    assert manifest["jobs"]["full_sft"]["job_id"] == ids["full_sft"]  # a completed method is not sent again

    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    out = cyberft(env, "logs", str(exp), "lora", "--stream", "out").stdout
    resumed_at = [int(s) for s in re.findall(r"resumed from \S+ \(step (\d+)/", out)]
    assert resumed_at and resumed_at[0] >= 10, out[-2000:]
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    assert all(rows[m]["status"] == "completed" and rows[m]["accuracy"] is not None for m in rows), rows
    lora = rows["lora"]
    both = sacct_gpu_hours(ids["lora"], env) + sacct_gpu_hours(new["lora"], env)
    assert lora["job_id"] == new["lora"] and lora["gpu_hours"] == pytest.approx(both, abs=1e-6)
    assert lora["restarts"] >= 1 and lora["attempts"] >= 2
    logged, run_ids = effective_steps(exp, "lora")
    assert logged == list(range(1, steps + 1)), logged
    # One W&B run; a job cancelled before its offline writer flushed the run record reads as "".
    assert {i for i in run_ids if i} == {f"{exp.name}-lora"}
    assert scan_for_canaries(exp) == []
