"""What every ``bench/bench_*.py`` shares: the result format, summary statistics, the table.

A benchmark script is a plain program::

    python bench/bench_NAME.py [--runs N] [--json PATH]

It prints one progress line per timed run, then its own table, and with ``--json`` writes its
result there (``bench/run_all.py`` runs every ``bench_*.py`` this way, each in a fresh process,
and merges the results into one table and ``bench/results/latest.json``). A new benchmark
(e.g. ``bench_train.py``) only has to build a :class:`Bench`, add :class:`Row` objects with the raw
per-run samples, and end with ``raise SystemExit(bench_main(...))``: the statistics, the ratio to
the baseline and the target verdicts are computed here, the same way for every benchmark. Ratios
between rows with one sample per run are paired (the median of the per-run ratios): each run
measures every row back to back, so a shared machine's load changes between runs cancel out.

Result format (one benchmark)::

    {"name": "eval", "rows": [{"key", "label", "unit", "higher_is_better", "samples": [...],
      "median", "min", "max", "baseline": key|null, "vs_baseline": float|null,
      "targets": [{"text", "met", "value"}]}, ...],
     "info": {...}, "notes": [...], "skipped": null|"reason"}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing as tp
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = 5
"""Timed runs per measurement (the median is reported); ``--runs`` may raise it, never below 5."""
MIN_RUNS = 5


def log(bench: str, msg: str) -> None:
    """One progress line, flushed at once (run_all streams the child's stdout)."""
    print(f"[{bench}] {msg}", flush=True)


@dataclass
class Target:
    """A goal for one row, judged on medians.

    kind ``ratio_min``: ``row / ref >= value`` (speed: for time rows the ratio is ref/row, so
    ">= 2" always means "at least twice as fast"); kind ``max``: the row's median ``<= value``.
    """

    text: str
    kind: str
    value: float
    ref: str | None = None


@dataclass
class Row:
    key: str
    label: str
    unit: str  # "s" (lower is better) or a rate like "q/s" (higher is better)
    samples: list[float]
    higher_is_better: bool
    baseline: str | None = None  # key of the row this one is compared with
    targets: list[Target] = field(default_factory=list)
    note: str = ""


@dataclass
class Bench:
    name: str
    rows: list[Row] = field(default_factory=list)
    info: dict[str, tp.Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)


def speed_ratio(row: dict, ref: dict) -> float | None:
    """How many times faster ``row`` is than ``ref`` (> 1: faster).

    Paired when both rows have one sample per run (every run measures all of a benchmark's rows
    back to back): the median of the per-run ratios, which cancels most of a shared machine's
    load changes between runs. Otherwise the ratio of the medians.
    """
    a, b = row["samples"], ref["samples"]
    if not a or not b or not all(a) or not all(b):
        return None
    if len(a) == len(b):
        ratios = [x / y if row["higher_is_better"] else y / x for x, y in zip(a, b)]
        return statistics.median(ratios)
    return row["median"] / ref["median"] if row["higher_is_better"] else ref["median"] / row["median"]


def summarize(bench: Bench) -> dict:
    """The JSON form of a benchmark: per row the samples, median, min, max, ratio, target verdicts."""
    rows = []
    for r in bench.rows:
        d = asdict(r)
        d.pop("targets")
        s = [float(x) for x in r.samples]
        d["n"] = len(s)
        d["median"] = statistics.median(s) if s else None
        d["min"] = min(s) if s else None
        d["max"] = max(s) if s else None
        rows.append(d)
    by_key = {d["key"]: d for d in rows}
    for r, d in zip(bench.rows, rows):
        d["vs_baseline"] = speed_ratio(d, by_key[r.baseline]) if r.baseline else None
        d["targets"] = []
        for t in r.targets:
            if t.kind == "ratio_min":
                value = speed_ratio(d, by_key[t.ref]) if t.ref else None
            elif t.kind == "max":
                value = d["median"]
            else:
                raise ValueError(f"unknown target kind {t.kind!r}")
            met = None if value is None else (value >= t.value if t.kind == "ratio_min" else value <= t.value)
            d["targets"].append(
                {"text": t.text, "kind": t.kind, "value": value, "goal": t.value, "ref": t.ref, "met": met}
            )
    return {"name": bench.name, "rows": rows, "info": bench.info, "notes": bench.notes, "skipped": bench.skipped}


# --------------------------------------------------------------------------- table


def _num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "s":
        return f"{x:.3f}" if x < 10 else f"{x:.1f}"
    if unit == "%":
        return f"{x:.1f}"
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def _target_text(t: dict) -> str:
    if t["value"] is None:
        return f"{t['text']}: n/a"
    verdict = "met" if t["met"] else "MISSED"
    shown = f"{t['value']:.2f}x" if t["kind"] == "ratio_min" else f"{t['value']:.3f} s"
    return f"{t['text']}: {verdict} ({shown})"


def format_table(results: list[dict]) -> str:
    """One text table for any number of benchmark results."""
    header = ["bench", "measurement", "median", "min-max", "unit", "vs baseline", "target"]
    lines: list[list[str]] = []
    for res in results:
        if res.get("skipped"):
            lines.append([res["name"], f"SKIPPED: {res['skipped']}", "", "", "", "", ""])
            continue
        for d in res["rows"]:
            if d["baseline"] == d["key"]:
                vs = "baseline"
            elif d["vs_baseline"] is not None:
                vs = f"{d['vs_baseline']:.2f}x"
            else:
                vs = ""
            rng = f"{_num(d['min'], d['unit'])}-{_num(d['max'], d['unit'])}" if d["n"] else "-"
            lines.append(
                [
                    res["name"],
                    d["label"],
                    _num(d["median"], d["unit"]),
                    rng,
                    d["unit"],
                    vs,
                    "; ".join(_target_text(t) for t in d["targets"]),
                ]
            )
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {2, 3, 5}

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines]
    return "\n".join(out)


