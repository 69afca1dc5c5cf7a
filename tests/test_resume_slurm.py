"""``cyberft resume EXP key=value`` on the dev cluster (issue 21, item 3's acceptance).

A training job with a 1-minute limit and no requeues left (``max_timeouts: 0``) runs out of time;
``cyberft resume EXP methods.full_sft.resources.time_min=30`` sends it again with the longer limit,
it finishes from its checkpoint and the new evaluation scores it; the manifest records the change.
A change resume may not make (a learning rate) exits 2 and changes nothing: no job, no file.

How a job that runs out of time with no requeues left ends on Slurm (checked here, 22.05 +
submitit): sbatch's ``--signal=USR2@120`` comes before the limit (with a 1-minute limit, at the
first time-limit check after the start), the training loop saves a checkpoint at the next step and
hands over to submitit, which has no requeue left and raises ``UncompletedJobError: ... timed-out
too many times``: sacct shows FAILED, not TIMEOUT. TIMEOUT is what Slurm shows when the signal
never reached the job (it was not running a step yet); either way the job did not finish, and
either is accepted below. The fake-sbatch unit tests are in tests/test_resume_changes.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support import cli
from support.slurm_cluster import cluster_or_skip, make_base, run, stop_all, stop_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
METHOD = "full_sft"
STEPS = 1200
"""Steps no attempt finishes in a minute (7-15 steps/s on the dev cluster's 2 cores), and a few
minutes for the resumed job."""
LONGER = 30


def write_config(tmp_path: Path, tiny_model: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    sft = dict(cfg["methods"][0], max_steps=STEPS, micro_batch_size=8, checkpoint={"every_steps": 50, "keep": 2})
    sft["resources"] = dict(sft["resources"], time_min=1, max_timeouts=0)
    cfg.update(name="resume-limits", methods=[sft], output_dir=str(tmp_path / "runs"))
    cfg["model"]["name_or_path"] = str(tiny_model)
    cfg["data"].update(max_train=64, max_eval=16)
    cfg["data"]["train"]["path"] = str(REPO / "data/sample/cyber_mcq.json")
    cfg["eval"]["include_base"] = False
    path = tmp_path / "resume-limits.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(exp: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``exp`` (and every directory): its content hash and mtime."""
    out = {}
    for path in sorted(exp.rglob("*")):
        rel = str(path.relative_to(exp))
        if path.is_symlink() or path.is_dir():
            out[rel] = ("", 0)
        else:
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


def test_a_longer_time_limit_finishes_a_job_out_of_time_and_a_forbidden_change_changes_nothing(tmp_path, tiny_model):
    stop_all()
    base = make_base("cyberft-slurm-resume-")
    try:
        env = cluster_or_skip(base, topo="single", acct="dbd")
        job_env = {**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

        def cyberft(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
            return cli.cyberft(*argv, env=job_env, timeout=timeout)

        def sacct(job: str) -> list[str]:
            """State and Timelimit of each attempt of ``job``."""
            out = run(["sacct", "-j", job, "-X", "-D", "-n", "-P", "-o", "State,Timelimit"], env)
            return out.strip().splitlines()

        def waited(what: str, timeout: float) -> subprocess.CompletedProcess:
            try:  # polls Slurm every 2 s until every job of the experiment has ended
                return cyberft("status", str(exp), "--wait", "--interval", "2", timeout=timeout)
            except subprocess.TimeoutExpired:
                status = cyberft("status", str(exp))
                raise AssertionError(f"{what}: not ended within {timeout:.0f} s:\n{status.stdout}") from None

        res = cyberft("submit", str(write_config(tmp_path, tiny_model)), "--profile", "dev")
        assert res.returncode == 0, res.stdout + res.stderr
        exp = Path(re.search(r"^experiment: (.+)$", res.stdout, re.M).group(1))
        ids = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
        assert set(ids) == {METHOD, "eval"}, res.stdout
        first = ids[METHOD]

        # 1. The job runs out of its minute with no requeue left; the evaluation runs after it (afterany).
        ended = waited("the 1-minute job and its evaluation", 900)
        assert ended.returncode == 1 and f"not completed: {METHOD}" in ended.stderr, ended.stdout + ended.stderr
        attempts = sacct(first)
        assert len(attempts) == 1, attempts  # no requeue
        state, limit = attempts[0].split("|")
        assert state in ("FAILED", "TIMEOUT") and limit == "00:01:00", attempts
        line = next(x for x in cyberft("status", str(exp)).stdout.splitlines() if x.startswith(METHOD))
        print(f"out of time: {line}")
        assert state in line.split(), line
        out_log = "".join(p.read_text(errors="replace") for p in (exp / "jobs" / first).glob("*_0_log.*"))
        if state == "FAILED":  # the signal reached it: submitit had no requeue left
            assert "timed-out too many times" in out_log, out_log[-3000:]
        assert not (exp / "methods" / METHOD / "model").exists()
        ckpts = exp / "methods" / METHOD / "checkpoints"
        saved = sorted(d.name for d in ckpts.iterdir() if (d / "COMPLETE").is_file()) if ckpts.is_dir() else []
        print(f"complete checkpoints: {saved}")

        # 2. A change resume may not make, with one it may: exit 2, the field and the reason, nothing sent or written.
        before, jobs_before = snapshot(exp), run(["sacct", "-X", "-n", "-P", "-o", "JobID"], env)
        refused = cyberft(
            "resume", str(exp), f"methods.{METHOD}.resources.time_min={LONGER}", f"methods.{METHOD}.learning_rate=1e-2"
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (
            f"methods.{METHOD}.learning_rate: cannot change on resume: the method's checkpoints were made with "
            "the old value" in refused.stderr
        ), refused.stderr
        assert run(["sacct", "-X", "-n", "-P", "-o", "JobID"], env) == jobs_before
        assert snapshot(exp) == before
        # A change every check allows but Slurm refuses (no such partition): sbatch says so, nothing is left changed.
        refused = cyberft(
            "resume", str(exp), f"methods.{METHOD}.resources.time_min={LONGER}", "profile.partition=nosuch"
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Invalid partition name" in refused.stderr, refused.stderr
        assert "nothing was sent, the experiment is unchanged" in refused.stderr, refused.stderr
        assert run(["sacct", "-X", "-n", "-P", "-o", "JobID"], env) == jobs_before
        assert snapshot(exp) == before

        # 3. The longer limit: the job is sent again, finishes, and the new evaluation scores it.
        res = cyberft("resume", str(exp), f"methods.{METHOD}.resources.time_min={LONGER}")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"change methods.{METHOD}.resources.time_min: 1 -> {LONGER}" in res.stdout, res.stdout
        new = dict(re.findall(r"^  (\S+)\s+job (\d+)$", res.stdout, re.M))
        assert set(new) == {METHOD, "eval"} and new[METHOD] != first, res.stdout
        ended = waited("the resumed job and its evaluation", 1500)
        assert ended.returncode == 0, ended.stdout + ended.stderr

        assert sacct(new[METHOD]) == [f"COMPLETED|00:{LONGER}:00"]
        assert sacct(new["eval"])[-1].startswith("COMPLETED|")
        resumed_log = "".join(p.read_text(errors="replace") for p in (exp / "jobs" / new[METHOD]).glob("*_0_log.*"))
        if saved:  # from its newest complete checkpoint, not from the start
            resumed_at = re.findall(r"resumed from \S+ \(step (\d+)/", resumed_log)
            assert resumed_at == [str(int(saved[-1].split("-")[1]))], resumed_log[-3000:]
        metrics = json.loads((exp / "methods" / METHOD / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["steps"] == STEPS, metrics
        row = next(r for r in json.loads((exp / "summary.json").read_text())["rows"] if r["method"] == METHOD)
        assert row["status"] == "completed" and row["accuracy"] is not None, row
        assert row["job_id"] == new[METHOD] and row["attempts"] >= 2, row

        manifest = json.loads((exp / "manifest.json").read_text())
        assert manifest["jobs"][METHOD]["job_id"] == new[METHOD]
        assert manifest["jobs"][METHOD]["previous_job_ids"] == [first]
        (entry,) = manifest["resumed"]
        assert entry["jobs"] == new
        assert entry["changed"] == {f"methods.{METHOD}.resources.time_min": {"from": 1, "to": LONGER}}
        frozen = yaml.safe_load((exp / "config.yaml").read_text())
        (sft,) = frozen["methods"]
        assert sft["resources"]["time_min"] == LONGER and sft["learning_rate"] == 1e-3  # the refused value never landed
    finally:
        stop_cluster(base, remove=True)
