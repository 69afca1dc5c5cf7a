"""The evaluation job's W&B logging: the comparison run, and each trained model's scores in its own run.

The third step of the evaluation job (:class:`launch.jobs.EvalJob`: score, finalise, log), on top of
:class:`train.tracking.Tracker` (which scrubs every secret before W&B sees anything).
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

from train.tracking import Tracker

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.spec.config import TrackingConfig
    from launch.store.expdir import ExperimentDir


def log_comparison(
    tracking: TrackingConfig,
    exp: ExperimentDir,
    rows: list[dict],
    columns: list[str],
    chart: Path,
    evaluation: dict | None = None,
    analysis: dict | None = None,
) -> None:
    """One W&B run for the evaluation, and each trained model's scores into its own training run.

    The evaluation run holds per-model accuracy, the comparison table and the chart PNG; with the
    report's ``analysis`` (:func:`launch.results.finalize.analyse`) also the table per method and grid point
    over seeds, the paired comparisons, and accuracy against cost as W&B scatter charts (every cell,
    and the Pareto frontier) that the UI draws from tables. Then each training run (one per cell, id
    from :meth:`~launch.store.expdir.ExperimentDir.wandb_run_id`) is reopened to put its accuracy, interval
    and cost in its summary, so W&B's runs table, scatter and parallel-coordinates panels compare
    cells with no custom code. Online the reopening resumes the run (``resume="allow"``): the server's
    summary keeps the training's keys and gains these. Offline it is a second directory with the same
    run id, which ``wandb sync`` uploads after the training's (docs/sweeps.md, "W&B": what was verified).
    """
    tracker = Tracker.start(
        tracking,
        run_dir=exp.root,
        name="eval",
        group=exp.name,
        job_type="eval",
        config={"experiment": exp.name},
        run_id=f"{exp.name}-eval",
    )
    if "variant" not in columns and any("variant" in r for r in rows):  # lora+dora, lora(init=pissa), ...
        columns = [*columns, "variant"]
    try:
        tracker.log_table("comparison", rows, columns)
        tracker.log_image("accuracy_vs_cost", chart)
        tracker.summary({f"accuracy/{r['method']}": r["accuracy"] for r in rows if r.get("accuracy") is not None})
        if evaluation:
            tracker.summary({f"evaluation/{k}": v for k, v in evaluation.items() if isinstance(v, (int, float))})
        if analysis:
            _log_analysis(tracker, rows, analysis)
        # While the evaluation run is open the W&B service stays up for the runs reopened here.
        for row in rows:
            if row.get("kind") != "base" and row.get("accuracy") is not None and row.get("cost_source") != "untrained":
                _score_training_run(tracking, exp, row)
    finally:
        tracker.finish()


def _log_analysis(tracker: Tracker, rows: list[dict], analysis: dict) -> None:
    """The rows over seeds, the comparisons and the two scatter charts (cells, frontier)."""
    groups = analysis.get("groups") or []
    cost_key = groups[0]["cost_key"] if groups else "gpu_hours"
    flat = [
        {
            "group": g["group"],
            "method": g["method"],
            "n": g["n"],
            "cells": len(g["cells"]),
            **{f"accuracy_{k}": g["accuracy"][k] for k in ("mean", "sd", "lo", "hi")},
            **{f"{cost_key}_{k}": g["cost"][k] for k in ("mean", "sd")},
            **{f"tokens_per_s_{k}": g["tokens_per_s"][k] for k in ("mean", "sd")},
            **{f"point/{k}": v for k, v in g["point"].items()},
        }
        for g in groups
    ]
    if flat:
        tracker.log_table("per_method_over_seeds", flat, list(dict.fromkeys(k for row in flat for k in row)))
        tracker.summary({f"accuracy_mean/{g['group']}": g["accuracy"]["mean"] for g in groups})
    compared = analysis.get("comparisons") or []
    if compared:
        columns = ["a", "b", "diff", "lo", "hi", "p", "p_holm", "test", "significant", "text"]
        tracker.log_table("paired_comparisons", compared, columns)
    front = set(analysis.get("frontier") or [])
    points = [
        {
            "model": r["method"],
            "method": r.get("group", r["method"]).split(" (")[0],
            "seed": r.get("seed"),
            cost_key: 0.0 if r.get("kind") == "base" else r.get(cost_key),
            "accuracy": r["accuracy"],
            "frontier": r["method"] in front,
        }
        for r in rows
        if r.get("accuracy") is not None and (r.get("kind") == "base" or r.get(cost_key) is not None)
    ]
    columns = ["model", "method", "seed", cost_key, "accuracy", "frontier"]
    tracker.log_scatter("accuracy_vs_cost_cells", points, columns, cost_key, "accuracy vs cost, every model")
    on_front = sorted((p for p in points if p["frontier"]), key=lambda p: p[cost_key])
    tracker.log_scatter("accuracy_vs_cost_frontier", on_front, columns, cost_key, "Pareto frontier")


def _score_training_run(tracking: TrackingConfig, exp: ExperimentDir, row: dict) -> None:
    """Reopen a cell's (or method's) training run by its id and put its scores in its summary."""
    run = Tracker.start(
        tracking,
        run_dir=exp.root,
        name=row["method"],
        group=exp.name,
        job_type="train",
        config=None,
        run_id=exp.wandb_run_id(row["method"]),
    )
    ci = row.get("ci95") or [None, None]
    values = {
        "eval/accuracy": row["accuracy"],
        "eval/ci95_lo": ci[0],
        "eval/ci95_hi": ci[1],
        "eval/n": row.get("n"),
        "eval/gpu_hours": row.get("gpu_hours"),
        "eval/cpu_hours": row.get("cpu_hours"),
        "eval/cost_source": row.get("cost_source"),
    }
    run.summary({k: v for k, v in values.items() if v is not None})
    run.finish()
