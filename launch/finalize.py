"""Finalise an experiment once its models are scored: cost from Slurm, the report rows, the report files.

The second step of the evaluation job (:class:`launch.jobs.EvalJob`: score with
:mod:`train.evaluate`, finalise here, log with :mod:`train.tracking`). It runs on the compute
node but is login-side code: ``sacct``, the experiment's profile and the report, no torch.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import costcheck, report, slurm
from launch.config import ExperimentConfig
from launch.expdir import EvalResult, ExperimentDir


@dataclass
class Finalized:
    """What :func:`main` wrote: the rows, the report files and the evaluation's own cost."""

    rows: list[dict]
    paths: dict[str, Path]
    """``summary``, ``markdown``, ``chart``, ``html``."""
    evaluation: dict
    """The evaluation job's own cost (:func:`launch.report.evaluation_cost`)."""
    columns: list[str] = field(default_factory=lambda: [key for key, _ in report.COLUMNS])
    """The comparison table's columns, in display order."""


def main(
    cfg: ExperimentConfig,
    exp: ExperimentDir,
    results: tp.Mapping[str, EvalResult],
    *,
    n_eval: int,
    gpus: int,
    threads: int,
) -> Finalized:
    """Write ``summary.json``, ``report.md``, ``report.html`` and ``chart.png`` from the scored ``results``.

    Parameters
    ----------
    results:
        Model name (``base`` included) -> its result, for every model scored.
    n_eval:
        Questions in the eval split.
    gpus, threads:
        What the evaluation job holds (``gpus`` 0 on CPU): the evaluation's own cost.
    """
    metrics = {m.name: exp.method(m.name).read_metrics().to_dict() for m in cfg.methods}
    profile = exp.load_profile()
    price = profile.price_per_gpu_hour if profile is not None else None
    # On Slurm the training jobs' cost comes from sacct (every attempt), not their own timers.
    accounts, cost_note = slurm.experiment_accounts(exp.read_manifest(), price)
    scored = {name: r.to_dict() for name, r in results.items()}
    rows = report.build_rows(
        [(m.name, m.kind) for m in cfg.methods], scored, metrics, price_per_gpu_hour=price, slurm_accounts=accounts
    )
    report.add_scoring_cost(rows, scored, gpus, threads, price)  # few-shot: its price is its scoring
    print(f"[eval] cost source: {cost_note}", flush=True)
    evaluation = report.evaluation_cost(scored, gpus, threads, price)
    print(f"[eval] {report.evaluation_line(evaluation)}", flush=True)
    # Forecast against actual, and the site's calibration fed with what this experiment measured.
    checked = costcheck.after_run(cfg, exp, rows, metrics, accounts, evaluation, scored)
    if checked is not None:
        print(f"[eval] {costcheck.format_check(checked)}", flush=True)
    paths = report.write_reports(
        exp,
        rows,
        title=f"{cfg.name}: accuracy vs cost",
        evaluation=evaluation,
        extra={"experiment": exp.name, "eval_mode": cfg.eval.mode, "n_eval": n_eval},
        forecast_check=checked,
    )
    return Finalized(rows, paths, evaluation)
