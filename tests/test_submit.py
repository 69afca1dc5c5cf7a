"""``cyberft submit``: validation of config + profile together, the dry run, and submission
against fake Slurm commands (the real cluster is in tests/test_submit_slurm.py).

The fakes are shell scripts on PATH: ``sbatch`` numbers jobs and records each call, ``scancel``
records what it was asked to cancel, ``srun`` only exists (submitit checks for it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launch import cli
from launch.run import submit
from launch.store.expdir import ExperimentDir
from launch.store.fsio import read_json
from support.cli import cyberft
from support.experiments import SMOKE_METHODS
from support.fake_slurm import install_fake_slurm

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "dryrun_llama3_dev.txt"


def normalise(text: str) -> str:
    """Machine-specific paths replaced, so the golden file holds on any checkout."""
    return text.replace(sys.executable, "<PYTHON>").replace(str(REPO), "<REPO>")


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cyberft(*argv, env=env, timeout=120)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    return install_fake_slurm(tmp_path, monkeypatch)


def test_dry_run_matches_golden_file():
    t0 = time.perf_counter()
    # A fixed, empty Hugging Face cache: the note on downloading the model names it. The study's
    # CyberMetric-10000 is not shipped: the bundled sample stands in, so the cost forecast has tokens to count
    # (estimated from characters: the Llama 3 tokenizer is not on this machine). No calibration runs (conftest).
    res = run_cli(
        "submit",
        "configs/llama3-8b-cybermetric.yaml",
        "--profile",
        "dev",
        "--dry-run",
        "data.train.path=data/sample/cyber_mcq.json",
        env={"HF_HOME": "/nonexistent/hf-home", "HF_HUB_CACHE": ""},
    )
    wall = time.perf_counter() - t0
    print(f"dry run wall time (new interpreter): {wall:.3f} s")
    text = normalise(res.stdout)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "dry run output changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    )
    # Dev's fake nodes are small: exit 2 with every reason.
    assert res.returncode == 2
    for needle in (
        "#SBATCH --partition=debug",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=240",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --nodes=1",
        "--kill-on-bad-exit=1 --gpu-bind=none",
        "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK",
        "--dependency='afterany:<job id of full_sft>:<job id of lora>:<job id of qlora>'",
        "# ---- cost forecast\n  cost forecast: fake, peak 0.085 TFLOP/s per GPU, 2 per GPU-hour;",
        "\n  full_sft  full_sft     8     10",
        "  calibration: no runs recorded for dev yet (cyberft calibration show --profile dev)",
    ):
        assert needle in text
    # Its speed (budget 0.5 s) is measured in bench/bench_cli.py, not asserted: a test must not depend on timing.


def test_dry_run_of_a_valid_plan_exits_0_and_creates_nothing(tmp_path, tiny_model):
    out = tmp_path / "runs"
    res = run_cli(
        "submit",
        "configs/smoke.yaml",
        "--profile",
        "dev",
        "--dry-run",
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "# ---- OK: nothing submitted (dry run)" in res.stdout
    assert res.stdout.count("#!/bin/bash") == len(SMOKE_METHODS) + 1  # every method of the smoke config, and eval
    assert not out.exists()


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            "methods.full_sft.resources.gpus_per_node=4",
            "gpus_per_node: 4 GPUs per node, but a node of profile 'dev' has 2",
        ),
        ("methods.lora.resources.time_min=600", "time_min: 600 min, but partition 'debug' of 'dev' allows 120"),
        ("methods.full_sft.resources.nodes=3", "nodes: 3, but a job on 'dev' may use at most 2 node(s) -> at most 2"),
        ("methods.lora.resources.cpus_per_gpu=3", "cpus_per_gpu: 3 x 1 GPU(s) = 3 CPUs per node"),
        ("eval.resources.mem_gb_per_gpu=64", "eval.resources.mem_gb_per_gpu: 64 GB x 1 GPU(s) = 64 GB per node"),
        ("methods.qlora.resources.nodes=2", "qlora runs on one GPU"),
    ],
)
def test_plan_that_does_not_fit_the_profile_is_refused_before_submission(
    fake_slurm, tmp_path, tiny_model, override, needle
):
    out = tmp_path / "runs"
    res = run_cli(
        "submit",
        "configs/smoke.yaml",
        "--profile",
        "dev",
        f"model.name_or_path={tiny_model}",
        f"output_dir={out}",
        override,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and "nothing was submitted" in res.stderr
    assert "->" in res.stderr  # every problem carries its fix
    assert not (fake_slurm / "count").exists(), "sbatch must not be called"
    assert not out.exists()


def test_shared_dirs_of_the_profile_are_enforced(fake_slurm, tmp_path, tiny_model):
    profile = yaml.safe_load((REPO / "slurm/profiles/dev.yaml").read_text())
    profile.update(name="site", shared_dirs=["/scratch"])
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(profile))
    res = run_cli(
        "submit",
        "configs/smoke.yaml",
        "--profile",
        str(path),
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
    )
    assert res.returncode == 2
    assert (
        "output_dir:" in res.stderr and "is not under the shared directories of profile 'site' (/scratch)" in res.stderr
    )
    assert "model.name_or_path:" in res.stderr and "python:" in res.stderr


def test_config_and_profile_problems_are_reported_together(tmp_path):
    bad_profile = tmp_path / "broken.yaml"
    bad_profile.write_text("partition: gpu\ngpus_per_node: 0\n")
    res = run_cli("submit", "configs/smoke.yaml", "--profile", str(bad_profile), "methods.lora.learning_rate=-1")
    assert res.returncode == 2
    assert "config: methods[1] (lora).learning_rate: -1.0" in res.stderr
    assert "profile: gpus_per_node: 0" in res.stderr


def test_submit_with_fake_sbatch_records_ids_dependency_and_scripts(fake_slurm, tmp_path, tiny_model, capsys):
    out = tmp_path / "runs"
    rc = cli.main(
        ["submit", "configs/smoke.yaml", "--profile", "dev", f"model.name_or_path={tiny_model}", f"output_dir={out}"]
    )
    assert rc == 0
    (exp,) = out.iterdir()
    manifest = read_json(exp / "manifest.json")
    ids = {name: rec["job_id"] for name, rec in manifest["jobs"].items()}
    names = list(SMOKE_METHODS)  # the smoke config names each method as its kind
    eval_id = str(5001 + len(names))
    assert ids == {**{name: str(5001 + i) for i, name in enumerate(names)}, "eval": eval_id}
    assert manifest["executor"] == "slurm" and manifest["profile"] == "dev"
    assert manifest["jobs"]["eval"]["depends_on"] == names
    # Everything the jobs need is in the experiment: config, profile, data, frozen code.
    for rel in (
        "config.yaml",
        "profile.yaml",
        "data/train.jsonl",
        "data/eval.jsonl",
        "data/aux/multi_task/netsys.jsonl",
        "code/launch/jobs.py",
        "code/train/full_sft.py",
        "code/ds_configs/zero3.json",
    ):
        assert (exp / rel).is_file(), rel
    # What sbatch received is exactly what the dry run shows for the same plan and ids.
    result = submit.check("configs/smoke.yaml", [f"model.name_or_path={tiny_model}", f"output_dir={out}"], "dev")
    frozen = ExperimentDir(exp)
    profile = frozen.load_profile()
    specs = submit.plan(frozen.load_config(), profile, frozen)
    for spec in specs:
        sent = (fake_slurm / f"script-{ids[spec.name]}.sh").read_text()
        assert sent == submit.sbatch_script(spec, frozen, submit.job_python(profile), ids)
    eval_script = (fake_slurm / f"script-{eval_id}.sh").read_text()
    assert "#SBATCH --dependency=afterany:" + ":".join(ids[n] for n in names) in eval_script
    assert "#SBATCH --mem=2GB" in (fake_slurm / "script-5001.sh").read_text()
    assert "--gres" not in (fake_slurm / f"script-{ids['few_shot']}.sh").read_text()  # it loads no model
    assert f"export PYTHONPATH={exp}/code" in eval_script
    text = capsys.readouterr().out
    assert f"cyberft status {exp}" in text and f"job {eval_id}" in text
    assert result.problems == []


def test_each_job_is_requeued_on_its_time_limit_as_often_as_its_config_says(fake_slurm, tmp_path, tiny_model):
    """resources.max_timeouts reaches submitit's pickled submission (its timeout countdown)."""
    from submitit.core.utils import DelayedSubmission

    out = tmp_path / "runs"
    rc = cli.main(
        [
            "submit",
            "configs/smoke.yaml",
            "--profile",
            "dev",
            f"model.name_or_path={tiny_model}",
            f"output_dir={out}",
            "methods.lora.resources.max_timeouts=9",
            "eval.resources.max_timeouts=0",
        ]
    )
    assert rc == 0
    (exp,) = out.iterdir()
    ids = {name: rec["job_id"] for name, rec in read_json(exp / "manifest.json")["jobs"].items()}
    countdown = {
        name: DelayedSubmission.load(exp / "jobs" / i / f"{i}_submitted.pkl")._timeout_countdown
        for name, i in ids.items()
    }
    assert countdown == {**{name: 3 for name in SMOKE_METHODS}, "lora": 9, "eval": 0}


