"""``make gpu-check`` (bench/gpu_check.py) without a GPU: it prints its plan and exits 0; its runner reports each
step (passed, failed, timed out) and goes on. The steps themselves need a GPU and are not run here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=300
    )


def test_without_a_gpu_it_prints_its_plan_and_exits_0(tmp_path):
    out = tmp_path / "gpu-latest.json"
    res = run("--out", str(out))
    assert res.returncode == 0, res.stderr
    g = gpu_check_module()
    for step in g.STEPS:
        assert f"  {step.name} " in res.stdout
    assert "no CUDA GPU here: nothing was run" in res.stdout
    assert not out.exists()
    # Every step has its function, and the limits add up to the 8 minutes promised.
    assert set(g.STEP_FUNCS) == {s.name for s in g.STEPS}
    assert sum(s.limit_s for s in g.STEPS) <= g.TOTAL_S <= 480
    plan = run("--plan", "--only", "zero3,lora", "--scale", "2")
    assert plan.returncode == 0 and "zero3" in plan.stdout and "200 s" in plan.stdout and "qlora" not in plan.stdout
    bad = run("--plan", "--only", "zero4")
    assert bad.returncode == 2 and "unknown step(s) zero4 -> one of env, models" in bad.stderr


@pytest.mark.slow
def test_runner_reports_each_step_and_goes_on_after_a_failure(tmp_path):
    """Steps' code on the CPU (GPU_CHECK_DEVICE=cpu): a1 fails (no models step ran), a2's guard check passes."""
    out = tmp_path / "gpu.json"
    res = run("--only", "a1_full_sft_bf16,a2_gpu_binding", "--out", str(out), "--scale", "3", GPU_CHECK_DEVICE="cpu")
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(out.read_text())
    steps = {s["name"]: s for s in data["steps"]}
    a1 = steps["a1_full_sft_bf16"]
    assert a1["status"] == "failed" and "models step did not build it" in a1["error"]
    assert steps["a2_gpu_binding"]["status"] == "passed", steps["a2_gpu_binding"]
    assert len(steps["a2_gpu_binding"]["checks"]) == 4
    table = res.stdout[res.stdout.index("step ") :]
    assert "a1_full_sft_bf16   failed" in table and "a2_gpu_binding     passed" in table


def test_a_step_that_runs_out_of_time_is_reported(tmp_path):
    out = tmp_path / "gpu.json"
    res = run("--only", "env", "--allow-cpu", "--scale", "0.01", "--out", str(out))
    (step,) = json.loads(out.read_text())["steps"]
    assert res.returncode == 1 and step["status"] == "failed" and "timed out after" in step["error"]
