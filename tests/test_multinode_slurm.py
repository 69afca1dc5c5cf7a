"""A 2-node full SFT with DeepSpeed ZeRO-3 on the dev cluster (two slurmd), scored by the eval job.

One Slurm job, one task per (fake) GPU on each node: every rank runs the same pickled TrainJob,
exports torch's rendezvous variables from the Slurm task environment (node names n1/n2 do not
resolve, so the master is reached by its NodeAddr; the port comes from the job id), trains with
gloo on CPU and rank 0 saves one consolidated model that the evaluation job loads.

Skipped without root or a way to install Slurm, unless CI is set (then it fails).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.slurm_cluster import cluster_or_skip, make_base, stop_all, stop_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def test_two_node_zero3_sft_is_trained_saved_and_evaluated(tmp_path, tiny_model):
    stop_all()
    base = make_base("cyberft-slurm-2n-")
    try:
        env = cluster_or_skip(base, topo="loop2", acct="dbd")
        cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
        sft = dict(cfg["methods"][0], max_steps=8, micro_batch_size=4, deepspeed="ds_configs/zero3.json")
        sft["resources"] = {"nodes": 2, "gpus_per_node": 1, "cpus_per_gpu": 1, "mem_gb_per_gpu": 2, "time_min": 15}
        cfg.update(name="two-node", methods=[sft], output_dir=str(tmp_path / "runs"))
        cfg["model"]["name_or_path"] = str(tiny_model)
        cfg["data"].update(train={"path": str(REPO / "data/sample/cyber_mcq.json")}, max_train=128, max_eval=64)
        config = tmp_path / "two-node.yaml"
        config.write_text(yaml.safe_dump(cfg))
        run_env = {**os.environ, **env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

        def cyberft(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "launch.cli", *argv],
                cwd=REPO,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        sub = cyberft("submit", str(config), "--profile", "dev")
        assert sub.returncode == 0, sub.stdout + sub.stderr
        exp = Path(re.search(r"^experiment: (.+)$", sub.stdout, re.M).group(1))
        # The training job's own script, by its id: a glob over jobs/ also finds the eval job's script.
        sft_id = json.loads((exp / "manifest.json").read_text())["jobs"]["full_sft"]["job_id"]
        script = (exp / "jobs" / sft_id / f"{sft_id}_submission.sh").read_text()
        assert (
            "#SBATCH --nodes=2" in script
            and "#SBATCH --ntasks-per-node=1" in script
            and "--kill-on-bad-exit=1" in script
        )

        waited = cyberft("status", str(exp), "--wait", "--interval", "2", timeout=900)
        logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted((exp / "jobs").glob("*/*_log.err")))
        assert waited.returncode == 0, waited.stdout + waited.stderr + logs

        metrics = json.loads((exp / "methods" / "full_sft" / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["n_devices"] == 2 and metrics["steps"] == 8
        # Both ranks ran, one per node.
        rank_logs = sorted((exp / "jobs").glob("*/*_1_log.err"))
        assert rank_logs, "no log of task 1: the job did not run two tasks"
        model_dir = exp / "methods" / "full_sft" / "model"
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
        rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
        assert rows["full_sft"]["status"] == "completed" and rows["full_sft"]["accuracy"] is not None
        assert rows["full_sft"]["cost_source"] == "sacct"
        # 2 nodes x 1 GPU: sacct's GPU-hours count both.
        assert rows["full_sft"]["gpus"] == 2 and rows["full_sft"]["nodes"] in ("n[1-2]", "n1,n2")
    finally:
        stop_cluster(base, remove=True)
