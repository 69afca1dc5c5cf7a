"""The experiment directory's contract: where each file is, and records that read what earlier versions wrote.

This test spells the on-disk names on purpose: it is the contract every other module reaches
through :mod:`launch.store.expdir`.
"""

from __future__ import annotations

import json

import pytest

from launch.results.stats import wilson_interval
from launch.store.expdir import EvalResult, ExperimentDir, JobRecord, Manifest, Progress, TrainMetrics
from launch.store.fsio import atomic_write_json

# A manifest as `cyberft submit` and `cyberft resume` wrote it before the Manifest record existed.
SUBMITTED = {
    "experiment": "smoke-20261130-120000",
    "created_at": "2026-11-30T12:00:00+00:00",
    "config_hash": "abc123",
    "git_commit": None,
    "source_config": "/repo/configs/smoke.yaml",
    "overrides": ["methods.lora.max_steps=5"],
    "methods": {"full_sft": "full_sft", "lora": "lora"},
    "jobs": {
        "full_sft": {"job_id": "11", "executor": "slurm", "kind": "full_sft", "depends_on": [], "world_size": 2},
        "lora": {
            "job_id": "14",
            "executor": "slurm",
            "kind": "lora",
            "depends_on": [],
            "world_size": 1,
            "previous_job_ids": ["12"],
        },
        "eval": {
            "job_id": "15",
            "executor": "slurm",
            "kind": "eval",
            "depends_on": ["full_sft", "lora"],
            "world_size": 1,
        },
    },
    "executor": "slurm",
    "profile": "dev",
    "code_snapshot": "/runs/smoke-20261130-120000/code",
    "submitted_at": "2026-11-30T12:00:01+00:00",
    "resumed": [{"at": "2026-11-30T13:00:00+00:00", "jobs": {"lora": "14", "eval": "15"}}],
    "a_later_key": {"kept": True},
}

# A local run's manifest before the executor was recorded.
LOCAL_BEFORE = {
    "experiment": "smoke-20261130-120000",
    "created_at": "2026-11-30T12:00:00+00:00",
    "config_hash": "abc123",
    "git_commit": "0123abcd",
    "source_config": "/repo/configs/smoke.yaml",
    "overrides": [],
    "methods": {"lora": "lora"},
    "jobs": {"lora": {"job_id": "4242", "executor": "local"}, "eval": {"job_id": "4243", "executor": "local"}},
}


def test_the_layout_is_the_documented_one(tmp_path):
    exp = ExperimentDir(tmp_path)
    rel = {
        "config_file": "config.yaml",
        "manifest_file": "manifest.json",
        "profile_file": "profile.yaml",
        "code_dir": "code",
        "jobs_dir": "jobs",
        "wandb_dir": "wandb",
        "summary_file": "summary.json",
        "report_md": "report.md",
        "report_html": "report.html",
        "chart_file": "chart.png",
    }
    assert {k: getattr(exp, k).relative_to(tmp_path).as_posix() for k in rel} == rel
    data, lora, scored = exp.data, exp.method("lora"), exp.eval
    assert [p.relative_to(tmp_path).as_posix() for p in (data.train_file, data.eval_file, data.report_file)] == [
        "data/train.jsonl",
        "data/eval.jsonl",
        "data/data_report.json",
    ]
    paths = (lora.metrics_file, lora.progress_file, lora.checkpoints_dir, lora.model_dir, lora.adapter_dir)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "methods/lora/metrics.json",
        "methods/lora/progress.json",
        "methods/lora/checkpoints",
        "methods/lora/model",
        "methods/lora/adapter",
    ]
    paths = (scored.predictions_file("base"), scored.result_file("base"), scored.chunk_file("base", 2, 7))
    assert [p.relative_to(tmp_path).as_posix() for p in (*paths, scored.progress_file)] == [
        "eval/predictions/base.jsonl",
        "eval/results/base.json",
        "eval/partial/base/chunk-00002-of-00007.jsonl",
        "eval/progress.json",
    ]
    assert str(exp) == str(tmp_path) and ExperimentDir(exp) == exp  # a path wherever one is expected


def test_job_logs_are_where_submitit_writes_them(tmp_path):
    """Asked of submitit's own JobPaths, not re-derived: `cyberft logs` reads what the job wrote."""
    paths = ExperimentDir(tmp_path).job_paths("5001", task=1)
    assert paths.stdout == tmp_path / "jobs" / "5001" / "5001_1_log.out"
    assert paths.stderr == tmp_path / "jobs" / "5001" / "5001_1_log.err"


@pytest.mark.parametrize("raw", [SUBMITTED, LOCAL_BEFORE], ids=["submitted", "local"])
def test_a_manifest_rewritten_without_changes_is_byte_identical(tmp_path, raw):
    """Old experiments still read, and writing one back changes nothing but a local run's executor."""
    exp = ExperimentDir(tmp_path)
    atomic_write_json(exp.manifest_file, raw)
    before = exp.manifest_file.read_bytes()
    manifest = exp.read_manifest()
    exp.write_manifest(manifest)
    if raw is SUBMITTED:
        assert exp.manifest_file.read_bytes() == before
        assert manifest.jobs["lora"].all_ids == ["12", "14"] and manifest.on_slurm
    else:  # the one key it gains: the executor, which it was by default
        assert not manifest.on_slurm
        assert json.loads(exp.manifest_file.read_text()) == {**raw, "executor": "local"}


