"""A sweep on a real Slurm (the dev cluster: slurmctld + slurmd + slurmdbd), tiny model, few steps.

The issue's acceptance: 3 methods x 3 seeds x 2 learning rates run as 3 array submissions plus the
evaluation, every cell is scored, the report shows mean ± sd and the paired tests, and the sum of the
cells' sacct GPU-hours (every attempt) equals the report's total. Then, per cell: a task requeued by
``scontrol requeue`` runs again and costs both attempts; a cancelled cell gets its row with the Slurm
state while the method's other cells are still aggregated (n shown); ``cyberft resume`` sends only
that cell again, and the new evaluation scores it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from support.experiments import classic_smoke
from support.slurm_cluster import cluster_or_skip, make_base, run, stop_all, stop_cluster
from test_submit_slurm import cyberft, sacct_gpu_hours, scan_for_canaries

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
METHODS = ("full_sft", "lora", "qlora")


@pytest.fixture(scope="module")
def cluster():
    stop_all()
    base = make_base("cyberft-slurm-sweep-")
    try:
        env = cluster_or_skip(base, topo="single", acct="dbd")
        yield base, {**env, "CYBERFT_PROGRESS_EVERY_S": "0"}
    finally:
        stop_cluster(base, remove=True)


def submit(
    env: dict, tmp_path: Path, tiny_model: Path, *overrides: str, config: Path | None = None
) -> tuple[Path, str]:
    argv = ["submit", str(config or "configs/smoke.yaml"), "--profile", "dev", f"model.name_or_path={tiny_model}"]
    res = cyberft(env, *argv, f"output_dir={tmp_path / 'runs'}", *overrides)
    assert res.returncode == 0, res.stdout + res.stderr
    return Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1)), res.stdout


def manifest_jobs(exp: Path) -> dict[str, dict]:
    return json.loads((exp / "manifest.json").read_text())["jobs"]


def summary(exp: Path) -> dict:
    return json.loads((exp / "summary.json").read_text())


def wait(env: dict, exp: Path, rc: int) -> None:
    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=1500)
    assert waited.returncode == rc, waited.stdout + waited.stderr


def test_three_methods_three_seeds_two_learning_rates(cluster, tmp_path, tiny_model):
    base, env = cluster
    sweep = ["sweep.seeds=[0, 1, 2]", "sweep.max_parallel=2"]
    for m in METHODS:
        sweep += [f"methods.{m}.max_steps=5", f"sweep.grid.methods.{m}.learning_rate=[1.0e-3, 3.0e-3]"]
    exp, out = submit(env, tmp_path, tiny_model, *sweep, config=classic_smoke(tmp_path))
    assert "submitted 19 job(s) in 4 sbatch call(s)" in out, out
    jobs = manifest_jobs(exp)
    arrays = {m: {jobs[f"{m}[{i}]"]["job_id"].split("_")[0] for i in range(6)} for m in METHODS}
    assert all(len(ids) == 1 for ids in arrays.values()), arrays  # one array per method
    assert [jobs[f"lora[{i}]"]["job_id"] for i in range(6)] == [f"{next(iter(arrays['lora']))}_{i}" for i in range(6)]
    assert "_" not in jobs["eval"]["job_id"]  # 19 models to score: one evaluation job, not an array

    wait(env, exp, 0)
    result = summary(exp)
    cells = [r for r in result["rows"] if r["method"].split("[")[0] in METHODS]
    assert len(cells) == 18 and all(r["accuracy"] is not None and r["cost_source"] == "sacct" for r in cells)
    groups = {g["group"]: g for g in result["groups"]}
    assert len(groups) == 6 and all(g["n"] == 3 for g in groups.values()), groups.keys()
    # Cost: each cell's GPU-hours are what sacct says for its task; their sum is the report's total.
    direct = {r["method"]: sacct_gpu_hours(jobs[r["method"]]["job_id"], env) for r in cells}
    assert all(v > 0 for v in direct.values())
    for r in cells:
        assert r["gpu_hours"] == pytest.approx(direct[r["method"]], abs=1e-6), r["method"]
    assert result["total"]["gpu_hours"] == pytest.approx(sum(direct.values()), abs=1e-5)
    report = cyberft(env, "report", str(exp))
    assert report.returncode == 0, report.stderr
    assert re.search(r"^lora \(learning_rate=0\.001\) +3/3 +\d\.\d{3} ± \d\.\d{3} \[", report.stdout, re.M), (
        report.stdout
    )
    pairs = [c["text"] for c in result["comparisons"]]
    assert any(t.startswith("lora (learning_rate=0.001) vs base: ") for t in pairs) and len(pairs) >= 6 + 12
    assert all(re.search(r" pts \[.*\], p [=<] .*significant$", t) for t in pairs)
    assert all(t in report.stdout for t in pairs)
    assert scan_for_canaries(exp) == []


def _wait_for_checkpoint(exp: Path, address_dir: str) -> None:
    ckpts = exp / "methods" / address_dir / "checkpoints"
    deadline = time.monotonic() + 600
    while not any((d / "COMPLETE").is_file() for d in (ckpts.iterdir() if ckpts.is_dir() else [])):
        assert time.monotonic() < deadline, f"{address_dir} wrote no complete checkpoint in 10 minutes"
        time.sleep(0.5)


def lora_only(tmp_path: Path, steps: int) -> Path:
    """configs/smoke.yaml with its LoRA method alone, long enough to be interrupted after a checkpoint."""
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    lora = next(m for m in cfg["methods"] if m["name"] == "lora")
    cfg["methods"] = [dict(lora, max_steps=steps, checkpoint={"every_steps": 10, "keep": 2})]
    cfg["data"]["train"]["path"] = str(REPO / "data/sample/cyber_mcq.json")
    path = tmp_path / "lora-only.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_requeue_cancel_and_resume_address_one_cell(cluster, tmp_path, tiny_model):
    base, env = cluster
    config = lora_only(tmp_path, steps=120)
    exp, _ = submit(env, tmp_path, tiny_model, "sweep.seeds=[0, 1, 2]", "sweep.max_parallel=2", config=config)
    ids = {name: rec["job_id"] for name, rec in manifest_jobs(exp).items()}
    assert set(ids) == {"lora[0]", "lora[1]", "lora[2]", "eval"}, ids

    # Cell 0 first: Slurm starts an array's tasks in index order, and on a node with room for one task at
    # a time cell 1 only starts once cell 0 has ended, so cell 0 must be caught while it runs.
    _wait_for_checkpoint(exp, "lora/cells/0")
    assert cyberft(env, "cancel", str(exp), "lora[0]").returncode == 0
    _wait_for_checkpoint(exp, "lora/cells/1")
    run(["scontrol", "requeue", ids["lora[1]"]], env)  # Slurm kills the task and starts it again

    wait(env, exp, 1)
    result = summary(exp)
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["lora[0]"]["accuracy"] is None and rows["lora[0]"]["slurm_state"] == "CANCELLED", rows["lora[0]"]
    group = next(g for g in result["groups"] if g["group"] == "lora")
    assert group["n"] == 2 and [c["cell"] for c in group["not_scored"]] == ["lora[0]"]
    requeued = rows["lora[1]"]
    assert requeued["accuracy"] is not None and requeued["restarts"] >= 1 and requeued["attempts"] >= 2, requeued
    assert requeued["gpu_hours"] == pytest.approx(sacct_gpu_hours(ids["lora[1]"], env), abs=1e-6)

    res = cyberft(env, "resume", str(exp), "lora[0]")
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = manifest_jobs(exp)
    assert jobs["lora[0]"]["previous_job_ids"] == [ids["lora[0]"]] and jobs["lora[0]"]["job_id"] != ids["lora[0]"]
    assert jobs["lora[1]"]["job_id"] == ids["lora[1]"] and jobs["lora[2]"]["job_id"] == ids["lora[2]"]
    wait(env, exp, 0)
    result = summary(exp)
    rows = {r["method"]: r for r in result["rows"]}
    assert next(g for g in result["groups"] if g["group"] == "lora")["n"] == 3
    both = sacct_gpu_hours(ids["lora[0]"], env) + sacct_gpu_hours(jobs["lora[0]"]["job_id"], env)
    assert rows["lora[0]"]["accuracy"] is not None and rows["lora[0]"]["gpu_hours"] == pytest.approx(both, abs=1e-6)
    out = cyberft(env, "logs", str(exp), "lora[0]", "--stream", "out").stdout
    assert re.search(r"resumed from \S+ \(step (\d+)/", out), out[-2000:]
    assert scan_for_canaries(exp) == []
