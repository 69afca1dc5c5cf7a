"""The report of a sweep, from made-up scores: rows over seeds, paired comparisons with Holm, a failed
cell's row with its Slurm state, letter priors beside the majority baseline, the frontier, the total."""

from __future__ import annotations

import collections
import re
import statistics

import pytest

from launch import cli
from launch.results import finalize
from launch.run import slurm
from launch.store.expdir import EvalResult, ExperimentDir, TrainMetrics
from launch.store.fsio import read_json
from support.experiments import classic_smoke, new_experiment

WRONG = {"A": "B", "B": "C", "C": "D", "D": "A"}


def _score(exp: ExperimentDir, name: str, gold: list[str], right: int | None, always: str | None = None) -> EvalResult:
    """Predictions of a model right on the first ``right`` questions (or always answering ``always``)."""
    preds = [always if always else (g if i < right else WRONG[g]) for i, g in enumerate(gold)]
    rows = [{"index": i, "gold": g, "pred": p, "correct": p == g} for i, (g, p) in enumerate(zip(gold, preds))]
    exp.eval.write_predictions(name, rows)
    result = EvalResult.from_counts(name, sum(r["correct"] for r in rows), len(rows), "loglik")
    exp.eval.write_result(result)
    return result


def _account(job_id: str, gpu_hours: float, state: str = "COMPLETED") -> dict:
    failed = state != "COMPLETED"
    return {
        "job_id": job_id,
        "slurm_state": state,
        "slurm_exit_code": "1:0" if failed else "0:0",
        "slurm_reason": "NonZeroExitCode" if failed else None,
        "attempts": 1,
        "restarts": 0,
        "gpu_hours": gpu_hours,
        "cpu_hours": gpu_hours,
        "cost": gpu_hours * 2.0,
        "cost_source": "sacct",
    }


@pytest.fixture
def sweep_exp(tmp_path, monkeypatch):
    cfg, exp = new_experiment([f"output_dir={tmp_path}", "sweep.seeds=[0, 1, 2]"], classic_smoke(tmp_path))
    from launch.questions.data import load_jsonl_questions

    gold = [q.solution for q in load_jsonl_questions(exp.data.eval_file)]
    n = len(gold)
    right = {"full_sft[0]": n - 3, "full_sft[1]": n - 5, "full_sft[2]": n - 4, "lora[0]": 60, "lora[1]": 66}
    right |= {"lora[2]": 63, "qlora[0]": 50, "base": 30}
    results = {name: _score(exp, name, gold, k) for name, k in right.items()}
    results["qlora[2]"] = _score(exp, "qlora[2]", gold, None, always="C")
    accounts = {}
    for i, name in enumerate(c for c in right if c != "base"):
        exp.method(name).write_metrics(TrainMetrics(name, status="completed", tokens_per_s=1000.0 + i, steps=3))
        accounts[name] = _account(f"50{i}", 0.01 * (i + 1))
    exp.method("qlora[2]").write_metrics(TrainMetrics("qlora[2]", status="completed", tokens_per_s=900.0, steps=3))
    accounts["qlora[2]"] = _account("520", 0.02)
    exp.method("qlora[1]").write_metrics(TrainMetrics("qlora[1]", status="failed", error="RuntimeError: boom"))
    accounts["qlora[1]"] = _account("510", 0.005, "FAILED")
    monkeypatch.setattr(slurm, "experiment_accounts", lambda manifest, price, timeout_s=60: (accounts, "sacct"))
    return cfg, exp, results, gold, accounts


