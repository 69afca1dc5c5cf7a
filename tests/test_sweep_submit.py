"""A sweep on Slurm without a cluster: one array per method, the evaluation after them, status,
logs, cancel and resume by cell, against fake Slurm commands (the real cluster: test_sweep_slurm.py).

Slurm's own output in the fakes (``squeue -r``, ``sacct``'s ``JobID`` of array tasks, their
collapsed pending form) is what Slurm 22.05 printed on the dev cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from launch import cli
from launch.run import resume, slurm, status, submit
from launch.store.expdir import ExperimentDir
from support.experiments import classic_smoke
from support.fake_slurm import install_fake_slurm

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["sweep.seeds=[0, 1, 2]", "sweep.grid.methods.lora.learning_rate=[1.0e-3, 2.0e-3]", "sweep.max_parallel=2"]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    return install_fake_slurm(tmp_path, monkeypatch)


def _argv(tmp_path: Path, tiny_model: Path) -> list[str]:
    """``cyberft submit`` of the smoke study's full_sft, lora and qlora to the dev profile, into ``tmp_path/runs``."""
    config = str(classic_smoke(tmp_path))
    return ["submit", config, "--profile", "dev", f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'runs'}"]


def _submit(tmp_path: Path, tiny_model: Path, *overrides: str) -> ExperimentDir:
    out = tmp_path / "runs"
    assert cli.main([*_argv(tmp_path, tiny_model), *overrides]) == 0
    (exp,) = out.iterdir()
    return ExperimentDir(exp)


def _ids(exp: ExperimentDir) -> dict[str, str]:
    return {name: rec.job_id for name, rec in exp.read_manifest().jobs.items()}


def _sbatch_calls(fake: Path) -> int:
    return int((fake / "count").read_text()) - 5000


def test_a_sweep_is_one_sbatch_per_method_and_one_for_the_evaluation(fake_slurm, tmp_path, tiny_model, capsys):
    exp = _submit(tmp_path, tiny_model, *SWEEP)
    assert _sbatch_calls(fake_slurm) == 4
    ids = _ids(exp)
    assert ids == {
        **{f"full_sft[{i}]": f"5001_{i}" for i in range(3)},
        **{f"lora[{i}]": f"5002_{i}" for i in range(6)},
        **{f"qlora[{i}]": f"5003_{i}" for i in range(3)},
        "eval": "5004",
    }
    scripts = {i: (fake_slurm / f"script-{i}.sh").read_text() for i in range(5001, 5005)}
    assert "#SBATCH --array=0-5%2" in scripts[5002] and "#SBATCH --array=0-2%2" in scripts[5001]
    assert "#SBATCH --dependency=afterany:5001:5002:5003" in scripts[5004] and "--array" not in scripts[5004]
    # Each task runs its own cell: the pickle of task 3 trains lora[3], whatever the task ids.
    pickled = DelayedSubmission.load(exp.jobs_dir / "5002_3" / "5002_3_submitted.pkl")
    assert repr(pickled.function) == f"TrainJob({str(exp.root)!r}, 'lora[3]')"
    assert pickled._timeout_countdown == 3  # each task counts its own time-outs (resources.max_timeouts)
    # What sbatch received is what the dry run shows for the same plan and ids.
    profile = exp.load_profile()
    specs = submit.plan(exp.load_config(), profile, exp)
    assert [(s.name, len(s.tasks)) for s in specs] == [("full_sft", 3), ("lora", 6), ("qlora", 3), ("eval", 1)]
    deps = {"full_sft": "5001", "lora": "5002", "qlora": "5003", "eval": "5004"}
    for spec, number in zip(specs, range(5001, 5005)):
        assert scripts[number] == submit.sbatch_script(spec, exp, submit.job_python(profile), deps)
    out = capsys.readouterr().out
    assert "lora         array 5002 (6 tasks: 5002_0..5002_5)" in out
    assert "submitted 13 job(s) in 4 sbatch call(s)" in out


def test_a_method_with_one_cell_is_a_plain_job(fake_slurm, tmp_path, tiny_model):
    exp = _submit(tmp_path, tiny_model, "sweep.grid.methods.lora.learning_rate=[1.0e-3, 2.0e-3]")
    ids = _ids(exp)
    assert (ids["full_sft[0]"], ids["lora[0]"], ids["lora[1]"], ids["qlora[0]"], ids["eval"]) == (
        "5001",
        "5002_0",
        "5002_1",
        "5003",
        "5004",
    )
    assert "--array" not in (fake_slurm / "script-5001.sh").read_text()
    assert (exp.jobs_dir / "5001" / "5001_submitted.pkl").is_file()


