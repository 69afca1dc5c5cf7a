"""A training job interrupted three times on the dev cluster ends exactly like an uninterrupted one.

Interruptions, mixed as on a real cluster: ``scontrol requeue`` (Slurm kills the job and starts
it again; submitit does not checkpoint on this path, so the job resumes from its last periodic
checkpoint), SIGUSR2 (what Slurm sends before a time limit or on preemption; the job saves at
the next step boundary and submitit requeues it), and ``scontrol requeue`` again. Then: final
weights equal to an uninterrupted run's (same config, same cluster), one W&B run with every step
once, the cost of every attempt in the report, and no planted secret in any file.
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
import yaml
from safetensors.torch import load_file

from support.runs import effective_steps, max_diff
from support.slurm_cluster import cluster_or_skip, make_base, run, stop_all, stop_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
STEPS = 150
CANARIES = {"WANDB_API_KEY": "canary-wandb-requeue-0123456789", "HF_TOKEN": "hf_canaryREQUEUE0123456789"}


def write_config(tmp_path: Path, tiny_model: Path, name: str) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    sft = dict(cfg["methods"][0], max_steps=STEPS, micro_batch_size=8, checkpoint={"every_steps": 10, "keep": 2})
    cfg.update(name=name, methods=[sft], output_dir=str(tmp_path / "runs"))
    cfg["model"]["name_or_path"] = str(tiny_model)
    cfg["data"].update(max_train=64, max_eval=16)
    cfg["data"]["train"]["path"] = str(REPO / "data/sample/cyber_mcq.json")
    cfg["eval"]["include_base"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_three_interruptions_end_like_no_interruption(tmp_path, tiny_model):
    stop_all()
    base = make_base("cyberft-slurm-rq-")
    try:
        env = cluster_or_skip(base, topo="single", acct="dbd")
        # progress.json at every step: the test interrupts the job at given steps
        full_env = {
            **os.environ,
            **env,
            **CANARIES,
            "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "offline",
            "CYBERFT_PROGRESS_EVERY_S": "0",
        }

        def cyberft(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "launch.cli", *argv],
                cwd=REPO,
                env=full_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        exps = {}
        for name in ("reference", "interrupted"):
            res = cyberft("submit", str(write_config(tmp_path, tiny_model, name)), "--profile", "dev")
            assert res.returncode == 0, res.stdout + res.stderr
            exps[name] = (
                Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1)),
                re.search(r"^  full_sft\s+job (\d+)$", res.stdout, re.M).group(1),
            )
        exp, job = exps["interrupted"]
        progress = exp / "methods" / "full_sft" / "progress.json"

        def wait_step(step: int) -> int:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    now = json.loads(progress.read_text())["step"]
                except (OSError, ValueError, KeyError):
                    now = 0
                if now >= step:
                    return now
                time.sleep(0.02)
            raise AssertionError(f"job {job} never reached step {step}")

        at = [wait_step(25)]
        run(["scontrol", "requeue", job], env)
        at.append(wait_step(60))
        run(["scancel", "--signal=USR2", job], env)
        at.append(wait_step(100))
        run(["scontrol", "requeue", job], env)
        print(f"interrupted at steps {at}")

        for name, (e, _) in exps.items():
            waited = cyberft("status", str(e), "--wait", "--interval", "1", timeout=900)
            assert waited.returncode == 0, f"{name}:\n{waited.stdout}{waited.stderr}"

        out_log = "".join(p.read_text(errors="replace") for p in (exp / "jobs" / job).glob("*_0_log.*"))
        assert "Caught signal SIGUSR2" in out_log and "Requeued job" in out_log, out_log[-3000:]
        resumed = [int(s) for s in re.findall(r"resumed from \S+ \(step (\d+)/", out_log)]
        assert len(resumed) == 3, out_log[-3000:]
        assert resumed[1] >= 60  # saved where USR2 was seen, not at the periodic checkpoint before it

        ref, _ = exps["reference"]
        weights = lambda e: load_file(str(e / "methods" / "full_sft" / "model" / "model.safetensors"))  # noqa: E731
        diff = max_diff(weights(ref), weights(exp))
        print(f"max |w_interrupted - w_reference| = {diff:.3g}")
        assert diff <= 1e-6

        steps, ids = effective_steps(exp, "full_sft")
        assert steps == list(range(1, STEPS + 1))
        # Four attempts, then the evaluation job reopening the run to put its scores in its summary (offline:
        # a fifth directory with the same id). An attempt killed before W&B wrote its run record has no id.
        assert len(ids) == 5 and {i for i in ids if i} == {f"{exp.name}-full_sft"}

        row = next(r for r in json.loads((exp / "summary.json").read_text())["rows"] if r["method"] == "full_sft")
        assert row["restarts"] == 3 and row["attempts"] == 4 and row["status"] == "completed", row
        out = run(["sacct", "-j", job, "-X", "-D", "-n", "-P", "-o", "State,AllocTRES,ElapsedRaw"], env)
        attempts = [line.split("|") for line in out.strip().splitlines()]
        assert [a[0] for a in attempts] == ["REQUEUED", "REQUEUED", "REQUEUED", "COMPLETED"], attempts
        gpu_h = sum(int(re.search(r"gres/gpu=(\d+)", a[1]).group(1)) * int(a[2]) for a in attempts) / 3600
        assert row["gpu_hours"] == pytest.approx(gpu_h, abs=1e-6)

        hits = []
        for d in (exp, ref, base / "log"):
            for path in d.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    data = path.read_bytes()
                    hits += [f"{path}: {k}" for k, v in CANARIES.items() if v.encode() in data]
        assert hits == []
    finally:
        stop_cluster(base, remove=True)
