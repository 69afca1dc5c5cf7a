"""The memory estimate against the peaks finished experiments measured, job by job (not a test).

For each experiment directory given, every training job (each cell of a sweep) is estimated again with
today's :func:`launch.cost.memory.estimate` from the experiment's frozen config and its staged training split
(tokens counted with the model's tokenizer, the example lengths sizing the largest micro-batch), and set
against what the job measured: its peak above its memory before loading (``metrics.json``'s
``peak_mem_bytes - base_mem_bytes``: the resident set on the CPU, the allocator's peak on a GPU).

Two estimates per job:

* **raw**: the estimator alone;
* **calibrated**: scaled by the largest measured/raw ratio of the same kind in the *other* experiments
  given on a model within 2x of its size (leave one experiment out), as a site's calibration file scales
  it after those runs (``launch.cost.calibration.Calibration.memory_scale``).

A job that did not record its memory before loading (runs before it was recorded) is compared above the
median baseline of the jobs of the same model that did, marked ``*``. Targets (issue 23): every kind
within 25% of its peak, and never more than 10% below it.

    .venv/bin/python bench/memory_fit.py runs/EXP_A runs/EXP_B [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.cost import calibration, costcheck, memory, tokencount  # noqa: E402
from launch.questions.data import load_jsonl_questions  # noqa: E402
from launch.spec import sweep  # noqa: E402
from launch.store.expdir import ExperimentDir  # noqa: E402
from launch.store.fsio import read_json  # noqa: E402

GB = memory.GB
TARGET_PCT = 25.0
FLOOR_PCT = -10.0


def jobs(exp_dir: Path) -> list[dict]:
    """Every completed training job of an experiment with its raw estimate and measured memory (GiB)."""
    exp = ExperimentDir(exp_dir)
    cfg = exp.load_config()
    shape = memory.model_shape(cfg.model.name_or_path)
    if shape is None:
        raise SystemExit(f"{exp_dir}: no config.json for {cfg.model.name_or_path!r} here")
    train = load_jsonl_questions(exp.data.train_file)
    counts = tokencount.count_tokens(train, [], cfg.model.name_or_path, cfg.model.max_seq_len, mode="count")
    lengths = costcheck.row_lengths(counts.train)
    saved = read_json(exp.forecast_file) if exp.forecast_file.exists() else {}
    gpu_type = saved.get("gpu_type") or "cpu"  # the site the jobs ran on: its precision for ``auto``
    out = []
    for cell in sweep.cells(cfg):
        metrics_file = exp.method(cell.id).metrics_file
        if not metrics_file.exists():
            continue
        m = read_json(metrics_file)
        if m.get("status") != "completed" or not m.get("peak_mem_bytes"):
            continue
        method = cell.config
        if method.kind == "few_shot":  # its estimate is its scoring in the evaluation; its own job loads no model
            continue
        est = costcheck.method_estimate(cfg, method, shape, gpu_type, lengths)
        base = m.get("base_mem_bytes")
        out.append(
            {
                "experiment": exp.name,
                "job": cell.id,
                "kind": method.kind,
                "n_params": shape.n_params,
                "gpu_type": gpu_type,
                # As the plan saves it (costcheck.memory_estimates' own_raw): on the CPU with the runtime's share.
                "estimate_gb": est.own_gb + (costcheck.CPU_RUNTIME_GB if gpu_type == "cpu" else 0.0),
                "peak_gb": m["peak_mem_bytes"] / GB,
                "base_gb": base / GB if base is not None else None,
                "phase_peaks_gb": {k: v / GB for k, v in (m.get("phase_peak_mem_bytes") or {}).items()},
                "mean_tokens": lengths.mean if lengths else None,
                "longest": lengths.longest if lengths else None,
            }
        )
    return out


def fill_baselines(rows: list[dict]) -> None:
    """Jobs without a recorded baseline get the median of those of the same model with one, else of all
    (marked ``assumed``)."""
    for r in rows:
        r["assumed"] = r["base_gb"] is None
    for r in [r for r in rows if r["assumed"]]:
        known = [o["base_gb"] for o in rows if not o["assumed"]]
        same = [o["base_gb"] for o in rows if not o["assumed"] and o["n_params"] == r["n_params"]]
        r["base_gb"] = statistics.median(same or known) if (same or known) else costcheck.CPU_PROCESS_GB
    for r in rows:
        r["own_gb"] = r["peak_gb"] - r["base_gb"]


def calibrate_out(rows: list[dict]) -> None:
    """Each job's estimate scaled as the site's calibration would scale it after the *other* experiments' runs
    (``launch.cost.calibration.Calibration.memory_scale``: its kind's largest measured/raw ratio, a model of
    its size)."""
    for r in rows:
        others = [
            {
                "kind": o["kind"],
                "gpu_type": calibration.gpu_key(o["gpu_type"]),
                "size": calibration.size_bucket(o["n_params"]),
                "n_params": o["n_params"],
                "mem_estimate_gb": o["estimate_gb"],
                "mem_peak_gb": o["own_gb"],
            }
            for o in rows
            if o["experiment"] != r["experiment"]
        ]
        found = calibration.Calibration(None, others).memory_scale(r["kind"], r["gpu_type"], r["n_params"])
        r["scale"] = found[0] if found else None
        r["calibrated_gb"] = r["estimate_gb"] * found[0] if found else None


def err(estimate: float | None, actual: float) -> float | None:
    return None if estimate is None or actual <= 0 else (estimate - actual) / actual * 100


def table(rows: list[dict]) -> str:
    head = ["experiment", "job", "kind", "peak", "base", "own", "raw est", "err", "cal est", "err"]
    body = []
    for r in rows:
        e_raw, e_cal = err(r["estimate_gb"], r["own_gb"]), err(r["calibrated_gb"], r["own_gb"])
        body.append(
            [
                r["experiment"][:32],
                r["job"],
                r["kind"],
                f"{r['peak_gb']:.2f}",
                f"{r['base_gb']:.2f}" + ("*" if r["assumed"] else ""),
                f"{r['own_gb']:.2f}",
                f"{r['estimate_gb']:.2f}",
                f"{e_raw:+.0f}%",
                "-" if r["calibrated_gb"] is None else f"{r['calibrated_gb']:.2f}",
                "-" if e_cal is None else f"{e_cal:+.0f}%",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(rows: list[dict], key: str) -> str:
    errors = [err(r[key], r["own_gb"]) for r in rows if r[key] is not None]
    if not errors:
        return f"{key}: no jobs"
    inside = sum(FLOOR_PCT <= e <= TARGET_PCT for e in errors)
    return (
        f"{key}: {inside}/{len(errors)} jobs within [{FLOOR_PCT:+.0f}%, +{TARGET_PCT:.0f}%] of their peak; "
        f"error from {min(errors):+.0f}% to {max(errors):+.0f}%"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = [r for exp in args.experiments for r in jobs(exp)]
    fill_baselines(rows)
    calibrate_out(rows)
    print("GiB; own = peak - base (base: memory before loading; * = not recorded: the median of the same model's)")
    print(table(rows))
    print(verdict(rows, "estimate_gb"))
    print(verdict(rows, "calibrated_gb"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