def test_many_models_make_the_scoring_an_array_before_the_report(fake_slurm, tmp_path, tiny_model):
    exp = _submit(tmp_path, tiny_model, *SWEEP, "eval.models_per_job=5")  # 12 cells + base = 13 models
    ids = _ids(exp)
    assert [ids[f"eval[{i}]"] for i in range(3)] == ["5004_0", "5004_1", "5004_2"] and ids["eval"] == "5005"
    shard = (fake_slurm / "script-5004.sh").read_text()
    assert "#SBATCH --array=0-2%3" in shard and "#SBATCH --dependency=afterany:5001:5002:5003" in shard
    assert "#SBATCH --dependency=afterany:5004\n" in (fake_slurm / "script-5005.sh").read_text()
    shares = [DelayedSubmission.load(exp.jobs_dir / f"5004_{i}" / f"5004_{i}_submitted.pkl").function for i in range(3)]
    assert [s.shard for s in shares] == [(0, 3), (1, 3), (2, 3)]
    assert DelayedSubmission.load(exp.jobs_dir / "5005" / "5005_submitted.pkl").function.shard is None
    assert exp.read_manifest().training_jobs().keys() == {k for k in ids if not k.startswith("eval")}


def test_the_shares_of_the_scoring_cover_every_model_once(tmp_path):
    from support.experiments import new_experiment
    from train.evaluate import models_to_score

    cfg, exp = new_experiment([f"output_dir={tmp_path}", *SWEEP])
    for name in ("full_sft[0]", "lora[4]", "qlora[2]"):  # only these trained
        exp.method(name).write_metrics(exp.method(name).read_metrics().__class__(name, status="completed"))
    shares = [models_to_score(cfg, exp, (i, 3)) for i in range(3)]
    assert sorted(sum(shares, [])) == sorted(["base", "full_sft[0]", "lora[4]", "qlora[2]"])
    assert models_to_score(cfg, exp) == ["base", "full_sft[0]", "lora[4]", "qlora[2]"]


def test_dry_run_and_validate_show_the_cells(tmp_path, tiny_model):
    argv = ["configs/smoke-sweep.yaml", f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}"]
    res = cli_output(["submit", *argv, "--profile", "dev", "--dry-run"])
    assert res[0] == 0, res[2]
    text = res[1]
    assert "# ---- sweep\nsweep: 9 cells in 3 submissions (at most 4 running per method)\n  full_sft: 3 seeds" in text
    assert "  lora         [lora] array of 3 (lora[0-2], at most 3 at once), each 1 node(s) x 1 GPU(s)" in text
    assert text.count("#SBATCH --array=0-2%3") == 3
    rc, out, err = cli_output(["validate", *argv])
    assert rc == 0, err
    head = "# sweep: 9 cells in 3 submissions (at most 4 running per method)\n"
    assert head + "#   full_sft: 3 seeds = 3 cells\n#   lora: 3 seeds = 3 cells" in out


def cli_output(argv: list[str]) -> tuple[int, str, str]:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return res.returncode, res.stdout, res.stderr


