"""Finalise an experiment once its models are scored: cost from Slurm, the report rows, the report files.

The second step of the evaluation job (:class:`launch.jobs.EvalJob`: score with
:mod:`train.evaluate`, finalise here, log with :mod:`train.tracking`). It runs on the compute
node but is login-side code: ``sacct``, the experiment's profile and the report, no torch.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch.cost import costcheck
from launch.results import comparison, report, stats
from launch.run import slurm
from launch.spec import sweep
from launch.spec.config import ExperimentConfig
from launch.store.expdir import EvalResult, ExperimentDir, parse_result_ref


@dataclass
class Finalized:
    """What :func:`main` wrote: the rows, the report files and the evaluation's own cost."""

    rows: list[dict]
    """One per model: ``base``, then each cell (each method without a sweep)."""
    paths: dict[str, Path]
    """``summary``, ``markdown``, ``chart``, ``html``."""
    evaluation: dict
    """The evaluation job's own cost (:func:`launch.results.report.evaluation_cost`)."""
    analysis: dict = field(default_factory=dict)
    """Rows over seeds, comparisons, letters, frontier and totals (:func:`analyse`), as in ``summary.json``."""
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
        Model address (``base``, a method, a cell ``lora[3]``) -> its result, for every model scored.
    n_eval:
        Questions in the eval split.
    gpus, threads:
        What the evaluation job holds (``gpus`` 0 on CPU): the evaluation's own cost.
    """
    cells = sweep.cells(cfg)
    metrics = {c.id: _metrics(exp, c) for c in cells}
    profile = exp.load_profile()
    price = profile.price_per_gpu_hour if profile is not None else None
    # On Slurm the training jobs' cost comes from sacct (every attempt of every job a cell ran as).
    accounts, cost_note = slurm.experiment_accounts(exp.read_manifest(), price)
    scored = {name: r.to_dict() for name, r in results.items()}
    rows = report.build_rows(
        [(c.id, c.config.kind) for c in cells], scored, metrics, price_per_gpu_hour=price, slurm_accounts=accounts
    )
    by_id = {c.id: c for c in cells}
    for row in rows:
        if row["method"] in by_id:
            c = by_id[row["method"]]
            row.update(group=c.group, seed=c.seed, point=dict(c.point))
    report.add_scoring_cost(rows, scored, gpus, threads, price)  # few-shot: its price is its scoring
    print(f"[eval] cost source: {cost_note}", flush=True)
    evaluation = report.evaluation_cost(scored, gpus, threads, price)
    print(f"[eval] {report.evaluation_line(evaluation)}", flush=True)
    # Forecast against actual, and the site's calibration fed with what this experiment measured.
    checked = costcheck.after_run(cfg, exp, rows, metrics, accounts, evaluation, scored)
    if checked is not None:
        print(f"[eval] {costcheck.format_check(checked)}", flush=True)
    analysis = analyse(exp, cells, rows, results)
    paths = report.write_reports(
        exp,
        rows,
        title=f"{cfg.name}: accuracy vs cost",
        evaluation=evaluation,
        extra={"experiment": exp.name, "eval_mode": cfg.eval.mode, "n_eval": n_eval},
        forecast_check=checked,
        analysis=analysis,
    )
    return Finalized(rows, paths, evaluation, analysis)


def _metrics(exp: ExperimentDir, cell: sweep.Cell) -> dict:
    """A cell's training record; a kind that trains nothing has none and counts as trained."""
    if not cell.trains:
        return {"status": "completed", "kind": cell.config.kind, "cost_source": "untrained"}
    return exp.method(cell.id).read_metrics().to_dict()


def analyse(
    exp: ExperimentDir, cells: list[sweep.Cell], rows: list[dict], results: tp.Mapping[str, EvalResult]
) -> dict[str, tp.Any]:
    """The report's statistics (:mod:`launch.results.comparison`) from the rows and each scored model's predictions."""
    cost_key, _ = report.chart_axis(rows)
    groups = comparison.group_rows(cells, {r["method"]: r for r in rows}, cost_key)
    predictions = {name: exp.eval.read_predictions(name) for name in results}
    predictions = {name: p for name, p in predictions.items() if p}
    runs = {name: [stats.correct_vector(p)] for name, p in predictions.items() if name == "base"}
    for g in groups:
        found = [stats.correct_vector(predictions[c]) for c in g["cells"] if c in predictions]
        if found:
            runs[g["group"]] = found
    compared, note = comparison.comparisons(groups, runs)
    predicted = {name: stats.letter_counts(r.get("pred") for r in p) for name, p in predictions.items()}
    gold_answers = [q.solution for q in _questions(exp.data.eval_file)]
    train_answers = [q.solution for q in _questions(exp.data.train_file)]
    baseline = stats.majority_baseline(train_answers, gold_answers) if train_answers and gold_answers else None
    out = {
        "groups": groups,
        "comparisons": compared,
        "comparison_note": note,
        "letters": comparison.letters(groups, predicted, baseline, stats.letter_counts(gold_answers)),
        "frontier": comparison.frontier(rows, cost_key),
        "total": comparison.totals(rows),
    }
    continued, continual_note = continual(exp, cells, predictions)
    if continued:  # only experiments with init_from get the keys: others' summary.json is as before
        out.update(continual=continued, continual_note=continual_note)
    return out