def test_manifest_updates_and_job_records(tmp_path):
    exp = ExperimentDir(tmp_path)
    exp.write_manifest(Manifest(experiment="x", executor="slurm"))
    exp.record_job("lora", JobRecord("7", "slurm", "lora", [], 1))
    exp.record_job("lora", exp.read_manifest().jobs["lora"].resubmitted("9"))
    exp.update_manifest(cancelled=["9"])
    on_disk = json.loads(exp.manifest_file.read_text())
    assert on_disk["jobs"]["lora"] == {
        "job_id": "9",
        "executor": "slurm",
        "kind": "lora",
        "depends_on": [],
        "world_size": 1,
        "previous_job_ids": ["7"],
    }
    assert on_disk["cancelled"] == ["9"] and "resumed" not in on_disk and "submit_error" not in on_disk
    with pytest.raises(TypeError):
        exp.update_manifest(no_such_field=1)


def test_train_metrics_read_every_way_a_job_can_end(tmp_path):
    exp = ExperimentDir(tmp_path)
    done = TrainMetrics("lora", "lora", "completed", tokens_per_s=4047.7, steps=3, final_loss=0.1)
    exp.method("lora").write_metrics(done)
    failed = TrainMetrics("full", "full_sft", "failed", error="OSError: gone", started_at="t0", ended_at="t1")
    exp.method("full").write_metrics(failed)
    exp.method("bad").root.mkdir(parents=True)
    exp.method("bad").metrics_file.write_text("{not json")
    assert exp.method("lora").read_metrics() == done
    assert json.loads(exp.method("full").metrics_file.read_text()) == {
        "method": "full",
        "kind": "full_sft",
        "status": "failed",
        "error": "OSError: gone",
        "started_at": "t0",
        "ended_at": "t1",
    }
    assert exp.method("gone").read_metrics() == TrainMetrics("gone", status="missing")
    bad = exp.method("bad").read_metrics()
    assert bad.status == "unreadable" and "metrics.json" in bad.error


def test_a_completed_record_keeps_every_key_and_leaves_out_gpu_details_on_cpu():
    keys = list(TrainMetrics("m", "lora", "completed").to_dict())
    assert "error" not in keys and "gpu_name" not in keys
    assert keys[:8] == ["method", "kind", "status", "device", "n_devices", "threads", "cpu_affinity", "mixed_precision"]
    assert keys[-3:] == ["started_at", "ended_at", "trainable_dtype"]
    on_gpu = TrainMetrics("m", "lora", "completed", gpu_name="H200", gpu_capability="9.0", bf16_native=True)
    assert list(on_gpu.to_dict())[8:11] == ["gpu_name", "gpu_capability", "bf16_native"]


def test_progress_that_is_not_a_progress_record_reads_as_none(tmp_path):
    lora = ExperimentDir(tmp_path).method("lora")
    assert lora.read_progress() is None
    lora.write_progress(Progress(3, 10, 0.5, flushed_step=2, updated_at="t"))
    assert lora.read_progress() == Progress(3, 10, 0.5, 2, "t")
    lora.progress_file.write_text('{"step": 3}')  # another writer's file (the directory exists now)
    assert lora.read_progress() is None


def test_an_eval_result_computes_accuracy_and_its_wilson_interval_from_the_counts(tmp_path):
    result = EvalResult.from_counts("lora", 60, 96, "loglik", ties=2, load_s=1.23456, eval_s=4.0)
    assert result.accuracy == 60 / 96 and result.ci95 == list(wilson_interval(60, 96))
    assert (result.load_s, result.eval_s, result.questions_per_s) == (1.235, 4.0, 24.0)
    assert EvalResult.from_counts("none", 0, 0, "loglik").accuracy == 0.0
    scored = ExperimentDir(tmp_path).eval
    scored.write_result(result)
    assert scored.read_result("lora") == result and scored.scored() == ["lora"]
    assert list(json.loads(scored.result_file("lora").read_text())) == [
        "method",
        "accuracy",
        "ci95",
        "n",
        "correct",
        "parse_failures",
        "ties",
        "mode",
        "load_s",
        "eval_s",
        "questions_per_s",
    ]


def test_a_local_run_records_its_executor_and_the_keys_it_always_wrote(tmp_path):
    from support.experiments import new_experiment

    _, exp = new_experiment([f"output_dir={tmp_path}", "data.max_train=8", "data.max_eval=4"])
    raw = json.loads(exp.manifest_file.read_text())
    assert list(raw) == [
        "experiment",
        "created_at",
        "config_hash",
        "git_commit",
        "source_config",
        "overrides",
        "methods",
        "jobs",
        "executor",
    ]
    assert raw["executor"] == "local" and raw["experiment"] == exp.name and exp.data.train_file.is_file()