def test_a_bad_sweep_is_refused_before_anything_is_submitted(fake_slurm, tmp_path, tiny_model, capsys):
    out = tmp_path / "runs"
    rc = cli.main([*_argv(tmp_path, tiny_model), "sweep.grid.methods.lora.lerning_rate=[1e-3]", "sweep.seeds=[1, 1]"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "sweep.grid.methods.lora.lerning_rate: no field 'lerning_rate' in MethodConfig -> did you mean" in err
    assert "sweep.seeds: 1 is listed 2 times -> list each seed once" in err
    assert not (fake_slurm / "count").exists() and not out.exists()


# --------------------------------------------------------------------------- following cells

FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/squeue-calls"
cat "$FAKE_SLURM/squeue.out"
"""
FAKE_SACCT = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/sacct-calls"
cat "$FAKE_SLURM/sacct.out"
"""


def _fake_queries(fake: Path, squeue_out: str, sacct_out: str) -> None:
    bin_dir = Path(os.environ["PATH"].split(":")[0])
    for name, text in (("squeue", FAKE_SQUEUE), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (fake / "squeue.out").write_text(squeue_out)
    (fake / "sacct.out").write_text(sacct_out)


def test_status_of_every_cell_is_one_squeue_and_one_sacct_call(fake_slurm, tmp_path, tiny_model, capsys):
    exp = _submit(tmp_path, tiny_model, *SWEEP)
    capsys.readouterr()
    # squeue -r: lora's tasks 4 and 5 wait for the %2 limit, 2 and 3 run; the evaluation waits.
    squeue_out = (
        "".join(
            f"5002_{i}|{s}|{t}|{n}|{r}\n"
            for i, s, t, n, r in (
                (2, "RUNNING", "0:05", "vm", "None"),
                (3, "RUNNING", "0:04", "vm", "None"),
                (4, "PENDING", "0:00", "", "JobArrayTaskLimit"),
                (5, "PENDING", "0:00", "", "JobArrayTaskLimit"),
            )
        )
        + "5004|PENDING|0:00||Dependency\n"
    )
    tres = "billing=1,cpu=1,gres/gpu=1,mem=2G,node=1"
    times = "2026-11-30T23:03:27|2026-11-30T23:03:27|2026-11-30T23:03:40|vm"
    sacct_out = "".join(
        [
            *(f"5001_{i}|COMPLETED|13|{tres}|{times}|0:0|None\n" for i in range(3)),
            f"5002_0|COMPLETED|13|{tres}|{times}|0:0|None\n",
            f"5002_1|FAILED|5|{tres}|{times}|1:0|NonZeroExitCode\n",
            f"5003_0|COMPLETED|13|{tres}|{times}|0:0|None\n",
            "5003_[1-2]|CANCELLED by 0|0||2026-11-30T23:03:27|Unknown|Unknown|None|0:0|None\n",
        ]
    )
    _fake_queries(fake_slurm, squeue_out, sacct_out)
    for name in ("full_sft[0]", "full_sft[1]", "full_sft[2]", "lora[0]", "qlora[0]"):
        exp.method(name).write_metrics(exp.method(name).read_metrics().__class__(name, status="completed", steps=3))
    statuses = {s.name: s for s in status.job_statuses(exp)}
    assert len((fake_slurm / "squeue-calls").read_text().splitlines()) == 1
    assert len((fake_slurm / "sacct-calls").read_text().splitlines()) == 1
    assert "-j 5001,5002,5003,5004" in (fake_slurm / "squeue-calls").read_text()
    states = {n: (s.state, s.ended, s.ok) for n, s in statuses.items()}
    assert states["lora[2]"] == ("RUNNING", False, False) and states["lora[5]"] == ("PENDING", False, False)
    assert states["lora[1]"] == ("FAILED", True, False) and states["full_sft[2]"] == ("COMPLETED", True, True)
    assert states["qlora[1]"] == states["qlora[2]"] == ("CANCELLED", True, False)
    assert statuses["lora[5]"].detail == "waiting: JobArrayTaskLimit"
    # The address filter: a method names its cells, a cell itself.
    assert cli.main(["status", str(exp), "lora[1]", "qlora"]) == 1  # all ended, not all completed
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert shown == ["lora[1]", "qlora[0]", "qlora[1]", "qlora[2]"]
    assert cli.main(["status", str(exp), "lora[9]"]) == 2
    err = capsys.readouterr().err
    assert "no job 'lora[9]'" in err and "a method, a cell or eval: full_sft[0-2], lora[0-5], qlora[0-2], eval" in err


def test_cancel_and_logs_take_a_cell_or_a_method(fake_slurm, tmp_path, tiny_model, capsys):
    exp = _submit(tmp_path, tiny_model, *SWEEP)
    assert cli.main(["cancel", str(exp), "lora[3]"]) == 0
    assert cli.main(["cancel", str(exp), "qlora"]) == 0
    assert (fake_slurm / "scancel").read_text().splitlines() == ["5002_3", "5003_0 5003_1 5003_2"]
    out, err = exp.job_paths("5002_3").stdout, exp.job_paths("5002_3").stderr
    assert (out.name, err.name, out.parent.name) == ("5002_3_0_log.out", "5002_3_0_log.err", "5002_3")
    assert status.log_paths(exp, "lora[3]") == (out, err)
    capsys.readouterr()
    assert cli.main(["logs", str(exp), "lora"]) == 2
    assert "no job 'lora'" in (err_text := capsys.readouterr().err) and "its cells: lora[0-5]; give one" in err_text


def test_resume_sends_the_unfinished_cells_of_a_method_as_one_new_array(fake_slurm, tmp_path, tiny_model, monkeypatch):
    exp = _submit(tmp_path, tiny_model, *SWEEP)
    failed = {"lora[1]": "FAILED", "lora[4]": "TIMEOUT", "qlora[0]": "CANCELLED"}
    fake = [
        status.JobStatus(n, r.job_id, failed.get(n, "COMPLETED"), ended=True, ok=n not in failed)
        for n, r in exp.read_manifest().jobs.items()
    ]
    monkeypatch.setattr(status, "job_statuses", lambda exp: fake)
    plan = resume.plan_resume(exp)
    assert (plan.resubmit, plan.waiting_on, plan.cancel_eval, plan.eval_needed) == (
        ["lora[1]", "lora[4]", "qlora[0]"],
        [],
        [],
        True,
    )
    assert resume.plan_resume(exp, ["lora"]).resubmit == ["lora[1]", "lora[4]"]
    assert resume.plan_resume(exp, ["qlora[0]"]).resubmit == ["qlora[0]"]
    new = resume.resume(exp, plan)
    assert new == {"lora[1]": "5005_0", "lora[4]": "5005_1", "qlora[0]": "5006", "eval": "5007"}
    assert "#SBATCH --array=0-1%2" in (fake_slurm / "script-5005.sh").read_text()
    assert "#SBATCH --dependency=afterany:5005:5006" in (fake_slurm / "script-5007.sh").read_text()
    # Task 1 of the new array runs lora[4] (not lora[1]): a job finds its cell by address.
    pickled = DelayedSubmission.load(exp.jobs_dir / "5005_1" / "5005_1_submitted.pkl").function
    assert pickled.method == "lora[4]"
    jobs = exp.read_manifest().jobs
    assert jobs["lora[4]"].all_ids == ["5002_4", "5005_1"] and jobs["lora[0]"].all_ids == ["5002_0"]
    assert jobs["eval"].all_ids == ["5004", "5007"]


def test_sacct_and_squeue_names_of_array_tasks_as_slurm_prints_them():
    # Lines printed by Slurm 22.05 on the dev cluster (sacct -X -D -P -n): tasks by JobID (JobIDRaw
    # differs per task), a requeued task with one line per attempt, tasks not started collapsed.
    tres = "billing=1,cpu=1,gres/gpu=1,mem=100M,node=1"
    out = (
        f"9901000_0|COMPLETED|4|{tres}|s|2026-11-30T23:03:27|e|vm|0:0|None\n"
        f"9901000_2|REQUEUED|4|{tres}|s|2026-11-30T23:03:31|e|vm|0:0|None\n"
        f"9901000_2|COMPLETED|4|{tres}|s|2026-11-30T23:03:46|e|vm|0:0|None\n"
        "9901007_[2-3]|CANCELLED by 0|0||s|Unknown|e|None|0:0|None\n"
        "9901009|COMPLETED|8|billing=2,cpu=2,gres/gpu=2,node=1|s|2026-11-30T23:04:00|e|vm|0:0|None\n"
    )
    accounts = slurm.parse_sacct(out)
    assert sorted(accounts) == ["9901000_0", "9901000_2", "9901007_2", "9901007_3", "9901009"]
    assert accounts["9901000_2"].restarts == 1 and accounts["9901000_2"].gpu_hours == pytest.approx(8 / 3600)
    assert accounts["9901007_3"].state == "CANCELLED" and accounts["9901007_3"].ended
    assert accounts["9901009"].gpu_hours == pytest.approx(16 / 3600)
    assert slurm.expand_task_ids("4242_[5-7%4]") == ["4242_5", "4242_6", "4242_7"]
    assert slurm.expand_task_ids("4242_[1,4-5]") == ["4242_1", "4242_4", "4242_5"]
    assert slurm.array_ids(["4242_0", "4242_7", "4300", "4242_3"]) == ["4242", "4300"]
    live = slurm._parse_squeue(
        "4242_[5-6%2]|PENDING|0:00||JobArrayTaskLimit\n4242_1|RUNNING|0:03|vm|None\n", {"4242_6", "4242_1"}
    )
    assert {k: v.state for k, v in live.items()} == {"4242_6": "PENDING", "4242_1": "RUNNING"}