# --------------------------------------------------------------------------- entry point


def parse_args(
    name: str,
    description: str,
    argv: tp.Sequence[str] | None = None,
    extra: tp.Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"bench_{name}.py", description=description)
    p.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help=f"timed runs per measurement (>= {MIN_RUNS}; the median is reported)",
    )
    p.add_argument("--json", help="write the result here (bench/run_all.py uses this)")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    if args.runs < MIN_RUNS:
        p.error(f"--runs must be at least {MIN_RUNS}")
    return args


def bench_main(build: tp.Callable[[argparse.Namespace], Bench], args: argparse.Namespace) -> int:
    """Run ``build``, print the table, write ``--json``; exit 0 (even when a target is missed)."""
    t0 = time.perf_counter()
    bench = build(args)
    result = summarize(bench)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(format_table([result]), flush=True)
    for n in result["notes"]:
        print(f"  note: {n}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def timed_subprocess(
    cmd: tp.Sequence[str], env: dict | None = None, cwd: str | os.PathLike | None = None, timeout: float = 120
) -> tuple[float, int, str, str]:
    """Wall time of one fresh process: (seconds, exit code, stdout, stderr)."""
    import subprocess

    t = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t, proc.returncode, proc.stdout, proc.stderr


def venv_bin(name: str) -> str:
    """A console script next to this interpreter (the project's .venv), else the bare name."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def machine_info() -> dict:
    import platform

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


MATMUL_N = 2048
"""Side of the square fp32 matmul that measures the machine's ceiling (2 x 2048^3 = 17 GFLOP)."""


def matmul_gflops(n: int = MATMUL_N, reps: int = 3) -> float:
    """The hardware ceiling, measured: fp32 GFLOP/s of an ``n x n x n`` matmul (best of ``reps``).

    On the device and with the threads the benchmark's model uses (torch's defaults), so a model's
    achieved FLOP/s divided by this is its fraction of what this machine does at best, measured in
    the same run rather than taken from a datasheet.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up: kernel choice, allocation
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def matmul_params(model: tp.Any) -> int:
    """Parameters of the transformer blocks' matmuls: everything but embeddings, norms and the LM head.

    The model FLOP count used against :func:`matmul_gflops` is 2 x this per token for a forward and
    6 x this for forward + backward (attention scores and the LM head are not counted, so the
    fraction is a lower bound).
    """
    return sum(
        p.numel() for name, p in model.named_parameters() if p.dim() == 2 and ".layers." in name and "norm" not in name
    )
