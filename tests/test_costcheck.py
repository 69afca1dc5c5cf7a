"""The cost forecast in the launcher's flow (launch/cost/costcheck.py): dry run, submit, report, calibration, CLI.

The forecast's own arithmetic is tested in tests/test_forecast.py, the calibration file in
tests/test_calibration.py; here: what each command makes of them. Each test has its own empty
calibration directory (tests/conftest.py sets ``CYBERFT_CALIBRATION_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from launch import cli
from launch.cost import calibration, costcheck, forecast
from launch.run import submit
from launch.spec.config import load_config
from launch.store.expdir import ExperimentDir
from launch.store.fsio import read_json
from support.fake_slurm import install_fake_slurm

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _table_rows(lines: list[str]) -> dict[str, list[str]]:
    """The forecast table's rows by job name (the lines between the rule and ``total``)."""
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("--------"))
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if not cells or cells[0] == "total":
            break
        rows[cells[0]] = cells
    return rows


# --------------------------------------------------------------------------- before the run


def test_dry_run_forecasts_every_method_and_the_evaluation(tiny_model, tmp_path):
    found = submit.check("configs/smoke.yaml", [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}"], "dev")
    assert found.problems == []
    text = submit.dry_run_text(found, ExperimentDir(tmp_path / "smoke-<UTC time>"))
    section = text[text.index("# ---- cost forecast") : text.index("# ---- jobs and dependencies")]
    lines = section.splitlines()
    # The tiny model's tokenizer is on disk: counted, not estimated.
    assert lines[1].startswith("  cost forecast: fake, peak 0.085 TFLOP/s per GPU, 2 per GPU-hour; tokens: counted")
    rows = _table_rows(lines)
    methods = [m.name for m in found.cfg.methods]
    assert len(methods) == 7  # every method kind the smoke study has
    assert list(rows) == [*methods, "eval"]
    for name, cells in rows.items():
        assert "default" in cells and "?" not in cells, (name, cells)
    assert rows["full_sft"][3] == "300"  # max_steps
    assert "  calibration: no runs recorded for dev yet (cyberft calibration show --profile dev)" in lines
    assert found.forecast.saved()["calibration_file"] == str(calibration.calibration_path("dev").absolute())


def test_the_next_forecast_uses_the_sites_calibration_and_says_so(tiny_model, tmp_path):
    overrides = [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}"]
    before = submit.check("configs/smoke.yaml", overrides, "dev").forecast.forecast
    lora = before.to_json()["methods"]["lora"]
    # What a finished run would record: LoRA ran at twice the default utilisation, overhead as modelled.
    compute = lora["compute_s"] / 2
    metrics = {
        "status": "completed",
        "train_tokens": lora["tokens"],
        "phases_s": {"train": compute},
        "wall_s": compute + lora["modelled_overhead_s"],
    }
    rec = calibration.measure_method(lora, metrics, None, "earlier-20260101-000000", "fake")
    assert calibration.append(calibration.calibration_path("dev"), rec)
    after = submit.check("configs/smoke.yaml", overrides, "dev").forecast
    new = {j.name: j for j in after.forecast.methods}
    assert new["lora"].source == "calibrated from 1 run"
    assert new["lora"].utilisation == pytest.approx(2 * lora["utilisation"])
    assert new["lora"].compute_s == pytest.approx(compute)
    assert new["full_sft"].source == "default" and new["qlora"].source == "default"  # other kinds: not calibrated
    assert after.calibration_runs == 1
    assert any(line.startswith("calibration: 1 run(s) recorded for dev in ") for line in costcheck.section(after))


def test_without_data_or_model_shape_the_dry_run_says_why_there_is_no_forecast(tmp_path):
    """The 8B study's data is not shipped: without its record count (``data.train.examples``) the forecast
    needs the split, the problems say the file is missing and the forecast says how to do without it."""
    found = submit.check("configs/llama3-8b-cybermetric.yaml", ["data.train.examples=null"], "dev")
    text = submit.dry_run_text(found, ExperimentDir(tmp_path / "x"))
    assert (
        "# ---- cost forecast\n  cost forecast: not made: the data could not be read (see the problems)\n"
        "  cost forecast: data.train.examples: not given -> " in text
    )
    assert "data.train.path: 'data/cybermetric/CyberMetric-10000-v1.json' does not exist -> check the path" in text
    found = submit.check("configs/smoke.yaml", [f"model.name_or_path={tmp_path / 'nowhere'}"], "dev")
    assert costcheck.section(found.forecast)[0].startswith("cost forecast: not made: no usable config.json")


def test_submit_prints_the_forecast_and_saves_it_in_the_experiment(tmp_path, monkeypatch, tiny_model, capsys):
    install_fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "runs"
    argv = ["submit", "configs/smoke.yaml", "--profile", "dev", f"model.name_or_path={tiny_model}", f"output_dir={out}"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("cost forecast: fake, peak 0.085 TFLOP/s per GPU")
    (exp,) = out.iterdir()
    saved = ExperimentDir(exp).read_forecast()
    methods = {m.name for m in load_config("configs/smoke.yaml").methods}
    assert set(saved["methods"]) == methods and saved["evaluation"]["models"] == len(methods) + 1
    assert saved["site"] == "dev" and saved["gpu_type"] == "fake" and saved["device"] == "GPU"
    assert saved["calibration_file"] == str(calibration.calibration_path("dev").absolute())
    assert set(saved["memory_gb"]) == methods
    # The jobs read it through the experiment directory: nothing else names the file.
    assert ExperimentDir(exp).forecast_file.is_file()


def test_a_local_run_is_one_process_per_job_on_cpu_threads(tiny_model, tmp_path):
    cfg = load_config("configs/smoke.yaml", [f"model.name_or_path={tiny_model}", "local.threads_per_job=2"])
    cfg.methods[0].resources.nodes, cfg.methods[0].resources.gpus_per_node = 2, 4  # locally: still one process
    site = costcheck.Site.local(cfg)
    assert (site.name, site.gpu_type, site.device) == ("local", "cpu", "CPU thread")
    assert site.calibration_file == calibration.local_calibration_path().absolute()
    from launch.questions.data import plan_splits

    planned = costcheck.plan(cfg, plan_splits(cfg.data), site)
    fc = planned.forecast
    full, evaluation = fc.methods[0], fc.evaluation
    assert (full.gpus, evaluation.gpus) == (2, max(1, os.cpu_count() or 1))  # threads
    assert full.steps == 300  # max_steps; with 8 ranks the epoch count would differ, not the steps
    assert full.peak_tflops == costcheck.CPU_TFLOPS_PER_THREAD
    assert full.gpu_hours == pytest.approx(full.wall_s * 2 / 3600)  # CPU-hours: wall x threads
    assert "CPU-h" in fc.table().splitlines()[1] and "threads" in fc.table().splitlines()[1]
    assert cfg.methods[0].resources.nodes == 2  # the config itself is left as it was


# --------------------------------------------------------------------------- after the run


def _saved(device: str = "GPU") -> dict:
    job = {
        "name": "lora",
        "kind": "lora",
        "gpus": 1,
        "n_params": 1000,
        "peak_tflops": 1.0,
        "flops_per_token": 2e6,
        "modelled_overhead_s": 100.0,
        "gpu_hours": 0.1,
        "wall_s": 360.0,
        "tokens_per_s": 4000.0,
    }
    evaluation = dict(job, name="eval", kind="eval", gpu_hours=0.02, wall_s=72.0, tokens_per_s=10_000.0)
    return {
        "device": device,
        "gpu_type": "fake",
        "site": "dev",
        "tokens_source": "tokens: counted with the tokenizer",
        "made_at": "2026-11-30T00:00:00Z",
        "methods": {"lora": job},
        "evaluation": evaluation,
        "memory_gb": {"lora": {"gpu": 3.0, "cpu": 1.5}},
    }


def test_check_puts_each_forecast_next_to_sacct_and_the_measured_peak():
    row = {"method": "lora", "gpu_hours": 0.08, "cpu_hours": 0.5, "elapsed_s": 300, "wall_s": 250.0}
    row.update(tokens_per_s=5000.0, peak_mem_gb=2.0)
    rows = [{"method": "base"}, row]
    scored = {"base": {"load_s": 2.0, "eval_s": 20.0}, "lora": {"load_s": 3.0, "eval_s": 30.0}}
    evaluation = {"gpu_hours": 55 / 3600, "cpu_hours": 0.1, "seconds": 55.0}
    out = costcheck.check(_saved(), rows, {"lora": {"peak_mem_kind": "cuda"}}, evaluation, scored, 100_000.0)
    lora = out["methods"]["lora"]
    assert list(out["methods"]) == ["lora"]  # the base model trains nothing
    assert lora["gpu_hours"] == {"forecast": 0.1, "actual": 0.08, "error_pct": pytest.approx(25.0)}  # sacct's
    assert lora["wall_s"]["actual"] == 300 and lora["wall_s"]["error_pct"] == pytest.approx(20.0)  # sacct's elapsed
    assert lora["tokens_per_s"]["error_pct"] == pytest.approx(-20.0)
    assert lora["peak_mem_gb"] == {"forecast": 3.0, "actual": 2.0, "error_pct": pytest.approx(50.0)}  # per GPU
    ev = out["evaluation"]
    assert ev["wall_s"]["actual"] == 55.0 and ev["gpu_hours"]["actual"] == pytest.approx(55 / 3600)
    assert ev["tokens_per_s"]["actual"] == pytest.approx(2 * 100_000 / 50.0)  # two models' tokens over their scoring
    assert out["hours"] == "GPU-h"
    # A local CPU run: CPU-hours, and the process's RSS against the CPU figure.
    local = costcheck.check(_saved("CPU thread"), rows, {"lora": {"peak_mem_kind": "rss"}}, evaluation, scored, None)
    assert local["methods"]["lora"]["gpu_hours"]["actual"] == 0.5
    assert local["methods"]["lora"]["peak_mem_gb"]["forecast"] == 1.5
    assert local["evaluation"]["gpu_hours"]["actual"] == 0.1 and local["hours"] == "CPU-h"
    text = costcheck.format_check({**local, "calibration": {"recorded": ["x/lora"], "file": "/c.jsonl"}})
    assert "CPU-h fc" in text and "\neval " in text and "calibration: 1 job(s) recorded in /c.jsonl" in text


def test_calibrate_appends_each_completed_job_once(tmp_path):
    saved = {**_saved(), "calibration_file": str(tmp_path / "site.calibration.jsonl")}
    metrics = {"lora": {"status": "completed", "train_tokens": 1_000_000, "phases_s": {"train": 200.0}, "wall_s": 260}}
    account = {"lora": {"elapsed_s": 300, "gpus": 1}}
    scored = {
        "base": {"load_s": 2.0, "eval_s": 20.0, "precision": "fp32"},
        "lora": {"load_s": 3.0, "eval_s": 30.0, "precision": "fp32"},
    }
    done = costcheck.calibrate(saved, "exp-1", metrics, account, scored, 100_000.0)
    assert done == {"file": saved["calibration_file"], "recorded": ["exp-1/lora", "exp-1/eval"], "already": []} | {
        "error": None
    }
    records = {r["job"]: r for r in calibration.load(saved["calibration_file"]).records}
    # LoRA by hand: 1e6 tokens x 2e6 FLOPs / (200 s x 1 GPU x 1 TFLOP/s); overhead (300 - 200) / 100 from sacct.
    assert records["lora"]["utilisation"] == pytest.approx(1e6 * 2e6 / (200 * 1e12))
    assert records["lora"]["overhead_factor"] == pytest.approx(1.0)
    # The evaluation: both models' tokens over their scoring time; load time is its overhead.
    assert records["eval"]["utilisation"] == pytest.approx(2e5 * 2e6 / (50 * 1e12))
    assert records["eval"]["overhead_s"] == pytest.approx(5.0)
    assert records["eval"]["precision"] == "fp32"  # what every model was scored in: bf16 never calibrates fp32
    again = costcheck.calibrate(saved, "exp-1", metrics, account, scored, 100_000.0)
    assert again["recorded"] == [] and again["already"] == ["exp-1/lora", "exp-1/eval"]
    failed = costcheck.calibrate(saved, "exp-2", {"lora": {"status": "failed"}}, None, {}, None)
    assert failed["recorded"] == []  # a failed job says nothing about speed
    mixed = {"base": {**scored["base"], "precision": "bf16"}, "lora": scored["lora"]}
    costcheck.calibrate(saved, "exp-3", {}, None, mixed, 100_000.0)
    records = {r["experiment"]: r for r in calibration.load(saved["calibration_file"]).records if r["job"] == "eval"}
    assert records["exp-3"]["precision"] is None  # two precisions in one job: its rate is neither's


def test_an_unwritable_calibration_file_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    saved = {**_saved(), "calibration_file": str(blocker / "site.calibration.jsonl")}
    metrics = {"lora": {"status": "completed", "train_tokens": 1000, "phases_s": {"train": 2.0}, "wall_s": 3.0}}
    done = costcheck.calibrate(saved, "exp", metrics, None, {}, None)
    assert done["recorded"] == [] and str(blocker) in done["error"]
    text = costcheck.format_check({**_saved(), "methods": {}, "evaluation": {}, "calibration": done})
    assert "calibration not recorded:" in text and "`cyberft calibration record EXP_DIR`" in text


# --------------------------------------------------------------------------- the kind table


def test_a_new_method_kind_is_one_row_of_the_table(monkeypatch, tmp_path):
    """A kind that trains a small head on a frozen base's features: forward only through the base."""
    from test_forecast import LLAMA3_8B, N_8B, _cfg, _counts, _method

    head = forecast.KindModel(
        lambda method, shape, adapters: (16.0 * adapters, 4.0 * adapters),
        base_backward=False,
        adapters=lambda shape, method: 4 * shape.hidden_size,
        utilisation_as="lora",
    )
    monkeypatch.setitem(forecast.KIND_MODELS, "head_probe", head)
    per = forecast.train_flops(LLAMA3_8B, "head_probe", 150, 4 * 4096)
    attn = 4 * 32 * 4096 * 150  # forward only: 4 L d T
    assert per.per_token == 2 * N_8B + 6 * 4 * 4096 + attn and per.per_logit == 2 * 128256 * 4096
    assert forecast.default_utilisation("head_probe", "h100") == forecast.default_utilisation("lora", "h100")
    cfg = _cfg([{"name": "fh", "kind": "lora"}])
    cfg.methods = [_method(name="fh", kind="head_probe", epochs=1, micro_batch_size=10)]
    planned = forecast.forecast(cfg, LLAMA3_8B, _counts(), "h100")
    assert planned.methods[0].flops == pytest.approx(per.total(150_000, 4000))
    # Its finished runs calibrate like any other kind's.
    rec = calibration.measure_job(planned.to_json()["methods"]["fh"], 150_000, 10.0, 20.0, "exp", "h100")
    assert calibration.append(tmp_path / "c.jsonl", rec)
    # A kind with no row is left out of the forecast with a warning, not a crash.
    monkeypatch.delitem(forecast.KIND_MODELS, "head_probe")
    out = forecast.forecast(cfg, LLAMA3_8B, _counts(), "h100")
    assert out.methods == [] and out.warnings[0].startswith("methods.fh: kind 'head_probe' has no throughput model")
    skipped = calibration.load(tmp_path / "c.jsonl").skipped
    assert skipped == [f"line 1: kind: 'head_probe' -> one of {', '.join(calibration.kinds())}"]
    assert "head_probe" not in calibration.kinds() and "feature_head" in calibration.kinds()


# --------------------------------------------------------------------------- the command line


def test_calibration_show_and_its_input_errors(tmp_path):
    res = run_cli("calibration", "show", "--profile", "dev")
    assert res.returncode == 0 and res.stdout.startswith("profile dev: no calibration runs yet")
    res = run_cli("calibration", "show", "--profile", "dve")
    assert res.returncode == 2 and "did you mean 'dev'?" in res.stderr
    res = run_cli("calibration", "show")
    assert res.returncode == 2 and "give --profile P (a Slurm site) or --local" in res.stderr
    saved = {**_saved(), "calibration_file": str(calibration.local_calibration_path())}
    metrics = {"lora": {"status": "completed", "train_tokens": 10**6, "phases_s": {"train": 200.0}, "wall_s": 300}}
    costcheck.calibrate(saved, "exp-1", metrics, None, {}, None)
    res = run_cli("calibration", "show", "--local")
    assert res.returncode == 0, res.stderr
    assert "local.calibration.jsonl, 1 run" in res.stdout
    row = next(line for line in res.stdout.splitlines() if line.startswith("lora "))
    assert row.split()[:10] == ["lora", "fake", "1k", "?", "1", "0.010", "0.010-0.010", "1.00", "-", "1M"]


def _finished_local_experiment(tiny_model, tmp_path):
    """A local experiment as `cyberft run` leaves it, with made-up measurements instead of trained models."""
    from launch.questions.data import load_jsonl_questions
    from launch.results import finalize
    from launch.store.expdir import EvalResult, TrainMetrics
    from support.experiments import new_experiment

    cfg, exp = new_experiment([f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'runs'}"])
    split = SimpleNamespace(
        train=load_jsonl_questions(exp.data.train_file), eval=load_jsonl_questions(exp.data.eval_file)
    )
    exp.write_forecast(costcheck.plan(cfg, split, costcheck.Site.local(cfg)).saved())
    for i, m in enumerate(cfg.methods):
        metrics = TrainMetrics(m.name, m.kind, "completed", phases_s={"load": 1.0, "train": 20.0 + i, "save": 1.0})
        metrics.wall_s, metrics.train_tokens, metrics.tokens_per_s = 22.0 + i, 40_000, 40_000 / (20.0 + i)
        metrics.cpu_hours, metrics.peak_mem_bytes, metrics.peak_mem_kind = (22.0 + i) / 3600, 700 * 2**20, "rss"
        exp.method(m.name).write_metrics(metrics)
    results = {}
    for name in ["base", *(m.name for m in cfg.methods)]:
        results[name] = EvalResult.from_counts(name, 40, 129, "loglik", load_s=0.5, eval_s=3.0)
        exp.eval.write_result(results[name])
    finalize.main(cfg, exp, results, n_eval=129, gpus=0, threads=2)
    return exp


def test_the_evaluation_job_checks_the_forecast_and_calibrates_the_site(tiny_model, tmp_path):
    exp = _finished_local_experiment(tiny_model, tmp_path)
    summary = read_json(exp.summary_file)
    checked = summary["forecast_vs_actual"]
    kinds = {m.name: m.kind for m in load_config(str(exp.config_file)).methods}
    assert set(checked["methods"]) == set(kinds) and checked["hours"] == "CPU-h"
    full = checked["methods"]["full_sft"]
    assert full["gpu_hours"]["actual"] == pytest.approx(22 / 3600) and full["wall_s"]["actual"] == 22.0
    assert full["peak_mem_gb"]["actual"] == pytest.approx(700 / 1024)
    # Few-shot's own job computes nothing (it pays in the evaluation): no throughput to forecast or to calibrate.
    computing = [n for n, kind in kinds.items() if kind != "few_shot"]
    assert checked["methods"]["few_shot"]["tokens_per_s"]["forecast"] is None
    for cmp in [*(checked["methods"][n] for n in computing), checked["evaluation"]]:
        for key in ("gpu_hours", "wall_s", "tokens_per_s"):
            assert cmp[key]["forecast"] > 0 and cmp[key]["error_pct"] is not None, (key, cmp)
    assert checked["calibration"]["recorded"] == [f"{exp.name}/{n}" for n in (*computing, "eval")]
    cal = calibration.load(calibration.local_calibration_path())
    assert sorted(r["kind"] for r in cal.records) == sorted([*(kinds[n] for n in computing), "eval"])
    assert "## Forecast against actual" in exp.report_md.read_text()
    assert "Forecast against actual" in exp.report_html.read_text()
    report = run_cli("report", str(exp))
    assert report.returncode == 0 and "forecast against actual" in report.stdout and "CPU-h fc" in report.stdout


def test_calibration_record_adds_what_is_missing_and_nothing_twice(tiny_model, tmp_path):
    exp = _finished_local_experiment(tiny_model, tmp_path)
    path = calibration.local_calibration_path()
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")  # as if the evaluation job had recorded only two jobs
    res = run_cli("calibration", "record", str(exp))
    assert res.returncode == 0, res.stderr
    assert f"{len(lines) - 2} job(s) recorded" in res.stdout and "2 already there" in res.stdout
    assert path.read_text().splitlines()[:2] == lines[:2] and len(path.read_text().splitlines()) == len(lines)
    res = run_cli("calibration", "record", str(tmp_path))
    assert res.returncode == 2 and "has no manifest.json" in res.stderr