def test_a_refused_sbatch_cancels_the_jobs_already_submitted(fake_slurm, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", "5003")
    out = tmp_path / "runs"
    rc = cli.main(
        ["submit", "configs/smoke.yaml", "--profile", "dev", f"model.name_or_path={tiny_model}", f"output_dir={out}"]
    )
    assert rc == 1
    (exp,) = out.iterdir()
    manifest = read_json(exp / "manifest.json")
    assert {n: r["job_id"] for n, r in manifest["jobs"].items()} == {"full_sft": "5001", "lora": "5002"}
    assert "Invalid qos" in manifest["submit_error"]
    assert (fake_slurm / "scancel").read_text().split() == ["5001", "5002"]


def test_distributed_method_gets_one_task_per_gpu_and_kill_on_bad_exit(tmp_path, tiny_model):
    result = submit.check(
        "configs/smoke.yaml",
        [
            f"model.name_or_path={tiny_model}",
            "methods.full_sft.resources.nodes=2",
            "methods.full_sft.resources.gpus_per_node=2",
        ],
        "dev",
    )
    assert result.problems == []
    specs = {s.name: s for s in submit.plan(result.cfg, result.profile, ExperimentDir(tmp_path))}
    sft = specs["full_sft"]
    assert (sft.world_size, sft.params["nodes"], sft.params["ntasks_per_node"], sft.params["gpus_per_node"]) == (
        4,
        2,
        2,
        2,
    )
    assert sft.params["srun_args"] == ["--kill-on-bad-exit=1", "--gpu-bind=none"]
    assert specs["lora"].params["ntasks_per_node"] == 1 and "srun_args" not in specs["lora"].params


def test_master_port_is_stable_per_job_and_in_range():
    from launch.jobs import master_port

    assert master_port("22601001") == master_port("22601001")
    assert all(20000 <= master_port(str(j)) < 32768 for j in (0, 1, 39999, 40000, 22601001))
    assert master_port("100") != master_port("101")


def _site_profile(tmp_path: Path, **changes) -> Path:
    profile = yaml.safe_load((REPO / "slurm/profiles/example-a100.yaml").read_text())
    profile.update(name="site", shared_dirs=[], **changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_8b_plan_fits_80gb_gpus_and_dry_run_shows_memory_per_method(tmp_path):
    data = "data.train.path=data/sample/cyber_mcq.json"
    res = run_cli(
        "submit", "configs/llama3-8b-cybermetric.yaml", "--profile", str(_site_profile(tmp_path)), "--dry-run", data
    )
    assert res.returncode == 0, res.stdout[-3000:]
    memory = res.stdout[
        res.stdout.index("# ---- estimated memory per GPU") : res.stdout.index("# ---- jobs and dependencies")
    ]
    for name in ("full_sft", "lora", "qlora"):
        assert re.search(rf"^  {name}: [\d.]+ GB/GPU \(weights", memory, re.M), memory
    assert "on 8 GPUs, ZeRO-2" in memory


def test_plan_that_will_not_fit_gpu_memory_is_refused_with_what_would_fit(tmp_path, fake_slurm):
    data = "data.train.path=data/sample/cyber_mcq.json"
    profile = _site_profile(tmp_path, gpu_mem_gb=24)
    # Full SFT of 8B with ZeRO-3 on 2 GPUs still does not fit 24 GB GPUs; LoRA on one does not either.
    res = run_cli(
        "submit",
        "configs/llama3-8b-cybermetric.yaml",
        "--profile",
        str(profile),
        data,
        "methods.full_sft.resources.nodes=1",
        "methods.full_sft.resources.gpus_per_node=2",
        "methods.full_sft.deepspeed=ds_configs/zero3.json",
        "output_dir=" + str(tmp_path / "runs"),
    )
    assert res.returncode == 2, res.stdout + res.stderr
    line = next(
        x for x in res.stderr.splitlines() if "methods[0] (full_sft).resources: does not fit in GPU memory" in x
    )
    assert "on 2 GPUs, ZeRO-3" in line and "-> would fit:" in line
    assert any(fix in line for fix in ("zero3_offload.json", "more GPUs", "kind: qlora"))
    assert "methods[1] (lora).resources: does not fit in GPU memory" in res.stderr
    assert not (fake_slurm / "count").exists() and not (tmp_path / "runs").exists()


def test_resume_of_a_local_experiment_is_refused_with_the_fix(tmp_path):
    exp = tmp_path / "smoke-20260101-000000"
    exp.mkdir()
    (exp / "manifest.json").write_text('{"executor": "local", "jobs": {}}')
    res = run_cli("resume", str(exp))
    assert res.returncode == 2
    assert "ran locally -> `cyberft run` the config again" in res.stderr


@pytest.mark.parametrize(
    "states, resubmit, waiting, cancel_eval, eval_needed",
    [
        # (state, ended, ok) per job: full_sft, lora, eval
        (
            {
                "full_sft": ("COMPLETED", True, True),
                "lora": ("CANCELLED", True, False),
                "eval": ("COMPLETED", True, True),
            },
            ["lora"],
            [],
            [],
            True,
        ),
        (
            {
                "full_sft": ("RUNNING", False, False),
                "lora": ("TIMEOUT", True, False),
                "eval": ("PENDING", False, False),
            },
            ["lora"],
            ["full_sft"],
            ["9003"],
            True,
        ),
        (
            {"full_sft": ("COMPLETED", True, True), "lora": ("COMPLETED", True, True), "eval": ("FAILED", True, False)},
            [],
            [],
            [],
            True,
        ),
        (
            {
                "full_sft": ("COMPLETED", True, True),
                "lora": ("COMPLETED", True, True),
                "eval": ("COMPLETED", True, True),
            },
            [],
            [],
            [],
            False,
        ),
        (
            {
                "full_sft": ("RUNNING", False, False),
                "lora": ("COMPLETED", True, True),
                "eval": ("PENDING", False, False),
            },
            [],
            ["full_sft"],
            [],
            False,
        ),  # the pending evaluation already waits for what is left
    ],
)
def test_resume_plan_sends_only_what_ended_unfinished(
    tmp_path, monkeypatch, states, resubmit, waiting, cancel_eval, eval_needed
):
    from launch.run import resume, status

    (tmp_path / "manifest.json").write_text('{"executor": "slurm", "jobs": {}}')
    ids = {"full_sft": "9001", "lora": "9002", "eval": "9003"}
    fake = [status.JobStatus(n, ids[n], st, ended=ended, ok=ok) for n, (st, ended, ok) in states.items()]
    monkeypatch.setattr(status, "job_statuses", lambda exp: fake)
    plan = resume.plan_resume(ExperimentDir(tmp_path))
    assert (plan.resubmit, plan.waiting_on, plan.cancel_eval, plan.eval_needed) == (
        resubmit,
        waiting,
        cancel_eval,
        eval_needed,
    )


def test_resume_waits_for_a_running_evaluation(tmp_path, monkeypatch):
    from launch.run import resume, status
    from launch.spec.config import InputError

    (tmp_path / "manifest.json").write_text('{"executor": "slurm", "jobs": {}}')
    monkeypatch.setattr(
        status,
        "job_statuses",
        lambda exp: [status.JobStatus("lora", "1", "FAILED", ended=True), status.JobStatus("eval", "2", "RUNNING")],
    )
    with pytest.raises(InputError, match=r"eval: job 2 is RUNNING -> wait until it ends"):
        resume.plan_resume(ExperimentDir(tmp_path))
