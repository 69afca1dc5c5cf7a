"""The comparison report: accuracy (with 95% CI) against cost, one row per method.

Inputs are each method's training record and each model's evaluation result
(:class:`~launch.store.expdir.TrainMetrics` and :class:`~launch.store.expdir.EvalResult`, as dicts:
the rows survive odd or partial records). Outputs, written atomically into the
experiment directory (:class:`~launch.store.expdir.ExperimentDir`): ``summary.json``
(machine-readable), ``report.md``, ``chart.png`` and a self-contained ``report.html``.

Every configured method gets a row, whatever happened to it: a failed or
unevaluated method shows its status and ``-`` for the numbers, so a missing
row never hides a failure.

Standard library only at module level; matplotlib is imported inside
:func:`render_chart` (Agg canvas, no pyplot, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import math
import typing as tp
from pathlib import Path

from launch.cost.costcheck import format_check
from launch.results.stats import format_p, wilson_interval
from launch.store.expdir import ExperimentDir
from launch.store.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text

Row = dict[str, tp.Any]

COLUMNS: list[tuple[str, str]] = [
    ("method", "method"),
    ("kind", "kind"),
    ("accuracy", "accuracy"),
    ("ci95", "95% CI"),
    ("gpu_hours", "GPU-h"),
    ("cpu_hours", "CPU-h"),
    ("cost", "cost"),
    ("wall_s", "wall s"),
    ("tokens_per_s", "tok/s"),
    ("peak_mem_gb", "peak GiB"),
    ("trainable_params", "trainable"),
    ("status", "status"),
    ("restarts", "restarts"),
    ("cost_source", "cost source"),
]
"""(row key, header) of the comparison table, in display order."""

_TEXT_KEYS = {"method", "kind", "status", "cost_source"}  # left-aligned; the rest are numbers

METRIC_NOTE = (
    "Accuracy is exact match on the answer letter (A-D), with a 95% Wilson score "
    "interval. ROUGE is not reported: the reference answer is a single letter, which "
    "has no bigrams (ROUGE-2 is undefined) and whose ROUGE-1/L reduce to this same "
    "exact match."
)


# --------------------------------------------------------------------------- rows


def _num(value: tp.Any) -> float | None:
    """A finite float, or None (JSON has no NaN, and a NaN row reads as data)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(value: tp.Any) -> int | None:
    f = _num(value)
    return int(f) if f is not None else None


def _empty_row(name: str, kind: str) -> Row:
    row: Row = {key: None for key, _ in COLUMNS}
    row.update(method=name, kind=kind)
    return row


def _eval_fields(result: dict | None) -> Row:
    """Accuracy, CI and eval details from one evaluation dict (None: not evaluated)."""
    if not result:
        return {}
    n = _int(result.get("n"))
    correct = _int(result.get("correct"))
    acc = _num(result.get("accuracy"))
    if acc is None and n and correct is not None:
        acc = correct / n
    ci = result.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in (_num(ci[0]), _num(ci[1])):
        ci95 = [_num(ci[0]), _num(ci[1])]
    elif n and correct is not None:
        ci95 = list(wilson_interval(correct, n))
    else:
        ci95 = None
    out: Row = {"accuracy": acc, "ci95": ci95, "n": n, "correct": correct}
    for key in ("parse_failures", "mode", "eval_s", "error", "precision"):
        if key in result:
            out["eval_" + key if key in ("error", "precision") else key] = result[key]
    return out


def _train_fields(metrics: dict, price_per_gpu_hour: float | None) -> Row:
    """Cost and throughput columns from one training ``metrics.json``."""
    gpu_hours = _num(metrics.get("gpu_hours"))
    peak = _num(metrics.get("peak_mem_bytes"))
    out: Row = {
        "gpu_hours": gpu_hours,
        "cpu_hours": _num(metrics.get("cpu_hours")),
        "cost": gpu_hours * price_per_gpu_hour if gpu_hours is not None and price_per_gpu_hour is not None else None,
        "wall_s": _num(metrics.get("wall_s")),
        "tokens_per_s": _num(metrics.get("tokens_per_s")),
        "peak_mem_gb": peak / 2**30 if peak is not None else None,
        "trainable_params": _int(metrics.get("trainable_params")),
        "cost_source": metrics.get("cost_source"),
    }
    if metrics.get("precision"):  # what it computed in (the config's ``auto`` resolved)
        out["precision"] = metrics["precision"]
    if metrics.get("task_losses"):  # multi_task: each task's loss, in summary.json
        out["task_losses"] = metrics["task_losses"]
    if metrics.get("error"):
        out["error"] = str(metrics["error"])
    return out