def test_sweep_report_aggregates_seeds_compares_rows_and_keeps_the_failed_cell(sweep_exp, capsys):
    cfg, exp, results, gold, accounts = sweep_exp
    n = len(gold)
    done = finalize.main(cfg, exp, results, n_eval=n, gpus=0, threads=1)
    summary = read_json(exp.summary_file)
    groups = {g["group"]: g for g in summary["groups"]}
    assert list(groups) == ["full_sft", "lora", "qlora"]
    lora = [k / n for k in (60, 66, 63)]
    assert groups["lora"]["n"] == 3 and groups["lora"]["accuracy"]["mean"] == pytest.approx(statistics.mean(lora))
    assert groups["lora"]["accuracy"]["sd"] == pytest.approx(statistics.stdev(lora))
    half = 4.302653 * statistics.stdev(lora) / 3**0.5  # t(0.975, 2 df)
    assert groups["lora"]["accuracy"]["lo"] == pytest.approx(statistics.mean(lora) - half, abs=1e-6)
    assert groups["lora"]["cost"]["mean"] == pytest.approx(statistics.mean([0.04, 0.05, 0.06]))
    # The failed cell: its own row with the Slurm state, and the method's other cells still aggregated.
    qlora = groups["qlora"]
    assert (qlora["n"], qlora["cells"]) == (2, ["qlora[0]", "qlora[1]", "qlora[2]"])
    failed = "failed: Slurm FAILED (exit 1:0, NonZeroExitCode)"
    assert qlora["not_scored"] == [{"cell": "qlora[1]", "status": failed}]
    row = next(r for r in summary["rows"] if r["method"] == "qlora[1]")
    assert (row["status"], row["accuracy"], row["group"], row["seed"]) == (failed, None, "qlora", 1)
    # Every row against base, and rows of different methods against each other; Holm over the 6.
    pairs = [(c["a"], c["b"]) for c in summary["comparisons"]]
    assert pairs == [
        ("full_sft", "base"),
        ("lora", "base"),
        ("qlora", "base"),
        ("lora", "full_sft"),
        ("qlora", "full_sft"),
        ("qlora", "lora"),
    ]
    assert "Holm-adjusted over the 6 comparison(s)" in summary["comparison_note"]
    line = re.compile(
        r"^(\w+) vs (\w+): [+-]?\d+\.\d pts \[-?\d+\.\d, -?\d+\.\d\], p (=|<) [\d.e-]+, (not )?significant$"
    )
    for c in summary["comparisons"]:
        assert line.match(c["text"]), c["text"]
        assert c["test"] == "bootstrap" and c["p_holm"] >= c["p"] and c["significant"] == (c["p_holm"] <= 0.05)
    lora_vs_full = next(c for c in summary["comparisons"] if c["a"] == "lora" and c["b"] == "full_sft")
    full = [(n - k) / n for k in (3, 5, 4)]
    assert lora_vs_full["diff"] == pytest.approx(statistics.mean(lora) - statistics.mean(full))
    assert lora_vs_full["significant"] and lora_vs_full["hi"] < 0
    # Letters: each row's predictions beside the gold answers and the majority-letter baseline.
    letters = summary["letters"]
    train = collections.Counter(q["solution"] for q in _jsonl(exp.data.train_file))
    top = max("ABCD", key=lambda x: (train[x], -ord(x)))
    assert letters["baseline"]["letter"] == top
    assert letters["baseline"]["accuracy"] == pytest.approx(sum(g == top for g in gold) / n)
    assert letters["gold"] == {**dict.fromkeys("ABCD", 0), **collections.Counter(gold), "none": 0}
    assert letters["rows"]["qlora"]["C"] == n + sum(1 for i, g in enumerate(gold) if (g if i < 50 else WRONG[g]) == "C")
    assert any(note.startswith("qlora answered C for") for note in letters["notes"])
    # Cost: the report's total is the sum of every cell's sacct GPU-hours, the failed cell's included.
    assert summary["total"]["gpu_hours"] == pytest.approx(sum(a["gpu_hours"] for a in accounts.values()))
    assert summary["frontier"][0] == "base" and done.analysis["frontier"] == summary["frontier"]
    # The files and the command print all of it.
    md = exp.report_md.read_text()
    assert "## Over seeds, per method and grid point" in md and lora_vs_full["text"] in md
    assert f"majority letter ({top}: the training split's most common answer)" in md
    assert cli.main(["report", str(exp)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^lora +3/3 +0\.488 ± 0\.023 \[0\.431, 0\.546\] ", out, re.M)
    assert re.search(rf"^qlora +2/3 .* {re.escape(f'qlora[1]: {failed}')}$", out, re.M)
    assert lora_vs_full["text"] in out and "Training, all 9 cell(s): 0.305 GPU-h, cost 0.61 (sacct)." in out
    assert exp.chart_file.read_bytes()[:4] == b"\x89PNG"


def test_without_a_sweep_each_method_is_one_row_and_mcnemar_compares_them(tmp_path, monkeypatch):
    cfg, exp = new_experiment([f"output_dir={tmp_path}"], classic_smoke(tmp_path))
    from launch.questions.data import load_jsonl_questions

    gold = [q.solution for q in load_jsonl_questions(exp.data.eval_file)]
    results = {name: _score(exp, name, gold, k) for name, k in {"base": 30, "full_sft": 100, "lora": 70}.items()}
    for name in ("full_sft", "lora"):
        exp.method(name).write_metrics(TrainMetrics(name, status="completed", cpu_hours=0.01, steps=3))
    monkeypatch.setattr(slurm, "experiment_accounts", lambda manifest, price, timeout_s=60: (None, "local run"))
    finalize.main(cfg, exp, results, n_eval=len(gold), gpus=0, threads=1)
    summary = read_json(exp.summary_file)
    assert [r["method"] for r in summary["rows"]] == ["base", "full_sft", "lora", "qlora"]
    assert [(g["group"], g["n"]) for g in summary["groups"]] == [("full_sft", 1), ("lora", 1), ("qlora", 0)]
    tests = {(c["a"], c["b"]): c["test"] for c in summary["comparisons"]}
    assert tests == {("full_sft", "base"): "mcnemar", ("lora", "base"): "mcnemar", ("lora", "full_sft"): "mcnemar"}
    lora_vs_full = next(c for c in summary["comparisons"] if (c["a"], c["b"]) == ("lora", "full_sft"))
    # McNemar by hand: lora is right on the first 70, full_sft on the first 100: 30 discordant, all full_sft's.
    assert lora_vs_full["p"] == pytest.approx(2 / 2**30)
    assert lora_vs_full["text"].startswith(f"lora vs full_sft: {-3000 / len(gold):.1f} pts [")


def _jsonl(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
