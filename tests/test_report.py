"""Tests of launch/results/report.py: statistics, rows, the text table and the report files."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from launch.results import report
from launch.results.report import COLUMNS, build_rows, format_table, write_reports
from launch.results.stats import wilson_interval
from launch.store.expdir import ExperimentDir

METHODS = [("full", "full_sft"), ("lora", "lora"), ("qlora", "qlora"), ("late", "lora")]


def _eval(name: str, correct: int, n: int = 96) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {
        "method": name,
        "accuracy": correct / n,
        "ci95": [lo, hi],
        "n": n,
        "correct": correct,
        "parse_failures": None,
        "mode": "loglik",
        "eval_s": 1.3,
    }


def _metrics(name: str, kind: str, **over) -> dict:
    m = {
        "method": name,
        "kind": kind,
        "status": "completed",
        "device": "cuda",
        "n_devices": 1,
        "threads": 1,
        "phases_s": {"load": 1.2, "train": 30.5, "save": 0.3},
        "wall_s": 32.0,
        "train_tokens": 123456,
        "tokens_per_s": 4047.7,
        "peak_mem_bytes": 3 * 2**30,
        "peak_mem_kind": "cuda",
        "trainable_params": 131072,
        "total_params": 806144,
        "final_loss": 0.12,
        "steps": 300,
        "gpu_hours": 0.5,
        "cpu_hours": 0.0089,
        "cost_source": "slurm",
        "started_at": "2026-11-22T03:00:00Z",
        "ended_at": "2026-11-22T03:00:32Z",
    }
    m.update(over)
    return m


@pytest.fixture
def results() -> tuple[dict, dict]:
    """base, full and lora evaluated; qlora failed in training; late trained but not evaluated."""
    evals = {"base": _eval("base", 30), "full": _eval("full", 60), "lora": _eval("lora", 54)}
    train = {
        "full": _metrics("full", "full_sft", gpu_hours=2.0, trainable_params=806144),
        "lora": _metrics("lora", "lora", gpu_hours=0.25),
        "qlora": {
            "method": "qlora",
            "kind": "qlora",
            "status": "failed",
            "error": "CUDA out of memory",
            "gpu_hours": None,
            "cpu_hours": None,
        },
        "late": _metrics("late", "lora", gpu_hours=0.3),
    }
    return evals, train


# --------------------------------------------------------------------------- wilson


def test_wilson_known_values():
    # Hand calculation for 8/10, z = 1.96: denom = 1 + 3.8416/10 = 1.38416,
    # centre = (0.8 + 0.19208) / denom = 0.71682, half = 1.96 * sqrt(0.016 + 0.009604) / denom = 0.22658.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-4)
    assert hi == pytest.approx(0.9433, abs=5e-4)
    # 0/10 and 10/10 stay inside [0, 1] and are not degenerate (the point of Wilson).
    lo0, hi0 = wilson_interval(0, 10)
    assert lo0 == 0.0 and hi0 == pytest.approx(0.2775, abs=5e-4)
    lo1, hi1 = wilson_interval(10, 10)
    assert hi1 == pytest.approx(1.0) and lo1 == pytest.approx(0.7225, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_wilson_symmetry_and_z():
    lo, hi = wilson_interval(30, 100)
    lo2, hi2 = wilson_interval(70, 100)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
    # A wider z gives a wider interval around the same data.
    wlo, whi = wilson_interval(30, 100, z=2.576)
    assert wlo < lo and whi > hi


# --------------------------------------------------------------------------- rows


def test_columns_order():
    keys = [k for k, _ in COLUMNS]
    assert keys == [
        "method",
        "kind",
        "accuracy",
        "ci95",
        "gpu_hours",
        "cpu_hours",
        "cost",
        "wall_s",
        "tokens_per_s",
        "peak_mem_gb",
        "trainable_params",
        "status",
        "restarts",
        "cost_source",
    ]


def test_build_rows_keeps_every_method(results):
    evals, train = results
    rows = build_rows(METHODS, evals, train, price_per_gpu_hour=2.5)
    assert [r["method"] for r in rows] == ["base", "full", "lora", "qlora", "late"]
    by = {r["method"]: r for r in rows}
    for row in rows:
        assert set(k for k, _ in COLUMNS) <= set(row)

    base = by["base"]
    assert base["kind"] == "base" and base["status"] == "completed"
    assert base["gpu_hours"] == 0.0 and base["cost"] == 0.0
    assert base["accuracy"] == pytest.approx(30 / 96)

    full = by["full"]
    assert full["status"] == "completed"
    assert full["accuracy"] == pytest.approx(0.625)
    assert full["ci95"] == pytest.approx(list(wilson_interval(60, 96)))
    assert full["cost"] == pytest.approx(5.0)  # 2 GPU-h x 2.5
    assert full["peak_mem_gb"] == pytest.approx(3.0)
    assert full["trainable_params"] == 806144
    assert full["tokens_per_s"] == pytest.approx(4047.7)

    failed = by["qlora"]
    assert failed["status"] == "failed"
    assert failed["error"] == "CUDA out of memory"
    for key in ("accuracy", "ci95", "gpu_hours", "cost", "peak_mem_gb"):
        assert failed[key] is None, key

    late = by["late"]
    assert late["status"] == "not evaluated"
    assert late["accuracy"] is None and late["ci95"] is None
    assert late["gpu_hours"] == pytest.approx(0.3)  # its training cost is still reported


def test_build_rows_without_base_price_or_metrics():
    rows = build_rows([("lora", "lora")], {"lora": {"method": "lora", "n": 10, "correct": 8}}, {})
    assert [r["method"] for r in rows] == ["lora"]
    row = rows[0]
    assert row["status"] == "missing"  # no metrics.json
    assert row["cost"] is None
    # accuracy and CI derived from correct/n when the eval dict lacks them
    assert row["accuracy"] == pytest.approx(0.8)
    assert row["ci95"] == pytest.approx([0.4902, 0.9433], abs=5e-4)


def test_build_rows_cpu_run_has_no_money_cost():
    train = {"lora": _metrics("lora", "lora", gpu_hours=None, cpu_hours=0.0089, cost_source="local")}
    rows = build_rows([("lora", "lora")], {"lora": _eval("lora", 50)}, train, price_per_gpu_hour=3.0)
    assert rows[0]["cost"] is None and rows[0]["cpu_hours"] == pytest.approx(0.0089)


def test_build_rows_sanitises_nan(results):
    evals, train = results
    train["full"]["tokens_per_s"] = float("nan")
    rows = build_rows(METHODS, evals, train)
    assert rows[1]["tokens_per_s"] is None
    json.dumps(rows, allow_nan=False)  # strict JSON


# --------------------------------------------------------------------------- table


def test_format_table(results):
    evals, train = results
    rows = build_rows(METHODS, evals, train)
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, one line per row
    assert lines[0].split()[:3] == ["method", "kind", "accuracy"]
    full = next(line for line in lines if line.startswith("full "))
    # Wilson 60/96 by hand: centre 0.6202, half-width 0.0951 -> [0.525, 0.715]
    assert "0.625" in full and "[0.53, 0.72]" in full
    assert "806,144" in full and "2 " in full
    qlora = next(line for line in lines if line.startswith("qlora"))
    assert "failed" in qlora and " - " in qlora
    assert "not evaluated" in next(line for line in lines if line.startswith("late"))
    # hours to 4 significant digits
    assert report._fmt("gpu_hours", 1.23456) == "1.235"
    assert report._fmt("cpu_hours", 0.000123456) == "0.0001235"
    assert report._fmt("accuracy", None) == "-"


# --------------------------------------------------------------------------- files


def test_write_reports(tmp_path, results):
    evals, train = results
    rows = build_rows(METHODS, evals, train, price_per_gpu_hour=2.5)
    paths = write_reports(
        ExperimentDir(tmp_path), rows, "smoke test", extra={"config_hash": "abc123", "eval_mode": "loglik"}
    )
    assert set(paths) == {"summary", "markdown", "chart", "html"}
    for p in paths.values():
        assert p.is_file() and p.parent == tmp_path
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries

    summary = json.loads(paths["summary"].read_text())
    assert summary["title"] == "smoke test" and summary["config_hash"] == "abc123"
    assert [r["method"] for r in summary["rows"]] == ["base", "full", "lora", "qlora", "late"]
    full = summary["rows"][1]
    assert isinstance(full["accuracy"], float) and full["accuracy"] == pytest.approx(0.625)
    assert isinstance(full["ci95"], list) and len(full["ci95"]) == 2
    assert full["ci95"][0] < full["accuracy"] < full["ci95"][1]
    assert summary["rows"][3]["status"] == "failed" and summary["rows"][3]["accuracy"] is None

    md = paths["markdown"].read_text()
    assert md.startswith("# smoke test")
    assert "| method | kind | accuracy |" in md
    assert "exact match" in md and "ROUGE" in md and "bigram" in md
    assert "qlora: failed (CUDA out of memory)" in md

    png = paths["chart"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5000  # a real plot, not an empty canvas

    page = paths["html"].read_text()
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," + base64.b64encode(png).decode() in page
    assert '<td class="t">qlora</td>' in page
    assert 'src="http' not in page  # self-contained


def test_evaluation_cost_counts_every_models_timers_and_reaches_every_report(tmp_path, results):
    evals, train = results
    timed = {
        "base": {"load_s": 10.0, "eval_s": 50.0},
        "full": {"load_s": 20.0, "eval_s": 100.0},
        "lora": {"eval_s": 0.0},
    }
    ev = report.evaluation_cost(timed, gpus=2, threads=16, price_per_gpu_hour=3.0)
    assert ev["models"] == 3 and ev["seconds"] == 180.0
    assert ev["gpu_hours"] == pytest.approx(180 * 2 / 3600) and ev["cost"] == pytest.approx(180 * 2 / 3600 * 3.0)
    assert ev["cpu_hours"] == pytest.approx(180 * 16 / 3600)
    on_cpu = report.evaluation_cost(timed, gpus=0, threads=2, price_per_gpu_hour=3.0)
    assert on_cpu["gpu_hours"] is None and on_cpu["cost"] is None and on_cpu["cpu_hours"] == pytest.approx(0.1)
    assert "0.1 CPU-h" in report.evaluation_line(on_cpu)

    rows = build_rows(METHODS, evals, train, price_per_gpu_hour=3.0)
    paths = write_reports(ExperimentDir(tmp_path), rows, "with eval cost", evaluation=ev)
    assert json.loads(paths["summary"].read_text())["evaluation"] == ev
    line = "Evaluation job: 3 model(s) loaded and scored in 180 s (0.1 GPU-h, cost 0.3)"
    assert line in paths["markdown"].read_text() and line in paths["html"].read_text()


def test_chart_axis_choice(results):
    evals, train = results
    rows = build_rows(METHODS, evals, train)
    assert report.chart_axis(rows)[0] == "gpu_hours"
    cpu_train = {k: dict(v, gpu_hours=None) for k, v in train.items()}
    assert report.chart_axis(build_rows(METHODS, evals, cpu_train))[0] == "cpu_hours"


def test_chart_with_nothing_evaluated(tmp_path):
    rows = build_rows([("lora", "lora")], {}, {"lora": {"status": "failed", "error": "x"}})
    paths = write_reports(ExperimentDir(tmp_path), rows, "all failed")
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["summary"].read_text())["rows"][0]["status"] == "failed"


def test_report_module_is_light():
    # The login node imports this module: no torch, no matplotlib until a chart is drawn.
    import subprocess

    code = "import sys, launch.results.report; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]


def test_wilson_interval_contains_the_observed_proportion_at_the_extremes():
    for n in (1, 7, 96, 129, 1000):
        for correct in (0, n):
            lo, hi = wilson_interval(correct, n)
            assert lo <= correct / n <= hi, (correct, n, lo, hi)
    assert wilson_interval(129, 129)[1] == 1.0 and wilson_interval(0, 129)[0] == 0.0


def test_slurm_accounting_replaces_the_local_cost_and_names_the_failure(results):
    """On Slurm, sacct's figures (every attempt) replace each job's own estimate; a job that
    did not complete keeps its row with the Slurm state and reason."""
    from launch.run.slurm import parse_sacct

    evals, train = results
    out = "\n".join(
        [
            "101|REQUEUED|600|billing=2,cpu=2,gres/gpu=2,mem=8G,node=1|2026-01-01T10:00:00|2026-01-01T10:05:00|2026-01-01T10:15:00|n1|0:0|None",
            "101|COMPLETED|1200|billing=2,cpu=2,gres/gpu=2,mem=8G,node=1|2026-01-01T10:15:00|2026-01-01T10:16:00|2026-01-01T10:36:00|n2|0:0|BeginTime",
            "102|OUT_OF_MEMORY|30|billing=1,cpu=1,gres/gpu=1,node=1|2026-01-01T10:00:00|2026-01-01T10:00:10|2026-01-01T10:00:40|n1|0:125|None",
        ]
    )
    acc = parse_sacct(out)
    assert acc["101"].gpu_hours == (2 * 600 + 2 * 1200) / 3600
    assert acc["101"].restarts == 1 and acc["101"].queue_wait_s == 300 and acc["101"].state == "COMPLETED"
    assert acc["102"].ended and acc["102"].state == "OUT_OF_MEMORY"
    accounts = {"full": acc["101"].summary(2.5), "lora": acc["102"].summary(2.5)}
    train = dict(train)
    train["lora"] = {"method": "lora", "status": "missing"}
    rows = {
        r["method"]: r
        for r in build_rows(
            [("full", "full_sft"), ("lora", "lora")], evals, train, price_per_gpu_hour=2.5, slurm_accounts=accounts
        )
    }
    sft = rows["full"]
    assert (
        sft["cost_source"] == "sacct" and sft["gpu_hours"] == pytest.approx(1.0) and sft["cost"] == pytest.approx(2.5)
    )
    assert sft["restarts"] == 1 and sft["attempts"] == 2
    lora = rows["lora"]
    assert lora["status"] == "missing: Slurm OUT_OF_MEMORY (exit 0:125)"
    assert lora["slurm_state"] == "OUT_OF_MEMORY" and lora["gpu_hours"] == pytest.approx(30 / 3600, abs=1e-6)