CONTINUAL_ROLES = ("continued", "earlier", "base")
"""The models of a continued row's extra scoring (:meth:`launch.store.expdir.EvalDir.continual`)."""


def continual(
    exp: ExperimentDir, cells: list[sweep.Cell], predictions: tp.Mapping[str, list[dict]]
) -> tuple[list[dict[str, tp.Any]], str]:
    """Each continued row (``init_from``) against the result it started from, paired question by question.

    ``forgetting``: the row minus the earlier result on the earlier experiment's eval split (the old
    questions; negative is forgetting), ``gain``: the same on this experiment's split (the new questions).
    Each a :func:`launch.results.stats.compare` of one run a side (McNemar's exact test and its paired interval),
    Holm-adjusted over every such comparison of the report. ``predictions``: the main scoring's, by address.
    """
    entries: list[dict[str, tp.Any]] = []
    found: list[tuple[dict, str, stats.Comparison]] = []
    for c in cells:
        if not c.config.init_from or c.id not in predictions:
            continue
        old, new = exp.eval.continual(c.id, "old"), exp.eval.continual(c.id, "new")
        runs = {
            "old": {role: old.read_predictions(role) for role in CONTINUAL_ROLES},
            "new": {"continued": predictions[c.id], "earlier": new.read_predictions("earlier")},
        }
        runs["new"]["base"] = predictions.get("base") or []
        entry: dict[str, tp.Any] = {"row": c.id, "init_from": c.config.init_from, "from": _earlier_label(c)}
        for split, key in (("old", "forgetting"), ("new", "gain")):
            vectors = {role: stats.correct_vector(p) for role, p in runs[split].items() if p}
            entry[split] = {"n": len(vectors["continued"]) if "continued" in vectors else None}
            entry[split].update({role: sum(v) / len(v) for role, v in vectors.items()})
            if "continued" in vectors and "earlier" in vectors:
                compared = stats.compare(c.id, [vectors["continued"]], entry["from"], [vectors["earlier"]])
                found.append((entry, key, compared))
        entries.append(entry)
    if not found:
        return entries, ""
    adjusted = stats.with_holm([f[2] for f in found])
    for (entry, key, _), cmp in zip(found, adjusted):
        split = "old" if key == "forgetting" else "new"
        entry[key] = {
            "diff": cmp.diff,
            "lo": cmp.lo,
            "hi": cmp.hi,
            "p": cmp.p,
            "p_holm": cmp.p_holm,
            "test": cmp.test,
            "n": cmp.n,
            "significant": cmp.significant(comparison.ALPHA),
            "text": f"{stats.format_comparison(cmp, comparison.ALPHA)} on the {split} questions ({cmp.n})",
        }
    note = (
        "Continual re-training: each continued row against the result it started from (init_from), paired on the "
        "same questions (McNemar's exact test, 95% interval): its change on the earlier experiment's eval split "
        "(the old questions; negative is forgetting) and its gain on this experiment's; p-values Holm-adjusted "
        f"over these {len(found)} comparison(s), significant at {comparison.ALPHA}."
    )
    return entries, note


def _earlier_label(cell: sweep.Cell) -> str:
    """How the report names the result a cell continued from: ``<experiment>:<method>``, or the folder's name."""
    ref = parse_result_ref(cell.config.init_from or "")
    return f"{ref[0].name}:{ref[1]}" if ref else Path(cell.config.init_from or "").name


def _questions(path: Path) -> list:
    from launch.questions.data import load_jsonl_questions

    try:
        return load_jsonl_questions(path)
    except (OSError, ValueError):  # no split on disk (an experiment made by hand): no baseline row
        return []