def _method_status(train_status: str | None, evaluated: bool) -> str:
    """One word for the row: training problems first, then a missing evaluation."""
    status = train_status or "missing"
    if status != "completed":
        return status
    return "completed" if evaluated else "not evaluated"


def _slurm_fields(account: dict) -> Row:
    """Cost columns from Slurm's accounting (see :meth:`launch.run.slurm.JobAccount.summary`): they
    replace the job's own estimate, since they are what the site bills, every attempt included."""
    keys = (
        "gpu_hours",
        "cpu_hours",
        "cost",
        "restarts",
        "cost_source",
        "job_id",
        "slurm_state",
        "slurm_exit_code",
        "slurm_reason",
        "attempts",
        "queue_wait_s",
        "elapsed_s",
        "nodes",
        "gpus",
    )
    return {k: account.get(k) for k in keys}


def build_rows(
    methods: list[tuple[str, str]],
    eval_results: dict[str, dict],
    train_metrics: dict[str, dict],
    price_per_gpu_hour: float | None = None,
    slurm_accounts: dict[str, dict] | None = None,
) -> list[Row]:
    """One report row per model: ``base`` first (when scored), then each method.

    Parameters
    ----------
    methods:
        ``[(name, kind), ...]`` in config order.
    eval_results:
        Model name (``base`` included) -> the evaluation dict
        (``accuracy``, ``ci95``, ``n``, ``correct``, ...).
    train_metrics:
        Method name -> its training record (:meth:`launch.store.expdir.TrainMetrics.to_dict`).
    price_per_gpu_hour:
        Money per GPU-hour; gives the ``cost`` column (null without it, or for
        runs without GPU-hours).
    slurm_accounts:
        Method name -> Slurm accounting summary of its job (``cost_source:
        sacct``); replaces the job's own cost estimate, and names the Slurm state
        and reason of a job that did not complete.

    Returns
    -------
    list of dict
        Keys of :data:`COLUMNS` plus eval details (``n``, ``correct``,
        ``parse_failures``, ``mode``, ``eval_s``) and ``error`` when training
        failed. Nothing is dropped: a failed or unevaluated method keeps its row
        with its status and null numbers.
    """
    rows: list[Row] = []
    if "base" in eval_results:
        row = _empty_row("base", "base")
        # The un-tuned model costs no training: zero, not unknown.
        row.update(gpu_hours=0.0, cpu_hours=0.0, cost=0.0 if price_per_gpu_hour is not None else None)
        row.update(_eval_fields(eval_results["base"]), status="completed", cost_source="untrained")
        rows.append(row)
    for name, kind in methods:
        row = _empty_row(name, kind)
        metrics = train_metrics.get(name) or {"status": "missing"}
        row["variant"] = metrics.get("variant") or kind  # lora+dora, lora(init=pissa); records before it: the kind
        if metrics.get("status") not in (None, "missing"):
            # Failed runs keep their partial cost: the hours were spent all the same.
            row.update(_train_fields(metrics, price_per_gpu_hour))
        account = (slurm_accounts or {}).get(name)
        if account:
            row.update(_slurm_fields(account))
        result = eval_results.get(name)
        row.update(_eval_fields(result))
        row["status"] = _method_status(metrics.get("status"), evaluated=bool(result))
        if account and account.get("slurm_state") not in (None, "COMPLETED"):
            why = ", ".join(
                str(x) for x in (f"exit {account.get('slurm_exit_code')}", account.get("slurm_reason")) if x
            )
            row["status"] = f"{row['status']}: Slurm {account['slurm_state']} ({why})"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- text


def _fmt(key: str, value: tp.Any) -> str:
    """One cell as text; ``-`` for null."""
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{value:.3f}"
    if key == "ci95":
        return f"[{value[0]:.2f}, {value[1]:.2f}]"
    if key in ("gpu_hours", "cpu_hours"):
        return f"{value:.4g}"
    if key == "cost":
        return f"{value:,.2f}"
    if key == "wall_s":
        return f"{value:,.1f}"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    if key == "peak_mem_gb":
        return f"{value:.2f}"
    if key == "trainable_params":
        return f"{value:,}"
    return str(value)


