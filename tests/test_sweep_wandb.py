"""W&B for a sweep, offline, read back from the run files: one run per cell (grouped by experiment,
tagged with method, seed and grid point), its scores added to its summary by the evaluation job
(a second directory of the same run id, which ``wandb sync`` applies after the first), and the
evaluation run's tables and native scatter charts."""

from __future__ import annotations

import pytest

from launch.results import finalize
from launch.run import slurm
from launch.store.expdir import EvalResult, TrainMetrics
from support.experiments import new_experiment
from support.wandb_offline import find_runs, merged, read_run


def _write_scores(exp, gold: list[str], right: dict[str, int]) -> dict[str, EvalResult]:
    out = {}
    for name, k in right.items():
        rows = [{"index": i, "gold": g, "pred": g if i < k else "A" if g != "A" else "B"} for i, g in enumerate(gold)]
        for r in rows:
            r["correct"] = r["pred"] == r["gold"]
        exp.eval.write_predictions(name, rows)
        out[name] = EvalResult.from_counts(name, sum(r["correct"] for r in rows), len(rows), "loglik")
        exp.eval.write_result(out[name])
    return out


def test_each_cell_is_one_run_and_gets_its_scores_in_its_summary(tmp_path, tiny_model, monkeypatch):
    from launch.questions.data import load_jsonl_questions
    from train import wandb_report
    from train.run import TrainingRun

    overrides = [f"output_dir={tmp_path}", f"model.name_or_path={tiny_model}", "tracking.mode=offline"]
    overrides += ["sweep.seeds=[3, 4]", "sweep.grid.methods.lora.lora.r=[4]"]
    cfg, exp = new_experiment(overrides)
    for i, address in enumerate(("lora[0]", "lora[1]")):
        run = TrainingRun(cfg, address, exp.root, kind="lora", threads=1)  # what a cell's training job opens
        run.tracker.log({"train/loss": 2.0 - i}, step=1)
        run.tracker.summary({"final_loss": 1.0 - i / 10})
        run.tracker.finish()
        exp.method(address).write_metrics(TrainMetrics(address, "lora", "completed", cpu_hours=0.01 * (i + 1)))
    gold = [q.solution for q in load_jsonl_questions(exp.data.eval_file)]
    results = _write_scores(exp, gold, {"base": 20, "lora[0]": 60, "lora[1]": 70})
    monkeypatch.setattr(slurm, "experiment_accounts", lambda manifest, price, timeout_s=60: (None, "local run"))
    done = finalize.main(cfg, exp, results, n_eval=len(gold), gpus=0, threads=1)
    wandb_report.log_comparison(
        cfg.tracking, exp, done.rows, done.columns, done.paths["chart"], done.evaluation, done.analysis
    )

    by_id: dict[str, list] = {}
    for path in find_runs(exp.wandb_dir):  # in start order
        run = read_run(path)
        by_id.setdefault(run.run_id, []).append(run)
    assert set(by_id) == {f"{exp.name}-lora-0", f"{exp.name}-lora-1", f"{exp.name}-eval"}
    attempts = by_id[exp.wandb_run_id("lora[1]")]
    assert len(attempts) == 2  # the training job's directory, then the evaluation's reopening
    first, scored = attempts
    assert (first.name, first.group, first.job_type) == ("lora[1]", exp.name, "train")
    assert first.tags == ["method:lora", "seed:4", "lora.r:4"]
    assert first.config["cell"] == {"method": "lora", "index": 1, "seed": 4, "lora.r": 4}
    assert "eval/accuracy" not in first.summary and "final_loss" not in scored.summary
    cell = merged(attempts)  # the two in start order, later keys winning (what a resumed run shows)
    row = next(r for r in done.rows if r["method"] == "lora[1]")
    assert cell.summary["eval/accuracy"] == pytest.approx(row["accuracy"]) == pytest.approx(70 / len(gold))
    assert [cell.summary["eval/ci95_lo"], cell.summary["eval/ci95_hi"]] == pytest.approx(row["ci95"])
    assert cell.summary["eval/cpu_hours"] == pytest.approx(0.02) and cell.summary["final_loss"] == pytest.approx(0.9)
    assert cell.tags == first.tags and cell.config["cell"]["seed"] == 4

    (evaluation,) = by_id[f"{exp.name}-eval"]
    groups = evaluation.tables["per_method_over_seeds"]
    row_of = dict(zip(groups["columns"], next(r for r in groups["data"] if r[0] == "lora (lora.r=4)")))
    assert row_of["n"] == 2 and row_of["accuracy_mean"] == pytest.approx(65 / len(gold))
    assert row_of["point/lora.r"] == 4
    compared = evaluation.tables["paired_comparisons"]
    texts = [r[compared["columns"].index("text")] for r in compared["data"]]
    assert any(t.startswith("lora (lora.r=4) vs base: +") for t in texts)
    # Native W&B scatter charts: a panel the UI draws from the table logged beside it.
    for key in ("accuracy_vs_cost_cells", "accuracy_vs_cost_frontier"):
        chart = evaluation.charts[key]
        assert chart["panelDefId"] == "wandb/scatter/v0"
        assert chart["fieldSettings"] == {"x": "cpu_hours", "y": "accuracy"}
        assert f"{key}_table" in evaluation.tables
    cells = evaluation.tables["accuracy_vs_cost_cells_table"]
    assert sorted(r[0] for r in cells["data"]) == ["base", "lora[0]", "lora[1]"]
    assert evaluation.summary["accuracy_mean/lora (lora.r=4)"] == pytest.approx(65 / len(gold))
