"""What the report says about the methods: rows over seeds, paired tests, letter priors, the frontier.

The report's statistics, from the per-cell rows (:func:`launch.results.report.build_rows`) and each scored
model's per-question predictions. Every experiment gets them; without a sweep each method is one
cell, its row has n = 1 and its comparisons are McNemar's exact test.

- **Rows over seeds** (:func:`group_rows`): one per method and grid point (:func:`launch.spec.sweep.groups`),
  with mean ± sd and the 95% t interval over its scored cells of accuracy, GPU-hours (CPU-hours
  on a CPU-only run) and tokens/s (:func:`launch.results.stats.spread`), ``n`` scored of ``cells``, and
  every cell that was not scored with its status (its Slurm state): a failed cell lowers ``n``,
  the others still aggregate.
- **Paired comparisons** (:func:`comparisons`): every row against ``base``, and rows of different
  methods against each other, on the same questions; McNemar's exact test for one run a side, the
  question-and-seed bootstrap otherwise (:func:`launch.results.stats.compare_family`); Holm's adjustment
  over the whole family. When rows of different methods make more than :data:`MAX_BETWEEN` pairs,
  only each method's best row (by mean accuracy) is compared across methods, and the note says
  that this choice was made on the same questions (post hoc).
- **Letter priors** (:func:`letters`): each row's predicted-letter shares beside the gold
  answers' and a majority-letter baseline row (always the training split's most common answer),
  with a note for a row whose answers collapse onto one letter.
- **The frontier** (:func:`frontier`): the cells no other cell beats on both accuracy and cost.

Standard library only, like :mod:`launch.results.stats` (the login node and the evaluation job build it).
"""

from __future__ import annotations

import typing as tp

from launch.results import stats
from launch.spec.sweep import Cell, groups

Row = dict[str, tp.Any]

MAX_BETWEEN = 45
"""Most pairs of rows of different methods compared; beyond it, each method's best row only. 45 pairs of
3-seed rows take about 2 s; a report must build in seconds also for a sweep of hundreds of cells."""

ALPHA = 0.05
"""Significance level of every comparison, after Holm's adjustment."""


def spread_dict(s: stats.Spread) -> dict[str, tp.Any]:
    """A :class:`~launch.results.stats.Spread` as ``summary.json`` stores it."""
    return {"n": s.n, "mean": s.mean, "sd": s.sd, "lo": s.lo, "hi": s.hi}


# --------------------------------------------------------------------------- rows over seeds


def group_rows(cells: tp.Sequence[Cell], rows: tp.Mapping[str, Row], cost_key: str) -> list[Row]:
    """One row per method and grid point, aggregating its cells over seeds.

    Parameters
    ----------
    cells:
        Every cell of the experiment (:func:`launch.spec.sweep.cells`).
    rows:
        The per-cell report rows by address (``accuracy``, ``gpu_hours``, ``tokens_per_s``, ``status``...).
    cost_key:
        ``gpu_hours`` or ``cpu_hours``: the cost the chart and the table show.
    """
    out = []
    for label, members in groups(cells).items():
        cell_rows = [rows.get(c.id, {}) for c in members]
        scored = [r for r in cell_rows if r.get("accuracy") is not None]
        out.append(
            {
                "group": label,
                "method": members[0].method,
                "kind": members[0].config.kind,
                "point": dict(members[0].point),
                "cells": [c.id for c in members],
                "n": len(scored),
                "accuracy": spread_dict(stats.spread(r["accuracy"] for r in scored)),
                "cost_key": cost_key,
                "cost": spread_dict(stats.spread(r.get(cost_key) for r in scored)),
                "tokens_per_s": spread_dict(stats.spread(r.get("tokens_per_s") for r in scored)),
                "not_scored": [
                    {"cell": c.id, "status": r.get("status") or "missing"}
                    for c, r in zip(members, cell_rows)
                    if r.get("accuracy") is None
                ],
            }
        )
    return out


def totals(rows: tp.Iterable[Row]) -> dict[str, tp.Any]:
    """The experiment's training cost: the sum over its cells' rows (each from sacct on Slurm)."""
    cells = [r for r in rows if r.get("kind") != "base"]

    def total(key: str) -> float | None:
        values = [r[key] for r in cells if isinstance(r.get(key), (int, float))]
        return round(sum(values), 6) if values else None

    return {
        "cells": len(cells),
        "gpu_hours": total("gpu_hours"),
        "cpu_hours": total("cpu_hours"),
        "cost": total("cost"),
        "cost_source": sorted({str(r.get("cost_source")) for r in cells if r.get("cost_source")}),
    }


# --------------------------------------------------------------------------- paired comparisons