def _cells(rows: list[Row]) -> list[list[str]]:
    # The kind column names the variant (lora+dora, lora(init=pissa)): it is the kind with its LoRA options.
    shown = lambda row, key: row.get("variant") or row.get(key) if key == "kind" else row.get(key)  # noqa: E731
    return [[_fmt(key, shown(row, key)) for key, _ in COLUMNS] for row in rows]


Table = tuple[list[str], list[list[str]], list[bool]]
"""(headers, body rows of cell texts, per column: left-aligned text rather than a right-aligned number)."""


def text_table(table: Table) -> str:
    """A fixed-width text table: a header line, a rule, the rows."""
    headers, body, left = table
    widths = [max(len(c) for c in col) for col in zip(headers, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if lt else c.rjust(w) for c, w, lt in zip(cells, widths, left)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured markdown table."""
    headers, body, left = table
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731 - a cell with '|' would split the row
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(":--" if lt else "--:" for lt in left) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def _rows_table(rows: list[Row]) -> Table:
    return [h for _, h in COLUMNS], _cells(rows), [key in _TEXT_KEYS for key, _ in COLUMNS]


def format_table(rows: list[Row]) -> str:
    """A fixed-width text table for the terminal.

    Numbers are right-aligned; accuracy ``0.625``, CI ``[0.52, 0.71]``, hours to
    4 significant digits, ``-`` for null.
    """
    return text_table(_rows_table(rows))


def format_markdown(rows: list[Row]) -> str:
    """The comparison as a GitHub-flavoured markdown table."""
    return markdown_table(_rows_table(rows))


# --------------------------------------------------------------------------- the analysis


def _spread_text(s: dict | None, digits: int, hours: bool = False) -> str:
    """``0.617 ± 0.021 [0.565, 0.669]``, ``0.617`` (one value), ``-`` (none); hours to 4 significant digits."""
    if not s or s.get("mean") is None:
        return "-"
    num = (lambda x: f"{x:.4g}") if hours else (lambda x: f"{x:,.{digits}f}")  # noqa: E731
    if s.get("sd") is None:
        return num(s["mean"])
    return f"{num(s['mean'])} ± {num(s['sd'])} [{num(s['lo'])}, {num(s['hi'])}]"


def _letters_text(counts: dict | None) -> str:
    """``A 24% B 26% C 30% D 20%`` (and ``none`` when a generation did not parse)."""
    if not counts:
        return "-"
    total = sum(counts.values()) or 1
    keys = [k for k in ("A", "B", "C", "D", "none") if k != "none" or counts.get(k)]
    return " ".join(f"{k} {100 * counts.get(k, 0) / total:.0f}%" for k in keys)


def groups_table(analysis: dict, base: Row | None) -> Table:
    """Per method and grid point over its seeds: mean ± sd [95% CI] of accuracy, cost and tokens/s,
    the predicted letters, and the cells not scored; then base, the majority baseline and the gold letters."""
    groups = analysis.get("groups") or []
    key = groups[0]["cost_key"] if groups else "gpu_hours"
    letters = analysis.get("letters") or {}
    per_row = letters.get("rows") or {}
    headers = ["row", "n", "accuracy (mean ± sd [95% CI])", f"{'GPU-h' if key == 'gpu_hours' else 'CPU-h'}"]
    headers += ["tok/s", "letters", "not scored"]
    body = []
    if base is not None and base.get("accuracy") is not None:
        body.append(["base", "1/1", f"{base['accuracy']:.3f}", "0", "-", _letters_text(per_row.get("base")), ""])
    for g in groups:
        missing = ", ".join(f"{m['cell']}: {m['status']}" for m in g["not_scored"])
        body.append(
            [
                g["group"],
                f"{g['n']}/{len(g['cells'])}",
                _spread_text(g["accuracy"], 3),
                _spread_text(g["cost"], 4, hours=True),
                _spread_text(g["tokens_per_s"], 0),
                _letters_text(per_row.get(g["group"])),
                missing,
            ]
        )
    b = letters.get("baseline")
    if b:
        row = f"majority letter ({b['letter']}: the training split's most common answer)"
        body.append([row, "-", f"{b['accuracy']:.3f}", "0", "-", _letters_text({b["letter"]: 1}), ""])
    if letters.get("gold"):
        body.append(["gold answers", "-", "-", "-", "-", _letters_text(letters["gold"]), ""])
    return headers, body, [True, False, False, False, False, True, True]


def _change_text(c: dict | None) -> str:
    """``-14.0 pts [-20.1, -7.5], p < 0.001`` (the Holm-adjusted p-value), ``-`` without a comparison."""
    if not c:
        return "-"
    p = c["p"] if c.get("p_holm") is None else c["p_holm"]
    return f"{100 * c['diff']:+.1f} pts [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}], {format_p(p)}"


def _accuracies_text(split: dict | None) -> str:
    """``n 129: base 0.264, earlier 0.837 -> 0.705`` for one split of a continued row."""
    if not split or not split.get("n"):
        return "-"
    acc = lambda role: f"{split[role]:.3f}" if split.get(role) is not None else "-"  # noqa: E731
    return f"n {split['n']}: base {acc('base')}, earlier {acc('earlier')} -> {acc('continued')}"


def continual_table(analysis: dict) -> Table:
    """One row per continued row (``init_from``): on the old questions (the earlier experiment's eval split)
    base, the earlier result and the row, and its change (forgetting); the same on the new questions (gain)."""
    headers = ["row", "continued from", "old questions", "change on old (forgetting)", "new questions", "gain on new"]
    body = [
        [
            e["row"],
            e["from"],
            _accuracies_text(e.get("old")),
            _change_text(e.get("forgetting")),
            _accuracies_text(e.get("new")),
            _change_text(e.get("gain")),
        ]
        for e in analysis.get("continual") or []
    ]
    return headers, body, [True, True, True, False, True, False]


def analysis_lines(analysis: dict) -> list[str]:
    """The comparisons, the letter notes and the training total, one line each (the note first)."""
    lines = []
    if analysis.get("comparison_note"):
        lines += [analysis["comparison_note"], *(c["text"] for c in analysis.get("comparisons") or [])]
    lines += list((analysis.get("letters") or {}).get("notes") or [])
    total = analysis.get("total") or {}
    if total.get("cells"):
        hours = total.get("gpu_hours")
        what = f"{hours:.6g} GPU-h" if hours is not None else f"{total.get('cpu_hours') or 0:.6g} CPU-h"
        money = f", cost {total['cost']:.4g}" if total.get("cost") is not None else ""
        source = f" ({', '.join(total['cost_source'])})" if total.get("cost_source") else ""
        lines.append(f"Training, all {total['cells']} cell(s): {what}{money}{source}.")
    frontier = analysis.get("frontier") or []
    if frontier:
        lines.append(
            f"Accuracy-vs-cost frontier (no other model is both cheaper and more accurate): {', '.join(frontier)}."
        )
    return lines


def precision_line(rows: list[Row]) -> str:
    """One sentence: what each row trained in and was scored in (``Precision: training bf16 (lora), fp32
    (full); scoring bf16 (base, lora)``); empty when no row recorded either."""

    def grouped(key: str) -> str:
        groups: dict[str, list[str]] = {}
        for row in rows:
            if row.get(key):
                groups.setdefault(str(row[key]), []).append(str(row["method"]))
        return ", ".join(f"{p} ({', '.join(names)})" for p, names in groups.items())

    parts = [
        f"{what} {text}"
        for what, key in (("training", "precision"), ("scoring", "eval_precision"))
        if (text := grouped(key))
    ]
    return f"Precision: {'; '.join(parts)}." if parts else ""


def format_report(summary: dict) -> str:
    """What ``cyberft report`` prints: the per-model table, its precision line, the rows over seeds and
    the comparisons."""
    rows = summary.get("rows") or []
    analysis = {k: summary.get(k) for k in ANALYSIS_KEYS if k in summary}
    parts = [format_table(rows)]
    if precision_line(rows):
        parts.append(precision_line(rows))
    if analysis.get("groups"):
        base = next((r for r in rows if r.get("kind") == "base"), None)
        parts += ["", "Over seeds, per method and grid point:", text_table(groups_table(analysis, base))]
    if analysis.get("continual"):
        parts += ["", "Continual re-training:", text_table(continual_table(analysis)), analysis["continual_note"]]
    lines = analysis_lines(analysis)
    if lines:
        parts += [""] + lines
    return "\n".join(parts)


ANALYSIS_KEYS = (
    "groups",
    "comparisons",
    "comparison_note",
    "letters",
    "frontier",
    "total",
    "continual",
    "continual_note",
)
"""The keys of ``summary.json`` that :func:`launch.results.finalize.analyse` writes."""


def _problems(rows: list[Row]) -> list[str]:
    """One line per row that did not complete, with its error when known."""
    out = []
    for row in rows:
        if row.get("status") != "completed":
            err = row.get("error") or row.get("eval_error")
            out.append(f"{row['method']}: {row.get('status')}" + (f" ({err})" if err else ""))
    return out


# --------------------------------------------------------------------------- chart


def chart_axis(rows: list[Row]) -> tuple[str, str]:
    """(row key, axis label) for the cost axis: GPU-hours if any method used GPUs."""
    if any(r.get("kind") != "base" and (r.get("gpu_hours") or 0) > 0 for r in rows):
        return "gpu_hours", "training GPU-hours"
    return "cpu_hours", "training CPU-hours"


def render_chart(rows: list[Row], title: str, analysis: dict | None = None) -> bytes:
    """Accuracy vs training compute: every model (each cell of a sweep) a point, the Pareto frontier a step line.

    Returns
    -------
    bytes
        A PNG. Rows without accuracy or compute hours are left out (the table still lists them);
        ``base`` sits at x = 0. With few points each has its 95% CI and its label; with many, each
        method has one colour and a legend entry. The majority-letter baseline is a dashed line.
    """
    # Lazy and pyplot-free: the Agg canvas needs no display and no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key, label = chart_axis(rows)
    fig = Figure(figsize=(7.0, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = _chart_points(rows, key)
    detailed = len(points) <= DETAILED_POINTS
    colours: dict[str, tp.Any] = {}
    for row, x, acc in points:
        series = row.get("group", row["method"]).split(" (")[0] if not detailed else row["method"]
        first = series not in colours
        colours.setdefault(series, f"C{len(colours) % 10}")
        marker = "s" if row.get("kind") == "base" else "o"
        if detailed:
            lo, hi = row.get("ci95") or (acc, acc)
            yerr = [[max(acc - lo, 0.0)], [max(hi - acc, 0.0)]]
            ax.errorbar([x], [acc], yerr=yerr, fmt=marker, capsize=4, color=colours[series], label=series)
            ax.annotate(row["method"], (x, acc), textcoords="offset points", xytext=(6, 6), fontsize=9)
        else:
            ax.plot([x], [acc], marker, color=colours[series], alpha=0.75, label=series if first else None)
    front = [(x, acc) for row, x, acc in points if row["method"] in set((analysis or {}).get("frontier") or [])]
    if len(front) > 1:
        ax.step(*zip(*sorted(front)), where="post", color="0.35", linewidth=1, label="Pareto frontier")
    baseline = ((analysis or {}).get("letters") or {}).get("baseline")
    if baseline:
        ax.axhline(baseline["accuracy"], color="0.5", linestyle="--", linewidth=1, label=f"always {baseline['letter']}")
    xs = [x for _, x, _ in points]
    if not xs:
        ax.text(0.5, 0.5, "no evaluated methods", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (exact match" + (", 95% CI)" if detailed else ")"))
    ax.set_ylim(0.0, 1.08)  # room above 1.0 for a perfect score and its label
    # Margins so that base (x = 0) and the labels of the costliest run are not clipped.
    span = max(xs, default=0.0) or 1.0
    ax.set_xlim(-0.05 * span, 1.2 * span)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if xs:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


DETAILED_POINTS = 12
"""Up to this many models, the chart labels each one and draws its 95% interval."""


def _chart_points(rows: list[Row], key: str) -> list[tuple[Row, float, float]]:
    """(row, cost, accuracy) of every row with both; base at cost 0."""
    out = []
    for row in rows:
        acc = row.get("accuracy")
        x = 0.0 if row.get("kind") == "base" else row.get(key)
        if acc is not None and x is not None:
            out.append((row, x, acc))
    return out


# --------------------------------------------------------------------------- files


def _scoring_s(result: dict) -> float:
    """One model's load and scoring time in the evaluation job (its result's timers)."""
    return (_num(result.get("load_s")) or 0.0) + (_num(result.get("eval_s")) or 0.0)


SCORING_COST_KINDS = ("few_shot",)
"""Kinds whose price is paid at evaluation: few-shot trains nothing and scores longer prompts."""


def add_scoring_cost(
    rows: list[Row], results: tp.Mapping[str, dict], gpus: int, threads: int, price_per_gpu_hour: float | None
) -> None:
    """Add each :data:`SCORING_COST_KINDS` row's own evaluation time to its cost, in place.

    Its GPU-hours (GPUs of the evaluation job x its load and scoring seconds; none on CPU), CPU-hours
    (x ``threads``) and money are added to what its own job cost; ``cost_source`` says so
    (``local + eval scoring``, ``sacct + eval scoring``) and ``scoring_s`` holds the seconds. The
    evaluation line still counts these seconds with every model's: there they are shared, here they
    are this row's price.
    """
    for row in rows:
        result = results.get(row["method"])
        if row.get("kind") not in SCORING_COST_KINDS or not result:
            continue
        seconds = _scoring_s(result)
        row["scoring_s"] = round(seconds, 3)
        if gpus:
            gpu_hours = seconds * gpus / 3600
            row["gpu_hours"] = (row.get("gpu_hours") or 0.0) + gpu_hours
            if price_per_gpu_hour is not None:
                row["cost"] = (row.get("cost") or 0.0) + gpu_hours * price_per_gpu_hour
        row["cpu_hours"] = (row.get("cpu_hours") or 0.0) + seconds * threads / 3600
        row["cost_source"] = f"{row.get('cost_source') or 'none'} + eval scoring"


def evaluation_cost(results: tp.Mapping[str, dict], gpus: int, threads: int, price_per_gpu_hour: float | None) -> dict:
    """What the shared evaluation job spent, from each model's own load and scoring timers.

    The timers are stored with each model's result, so a requeued evaluation job still
    counts the models scored by its earlier attempts. ``gpus`` is what the job holds
    (0 on CPU: then only CPU-hours, ``threads`` cores).
    """
    seconds = sum(_scoring_s(r) for r in results.values())
    gpu_hours = seconds * gpus / 3600 if gpus else None
    return {
        "models": len(results),
        "seconds": round(seconds, 3),
        "gpus": gpus,
        "gpu_hours": round(gpu_hours, 6) if gpu_hours is not None else None,
        "cpu_hours": round(seconds * threads / 3600, 6),
        "cost": round(gpu_hours * price_per_gpu_hour, 4) if gpu_hours is not None and price_per_gpu_hour else None,
        "source": "eval job timers (load + scoring per model)",
    }


def evaluation_line(ev: dict | None) -> str:
    """One sentence for the reports: the evaluation's own cost, shared by every row."""
    if not ev:
        return ""
    hours = f"{ev['gpu_hours']:.4g} GPU-h" if ev.get("gpu_hours") is not None else f"{ev['cpu_hours']:.4g} CPU-h"
    money = f", cost {ev['cost']:.4g}" if ev.get("cost") is not None else ""
    return (
        f"Evaluation job: {ev['models']} model(s) loaded and scored in {ev['seconds']:.0f} s ({hours}{money}); "
        "shared by every row, not included in any row's cost (a few-shot row's cost is its own part of it)."
    )


def _markdown_report(
    rows: list[Row], title: str, evaluation: dict | None = None, analysis: dict | None = None, forecast: str = ""
) -> str:
    parts = [f"# {title}", "", format_markdown(rows), "", METRIC_NOTE, ""]
    if precision_line(rows):
        parts += [precision_line(rows), ""]
    if evaluation:
        parts += [evaluation_line(evaluation), ""]
    if forecast:
        parts += ["## Forecast against actual", "", "```", forecast, "```", ""]
    problems = _problems(rows)
    if problems:
        parts += ["Rows that did not complete:", ""] + [f"- {p}" for p in problems] + [""]
    if analysis and analysis.get("groups"):
        base = next((r for r in rows if r.get("kind") == "base"), None)
        parts += ["## Over seeds, per method and grid point", "", markdown_table(groups_table(analysis, base)), ""]
    if analysis and analysis.get("continual"):
        table = markdown_table(continual_table(analysis))
        parts += ["## Continual re-training: forgetting and gain", "", table, "", analysis["continual_note"], ""]
    lines = analysis_lines(analysis or {})
    if lines:
        parts += ["## Comparisons", ""] + [f"- {line}" for line in lines] + [""]
    parts += ["![accuracy vs compute](chart.png)", ""]
    return "\n".join(parts)


def _html_table(table: Table) -> str:
    e = html.escape
    headers, body, left = table
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    rows = "".join(
        "<tr>" + "".join(f'<td class="{"t" if lt else "n"}">{e(c)}</td>' for c, lt in zip(cells, left)) + "</tr>\n"
        for cells in body
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


def _html_report(
    rows: list[Row],
    title: str,
    png: bytes,
    evaluation: dict | None = None,
    analysis: dict | None = None,
    forecast: str = "",
) -> str:
    """One self-contained page: tables, notes and the chart inlined as base64."""
    e = html.escape
    problems = "".join(f"<li>{e(p)}</li>" for p in _problems(rows))
    img = base64.b64encode(png).decode("ascii")
    extra = ""
    if analysis and analysis.get("groups"):
        base = next((r for r in rows if r.get("kind") == "base"), None)
        extra += f"<h2>Over seeds, per method and grid point</h2>\n{_html_table(groups_table(analysis, base))}\n"
    if analysis and analysis.get("continual"):
        extra += "<h2>Continual re-training: forgetting and gain</h2>\n"
        extra += f"{_html_table(continual_table(analysis))}\n<p>{e(analysis['continual_note'])}</p>\n"
    lines = analysis_lines(analysis or {})
    if lines:
        extra += "<h2>Comparisons</h2>\n<ul>" + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul>\n"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head>
<body>
<h1>{e(title)}</h1>
{_html_table(_rows_table(rows))}
<p>{e(METRIC_NOTE)}</p>
{f"<p>{e(precision_line(rows))}</p>" if precision_line(rows) else ""}
{f"<p>{e(evaluation_line(evaluation))}</p>" if evaluation else ""}
{f"<h2>Forecast against actual</h2><pre>{e(forecast)}</pre>" if forecast else ""}
{f"<p>Rows that did not complete:</p><ul>{problems}</ul>" if problems else ""}
{extra}<img alt="accuracy vs compute" src="data:image/png;base64,{img}">
</body></html>
"""


def write_reports(
    exp: ExperimentDir,
    rows: list[Row],
    title: str,
    extra: dict | None = None,
    evaluation: dict | None = None,
    forecast_check: dict | None = None,
    analysis: dict | None = None,
) -> dict[str, Path]:
    """Write ``summary.json``, ``report.md``, ``chart.png`` and ``report.html``.

    Parameters
    ----------
    exp:
        The experiment directory.
    rows:
        From :func:`build_rows`; written to ``summary.json`` unchanged.
    title:
        Report heading and chart title.
    extra:
        More top-level keys for ``summary.json`` (config hash, eval mode...).
    evaluation:
        From :func:`evaluation_cost`: ``summary.json``'s ``evaluation`` and a line in the reports.
    forecast_check:
        From :func:`launch.cost.costcheck.after_run`: ``summary.json``'s ``forecast_vs_actual`` and a table in the
        reports.
    analysis:
        From :func:`launch.results.finalize.analyse`: rows over seeds, comparisons, letters, frontier and
        totals; ``summary.json`` keys of their own, sections in the reports, the frontier in the chart.

    Returns
    -------
    dict
        ``{"summary": ..., "markdown": ..., "chart": ..., "html": ...}`` paths.
    """
    png = render_chart(rows, title, analysis)
    paths = {"summary": exp.summary_file, "markdown": exp.report_md, "chart": exp.chart_file, "html": exp.report_html}
    summary = {"title": title, "rows": rows, **(extra or {}), **(analysis or {})}
    if evaluation:
        summary["evaluation"] = evaluation
    if forecast_check:
        summary["forecast_vs_actual"] = forecast_check
    forecast = format_check(forecast_check)
    atomic_write_json(paths["summary"], summary)
    atomic_write_text(paths["markdown"], _markdown_report(rows, title, evaluation, analysis, forecast))
    atomic_write_bytes(paths["chart"], png)
    atomic_write_text(paths["html"], _html_report(rows, title, png, evaluation, analysis, forecast))
    return paths
