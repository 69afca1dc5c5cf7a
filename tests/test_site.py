"""Sites configured unlike the dev cluster, against fake Slurm commands (the real cluster: test_site_slurm.py).

A submission Slurm refuses leaves nothing that looks like an experiment (or one that ``status`` and
``resume`` report as refused), typed GRES are requested from the profile's ``gpu_type``, interpreter
and output paths are checked as written, and queued jobs read only the frozen experiment.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from launch import cli
from launch.jobs import TrainJob
from launch.run import status, submit
from launch.run.slurm import parse_sacct
from launch.spec.config import load_config
from launch.store.expdir import ExperimentDir
from launch.store.fsio import read_json
from support.fake_slurm import install_fake_slurm, write_profile

REPO = Path(__file__).resolve().parents[1]
SMOKE = load_config(str(REPO / "configs" / "smoke.yaml"))
EVAL_ID = 5001 + len(SMOKE.methods)
"""The fake sbatch numbers jobs from 5001 in submission order: the smoke study's methods, then the evaluation."""
REFUSAL = "sbatch: error: Batch job submission failed: Invalid partition name specified"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return install_fake_slurm(tmp_path, monkeypatch)


def _submit(tiny_model: Path, out: Path, profile: str | Path = "dev", *overrides: str) -> int:
    return cli.main(
        [
            "submit",
            "configs/smoke.yaml",
            "--profile",
            str(profile),
            f"model.name_or_path={tiny_model}",
            f"output_dir={out}",
            *overrides,
        ]
    )


