"""``cyberft resume EXP key=value``: a job sent again with changed limits (fake Slurm; the real cluster:
tests/test_resume_slurm.py). Only what the jobs ask of the cluster may change; anything else exits 2 and
changes nothing; the manifest records each change, old and new value, and the job script carries it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from launch import cli
from launch.run import resume, status
from launch.spec.config import InputError
from launch.store.expdir import ExperimentDir
from launch.store.fsio import read_json
from support.fake_slurm import install_fake_slurm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def timed_out(tmp_path, monkeypatch, tiny_model):
    """A submitted smoke experiment (fake sbatch) whose lora job timed out and the rest completed."""
    monkeypatch.chdir(REPO)
    state = install_fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "runs"
    argv = ["submit", "configs/smoke.yaml", "--profile", "dev", f"model.name_or_path={tiny_model}", f"output_dir={out}"]
    assert cli.main([*argv, "methods.lora.resources.time_min=30", "methods.lora.resources.max_timeouts=0"]) == 0
    (exp,) = out.iterdir()
    ids = {n: r["job_id"] for n, r in read_json(exp / "manifest.json")["jobs"].items()}

    def statuses(e):
        return [
            status.JobStatus(n, i, "TIMEOUT" if n == "lora" else "COMPLETED", ended=True, ok=n != "lora")
            for n, i in ids.items()
        ]

    monkeypatch.setattr(status, "job_statuses", statuses)
    return ExperimentDir(exp), state


def _digest(exp: ExperimentDir) -> dict[str, str]:
    files = [exp.config_file, exp.profile_file, exp.manifest_file]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_a_longer_time_limit_is_written_recorded_and_asked_of_slurm(timed_out, capsys):
    exp, state = timed_out
    before = int((state / "count").read_text())
    assert cli.main(["resume", str(exp.root), "methods.1.resources.time_min=90", "profile.qos=long"]) == 0
    out = capsys.readouterr().out
    assert "resubmit lora" in out, out
    assert "change methods.lora.resources.time_min: 30 -> 90" in out  # an index is named by its method
    assert "change profile.qos: null -> 'long'" in out
    assert int((state / "count").read_text()) == before + 2  # lora and a new evaluation
    lora_script = (state / f"script-{before + 1}.sh").read_text()
    assert re.search(r"^#SBATCH --time=90$", lora_script, re.M), lora_script
    assert re.search(r"^#SBATCH --qos=long$", lora_script, re.M), lora_script
    assert exp.load_config().method("lora").resources.time_min == 90  # every later job and requeue reads it
    assert exp.load_profile().qos == "long"
    (entry,) = read_json(exp.manifest_file)["resumed"]
    assert entry["changed"] == {
        "methods.lora.resources.time_min": {"from": 30, "to": 90},
        "profile.qos": {"from": None, "to": "long"},
    }


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("methods.lora.learning_rate=1e-3", "methods.lora.learning_rate: cannot change on resume: the method's"),
        ("methods.lora.resources.gpus_per_node=2", "the checkpoints were saved by that many processes"),
        ("model.name_or_path=/elsewhere", "model.name_or_path: cannot change on resume: every checkpoint"),
        ("eval.mode=generate", "eval.mode: cannot change on resume: the models already scored"),
        ("profile.gpu_type=h100", "profile.gpu_type: cannot change on resume: the cost table would mix"),
        ("methods.nosuch.resources.time_min=9", "no method 'nosuch' in this experiment -> one of full_sft, lora"),
        ("methods.lora.resources.time_min=500", "time_min: 500 min, but partition 'debug' of 'dev' allows 120"),
        ("methods.lora.resources.time_min=soon", "methods[1] (lora).resources.time_min: expected an integer"),
    ],
)
def test_a_change_resume_cannot_make_exits_2_and_changes_nothing(timed_out, capsys, override, says):
    exp, state = timed_out
    before, files = (state / "count").read_text(), _digest(exp)
    assert cli.main(["resume", str(exp.root), override]) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert (state / "count").read_text() == before and _digest(exp) == files  # nothing sent, nothing written


def test_every_refusal_is_listed_at_once_with_what_may_change(timed_out):
    exp, _ = timed_out
    with pytest.raises(InputError) as caught:
        resume.plan_changes(exp, ["seed=3", "data.max_train=8", "eval.resources.time_min=20"])
    problems = caught.value.problems
    assert len(problems) == 2 and problems[0].startswith("seed: cannot change on resume")
    assert "resume may change methods.<name>.resources.{time_min,max_timeouts," in problems[1]
    assert "profile.{partition,account,qos," in problems[1]


def test_a_dry_run_shows_the_changes_and_writes_nothing(timed_out, capsys):
    exp, state = timed_out
    before, files = (state / "count").read_text(), _digest(exp)
    assert cli.main(["resume", str(exp.root), "eval.batch_size=4", "lora", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "resubmit lora" in out and "change eval.batch_size: 32 -> 4" in out
    assert (state / "count").read_text() == before and _digest(exp) == files


def test_a_value_equal_to_the_experiments_changes_nothing(timed_out, capsys):
    exp, _ = timed_out
    assert cli.main(["resume", str(exp.root), "methods.lora.resources.time_min=30"]) == 0
    assert "change nothing: every value given is the experiment's already" in capsys.readouterr().out
    (entry,) = read_json(exp.manifest_file)["resumed"]
    assert "changed" not in entry


def test_a_change_sbatch_refuses_exits_2_and_leaves_the_experiment_as_it_was(timed_out, capsys, monkeypatch):
    """A partition Slurm does not have passes every check resume can make; sbatch refuses the first job.
    Then nothing was sent: config.yaml and profile.yaml keep their values (a plain resume later would
    otherwise ask for the refused partition), and the manifest records nothing."""
    exp, state = timed_out
    before, files = int((state / "count").read_text()), _digest(exp)
    mtimes = [f.stat().st_mtime_ns for f in (exp.config_file, exp.profile_file)]
    listed = sorted(p.name for p in exp.jobs_dir.iterdir())
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", str(before + 1))
    monkeypatch.setenv("FAKE_SBATCH_MESSAGE", "sbatch: error: Batch job submission failed: Invalid partition name")
    assert cli.main(["resume", str(exp.root), "profile.partition=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "sbatch refused job lora: sbatch: error: Batch job submission failed: Invalid partition name" in err, err
    assert "nothing was sent, the experiment is unchanged" in err, err
    assert _digest(exp) == files and exp.load_profile().partition == "debug"
    assert [f.stat().st_mtime_ns for f in (exp.config_file, exp.profile_file)] == mtimes
    assert sorted(p.name for p in exp.jobs_dir.iterdir()) == listed  # no script or pickle of the refused job


def test_a_refusal_after_a_job_was_sent_records_the_job_and_the_change(timed_out, capsys, monkeypatch):
    exp, state = timed_out
    before = int((state / "count").read_text())
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", str(before + 2))  # lora is sent, the evaluation is refused
    assert cli.main(["resume", str(exp.root), "methods.lora.resources.time_min=90"]) == 1
    err = capsys.readouterr().err
    assert "sbatch refused job eval" in err and f"sent before it: lora ({before + 1})" in err, err
    manifest = read_json(exp.manifest_file)
    assert manifest["jobs"]["lora"]["job_id"] == str(before + 1)
    (entry,) = manifest["resumed"]
    assert entry["jobs"] == {"lora": str(before + 1)}
    assert entry["changed"] == {"methods.lora.resources.time_min": {"from": 30, "to": 90}}
    assert exp.load_config().method("lora").resources.time_min == 90  # the job sent reads it