def _pairs(groups_: list[Row], predicted: tp.Collection[str]) -> tuple[list[tuple[str, str]], str]:
    """The family of comparisons: every scored row against base, rows of different methods against
    each other (each method's best row only, past :data:`MAX_BETWEEN` pairs); and what the note says.

    ``predicted``: the rows (and ``base``) whose predictions were read; a row without them is left out.
    """
    usable = [g for g in groups_ if g["n"] and g["group"] in predicted]
    pairs = [(g["group"], "base") for g in usable] if "base" in predicted else []
    between = [
        (b["group"], a["group"]) for i, a in enumerate(usable) for b in usable[i + 1 :] if a["method"] != b["method"]
    ]
    note = ""
    if len(between) > MAX_BETWEEN:
        best: dict[str, Row] = {}
        for g in usable:  # the first row of the highest mean accuracy, per method
            if g["method"] not in best or g["accuracy"]["mean"] > best[g["method"]]["accuracy"]["mean"]:
                best[g["method"]] = g
        tops = list(best.values())
        between = [(b["group"], a["group"]) for i, a in enumerate(tops) for b in tops[i + 1 :]]
        note = (
            " Between methods, only each method's best row (highest mean accuracy) is compared: a choice "
            "made on these same questions, so those p-values are somewhat optimistic."
        )
    return pairs + between, note


def comparisons(
    groups_: list[Row], runs: tp.Mapping[str, tp.Sequence[stats.Run]], resamples: int = stats.DEFAULT_RESAMPLES
) -> tuple[list[dict[str, tp.Any]], str]:
    """Every paired comparison of the family, Holm-adjusted, and the note that explains them.

    ``runs``: row name (``base`` and each group) -> the correctness of each of its scored cells.
    """
    family, extra = _pairs(groups_, runs.keys())
    if not family:
        return [], ""
    found = stats.with_holm(stats.compare_family(runs, family, resamples=resamples))
    tests = sorted({c.test for c in found})
    how = {
        "mcnemar": "McNemar's exact test for single runs",
        "bootstrap": f"a paired bootstrap over questions and seeds ({resamples:,} replicates) for rows of seeds",
    }
    note = (
        f"Paired comparisons on the same {found[0].n} questions: {'; '.join(how[t] for t in tests)}. "
        f"Differences in accuracy points with their 95% interval; p-values Holm-adjusted over the "
        f"{len(found)} comparison(s), significant at {ALPHA}.{extra}"
    )
    out = []
    for c in found:
        out.append(
            {
                "a": c.a,
                "b": c.b,
                "diff": c.diff,
                "lo": c.lo,
                "hi": c.hi,
                "p": c.p,
                "p_holm": c.p_holm,
                "test": c.test,
                "runs": list(c.runs),
                "significant": c.significant(ALPHA),
                "text": stats.format_comparison(c, ALPHA),
            }
        )
    return out, note


# --------------------------------------------------------------------------- letters


def letters(
    groups_: list[Row],
    predicted: tp.Mapping[str, dict[str, int]],
    baseline: stats.Baseline | None,
    gold: dict[str, int],
) -> dict[str, tp.Any]:
    """Predicted-letter counts per row (its cells summed), the gold answers', the majority baseline, notes.

    ``predicted``: model address (``base``, each cell) -> :func:`launch.results.stats.letter_counts` of its predictions.
    """
    per_row: dict[str, dict[str, int]] = {}
    if "base" in predicted:
        per_row["base"] = dict(predicted["base"])
    for g in groups_:
        summed = dict.fromkeys((*stats.LETTERS, "none"), 0)
        for cell in g["cells"]:
            for k, v in predicted.get(cell, {}).items():
                summed[k] += v
        if sum(summed.values()):
            per_row[g["group"]] = summed
    notes = [note for name, counts in per_row.items() if (note := stats.letter_prior_note(name, counts, gold))]
    out: dict[str, tp.Any] = {"rows": per_row, "gold": gold, "notes": notes}
    if baseline is not None:
        n = len(baseline.correct)
        out["baseline"] = {
            "letter": baseline.letter,
            "accuracy": baseline.accuracy,
            "ci95": list(stats.wilson_interval(sum(baseline.correct), n)),
            "train_counts": baseline.train_counts,
        }
    return out


# --------------------------------------------------------------------------- frontier


def frontier(rows: tp.Iterable[Row], cost_key: str) -> list[str]:
    """The addresses of the cells on the accuracy-versus-cost Pareto frontier, cheapest first (base at cost 0)."""
    points = [
        (r["method"], 0.0 if r.get("kind") == "base" else r.get(cost_key), r.get("accuracy"))
        for r in rows
        if r.get("accuracy") is not None
    ]
    return [p.label for p in stats.pareto_front(points)]