def test_a_refused_first_job_leaves_no_experiment_exits_2_and_says_it_once(
    fake_slurm, tmp_path, tiny_model, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", "5001")
    monkeypatch.setenv("FAKE_SBATCH_MESSAGE", REFUSAL)
    out = tmp_path / "new" / "runs"  # made for this experiment: removed with it
    assert _submit(tiny_model, out) == 2
    err = capsys.readouterr().err
    assert err.count("Invalid partition name specified") == 1, err
    assert "sbatch refused job full_sft" in err and "no experiment was created ->" in err
    assert not (tmp_path / "new").exists()
    assert not (fake_slurm / "scancel").exists()


def test_a_refused_later_job_is_reported_by_status_and_resume(fake_slurm, tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", str(EVAL_ID))  # the evaluation job
    out = tmp_path / "runs"
    assert _submit(tiny_model, out) == 1
    err = capsys.readouterr().err
    sent = [str(n) for n in range(5001, EVAL_ID)]
    assert err.count("Invalid qos specification") == 1 and ", ".join(sent) in err
    (exp,) = out.iterdir()
    assert (fake_slurm / "scancel").read_text().split() == sent
    assert cli.main(["status", str(exp)]) == 1
    assert "never fully submitted" in capsys.readouterr().err
    assert cli.main(["resume", str(exp), "--dry-run"]) == 2
    assert "never fully submitted" in capsys.readouterr().err


def test_typed_gpus_are_requested_by_the_profiles_gpu_type(fake_slurm, tmp_path, tiny_model):
    profile = write_profile(tmp_path, gpu_type="a100", typed_gpus=True)
    assert _submit(tiny_model, tmp_path / "runs", profile) == 0
    gpus = [m.resources.gpus_per_node for m in SMOKE.methods] + [SMOKE.eval.resources.gpus_per_node]
    scripts = [(fake_slurm / f"script-{n}.sh").read_text() for n in range(5001, EVAL_ID + 1)]
    assert 0 in gpus and len(set(gpus) - {0}) == 1  # CPU jobs too (few-shot): they request no GPU
    for script, n in zip(scripts, gpus, strict=True):
        assert ("#SBATCH --gpus-per-node=a100:1\n" in script) == (n == 1), script
        assert "--gpus-per-node" in script or n == 0
    assert not any("--gres" in s for s in scripts)


def test_gres_in_additional_parameters_is_refused_with_the_typed_gpu_fix(tmp_path, tiny_model, capsys):
    profile = write_profile(tmp_path, additional_parameters={"gres": "gpu:a100:2"})
    assert _submit(tiny_model, tmp_path / "runs", profile, "--dry-run") == 2
    out = capsys.readouterr().out
    assert "additional_parameters.gres: the launcher sets this option itself -> use resources.gpus_per_node" in out
    assert "typed_gpus: true" in out


def test_sacct_counts_typed_gres_once():
    line = "7|COMPLETED|3600|billing=1,cpu=1,gres/gpu:a100=2,gres/gpu=2,mem=1G,node=1|s|s|e|n1|0:0|None\n"
    assert parse_sacct(line)["7"].gpu_hours == 2.0
    typed_only = line.replace("gres/gpu=2,", "")
    assert parse_sacct(typed_only)["7"].gpu_hours == 2.0  # a site accounting only the typed entry


@pytest.fixture
def venv_on_shared(tmp_path):
    """A venv's bin/python under /scratch-like shared storage, linking to a base Python outside it."""
    shared = tmp_path / "scratch"
    bin_dir = shared / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    return shared


def test_a_venv_under_shared_dirs_is_accepted_though_its_python_links_outside(
    fake_slurm, tmp_path, tiny_model, venv_on_shared
):
    model = venv_on_shared / "model"
    shutil.copytree(tiny_model, model)
    profile = write_profile(tmp_path, shared_dirs=[str(venv_on_shared)], python=str(venv_on_shared / "venv/bin/python"))
    result = submit.check(
        "configs/smoke.yaml", [f"model.name_or_path={model}", f"output_dir={venv_on_shared / 'runs'}"], str(profile)
    )
    assert result.problems == []


def test_paths_outside_shared_dirs_name_where_they_resolve(fake_slurm, tmp_path, tiny_model, venv_on_shared):
    local = tmp_path / "node-local"
    local.mkdir()
    (venv_on_shared / "runs").symlink_to(local)  # looks shared, is not
    profile = write_profile(tmp_path, shared_dirs=[str(venv_on_shared)], python=sys.executable)
    result = submit.check(
        "configs/smoke.yaml",
        [f"model.name_or_path={tiny_model}", f"output_dir={venv_on_shared / 'runs'}"],
        str(profile),
    )
    text = "\n".join(result.problems)
    assert f"output_dir: '{venv_on_shared / 'runs'}' is under {venv_on_shared} but resolves to '{local}'" in text
    line = next(x for x in result.problems if x.startswith("python:"))
    assert f"python: '{sys.executable}' (the interpreter the jobs would run" in line
    assert "is not under the shared directories" in line and "create the venv on shared storage" in line
    assert "model.name_or_path:" in text
    assert "data.train.path" not in text  # the data is copied into the experiment: it need not be shared


def test_jobs_load_the_frozen_experiment_after_the_original_data_moved(fake_slurm, tmp_path, tiny_model, monkeypatch):
    data = tmp_path / "cyber_mcq.json"
    shutil.copyfile(REPO / "data/sample/cyber_mcq.json", data)
    ds = tmp_path / "my-zero2.json"
    shutil.copyfile(REPO / "ds_configs/zero2.json", ds)
    out = tmp_path / "runs"
    assert (
        _submit(
            tiny_model,
            out,
            "dev",
            f"data.train.path={data}",
            f"methods.full_sft.deepspeed={ds}",
            "methods.lora.max_steps=2",
            "data.max_train=16",
            "tracking.backend=none",
        )
        == 0
    )
    (exp,) = out.iterdir()
    data.rename(tmp_path / "moved.json")
    ds.unlink()
    cfg = ExperimentDir(exp).load_config()  # what TrainJob/EvalJob and `cyberft resume` do first
    assert cfg.data.train.path == str(data)  # recorded, but no longer needed
    assert Path(cfg.method("full_sft").deepspeed).is_file() and str(exp / "code") in cfg.method("full_sft").deepspeed
    ids = {n: r["job_id"] for n, r in read_json(exp / "manifest.json")["jobs"].items()}
    monkeypatch.setattr(
        status,
        "job_statuses",
        lambda e: [
            status.JobStatus(n, i, "CANCELLED" if n == "lora" else "COMPLETED", ended=True, ok=n != "lora")
            for n, i in ids.items()
        ],
    )
    assert cli.main(["resume", str(exp)]) == 0  # resubmits lora and a new evaluation from the frozen files
    assert (fake_slurm / "count").read_text().strip() == str(EVAL_ID + 2)  # + lora and a new evaluation
    import torch

    threads = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"):  # the job sets them: restored after
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    try:
        TrainJob(exp, "lora", threads=1)()  # and the job itself trains from EXP/data
    finally:
        torch.set_num_threads(threads)
    assert read_json(exp / "methods" / "lora" / "metrics.json")["status"] == "completed"


def test_dry_run_refuses_data_that_submit_would_refuse(tmp_path, tiny_model, capsys):
    data = tmp_path / "one.json"
    data.write_text(
        '{"questions": [{"question": "q", "answers": {"A": "a", "B": "b", "C": "c", "D": "d"}, "solution": "A"}]}'
    )
    out = tmp_path / "runs"
    assert _submit(tiny_model, out, "dev", f"data.train.path={data}", "--dry-run") == 2
    text = capsys.readouterr().out
    assert "data: " in text and "cannot split 1 question" in text and "submit would refuse this plan" in text
    assert not out.exists()


def test_validate_and_run_check_the_data_too(tmp_path, tiny_model, capsys):
    data = tmp_path / "one.json"
    data.write_text('{"questions": []}')
    for command in ("validate", "run"):
        rc = cli.main(
            [
                command,
                "configs/smoke.yaml",
                f"model.name_or_path={tiny_model}",
                f"output_dir={tmp_path / 'runs'}",
                f"data.train.path={data}",
            ]
        )
        assert rc == 2 and "contains 0 questions" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_output_dir_under_proc_is_refused(tmp_path, tiny_model, capsys):
    rc = cli.main(["validate", "configs/smoke.yaml", f"model.name_or_path={tiny_model}", "output_dir=/proc/self/runs"])
    assert rc == 2 and "output_dir: '/proc/self/runs' is under /proc, a kernel file system" in capsys.readouterr().err


def test_manifest_of_a_refused_submission_holds_slurms_message(fake_slurm, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", "5002")
    out = tmp_path / "runs"
    assert _submit(tiny_model, out) == 1
    (exp,) = out.iterdir()
    manifest = read_json(exp / "manifest.json")
    assert "Invalid qos specification" in manifest["submit_error"] and manifest["cancelled"] == ["5001"]
    assert os.listdir(out) == [exp.name]
