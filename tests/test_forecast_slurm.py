"""The cost forecast's calibration loop on a real Slurm (the dev cluster, sacct through slurmdbd).

One experiment runs; its evaluation job puts each method's forecast next to sacct's figures and appends what
every job measured to the site's calibration file; the next plan's forecast of another size uses those runs
and says so. How close that forecast then comes is measured, not tested (timings are the machine's):
``bench/forecast_accuracy.py --profile dev``.
"""

from __future__ import annotations

import json

import pytest

from launch.cost import calibration
from support.experiments import classic_smoke
from support.slurm_cluster import cluster_or_skip, make_base, stop_all, stop_cluster
from test_submit_slurm import cyberft, sacct_gpu_hours, submit

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
METHODS = ("full_sft", "lora", "qlora")


@pytest.fixture(scope="module")
def cluster():
    stop_all()
    base = make_base("cyberft-slurm-forecast-")
    try:
        yield base, cluster_or_skip(base, topo="single", acct="dbd")
    finally:
        stop_cluster(base, remove=True)


def test_a_finished_experiment_calibrates_the_next_forecast(cluster, tmp_path, tiny_model):
    _, env = cluster
    config = classic_smoke(tmp_path)  # every kind's forecast is checked by tests/test_smoke_e2e.py
    first = [f"methods.{m}.max_steps=20" for m in METHODS]
    exp, ids, _ = submit(env, tmp_path, tiny_model, *first, config=config)
    saved = json.loads((exp / "forecast.json").read_text())
    assert all(job["source"] == "default" for job in saved["methods"].values())
    waited = cyberft(env, "status", str(exp), "--wait", "--interval", "1", timeout=900)
    assert waited.returncode == 0, waited.stdout + waited.stderr

    # Forecast next to actual, the actual GPU-hours being sacct's (every attempt), errors in percent.
    checked = json.loads((exp / "summary.json").read_text())["forecast_vs_actual"]
    for name in METHODS:
        cmp = checked["methods"][name]
        assert cmp["gpu_hours"]["actual"] == pytest.approx(sacct_gpu_hours(ids[name], env), abs=1e-6)
        for key in ("gpu_hours", "wall_s", "tokens_per_s", "peak_mem_gb"):
            assert cmp[key]["forecast"] > 0 and cmp[key]["error_pct"] is not None, (name, key, cmp)
    assert checked["hours"] == "GPU-h" and checked["evaluation"]["wall_s"]["actual"] > 0
    report = cyberft(env, "report", str(exp))
    assert "forecast against actual" in report.stdout

    # The site's calibration: one record per job, fake GPUs, next to where the profile's file would be.
    path = calibration.calibration_path("dev")
    assert checked["calibration"]["file"] == str(path) and checked["calibration"]["error"] is None
    assert len(checked["calibration"]["recorded"]) == 4
    records = {r["job"]: r for r in calibration.load(path).records}
    assert set(records) == {*METHODS, "eval"} and {r["gpu_type"] for r in records.values()} == {"fake"}
    shown = cyberft(env, "calibration", "show", "--profile", "dev")
    assert shown.returncode == 0 and f"{path}, 4 runs" in shown.stdout

    # The next plan, twice the steps at another micro-batch: each method forecast from its measured utilisation.
    second = [f"methods.{m}.max_steps=40" for m in METHODS] + [f"methods.{m}.micro_batch_size=8" for m in METHODS]
    dry = cyberft(
        env,
        "submit",
        str(config),
        "--profile",
        "dev",
        "--dry-run",
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'next'}",
        *second,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    section = dry.stdout.split("# ---- cost forecast\n")[1].split("# ----")[0]
    jobs = (*METHODS, "eval")
    rows = {line.split()[0]: line for line in section.splitlines() if line.split()[0] in jobs}
    for name in jobs:
        util = f"{records[name]['utilisation']:.2f}"
        assert f" {util}  calibrated from 1 run " in rows[name], (name, util, rows[name])
    assert f"calibration: 4 run(s) recorded for dev in {path}" in dry.stdout
