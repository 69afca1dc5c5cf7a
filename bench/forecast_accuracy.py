"""How close the cost forecast comes, before and after one calibration run (local runs, CPU standing in for a GPU).

Runs the smoke experiment twice with ``cyberft run``: run A (``--steps`` steps of ``--micro-batch``),
then run B (twice the steps, half the micro-batch). Forecasts A with the published defaults, records
A's measured utilisation and overhead in a calibration file (``launch/calibration.py``), then forecasts
B without and with that calibration, each against what B measured (wall time from the job's own
timers, tokens/s; peak memory against the memory estimate, which is per GPU: on CPU the peak is the
process's whole RSS, so that row only shows the plumbing). Not a test: the timings are the machine's.

    .venv/bin/python bench/forecast_accuracy.py [--peak 0.085] [--steps 150] [--micro-batch 16] [--out DIR]

``--peak``: TFLOP/s of one job's "GPU", here one CPU thread's fp32 matmul rate (a 2048^3 fp32 matmul
on both cores of the development machine ran at 164-176 GFLOP/s, README "Performance"). The smoke
model (``.cache/tiny-llama``) must exist: ``make smoke`` or ``cyberft tiny-model .cache/tiny-llama``.
On the dev cluster the same loop runs through ``cyberft submit`` and sacct (the report's wiring).

Run it on an otherwise idle machine: on the shared 2-core development machine the same job's
tokens/s changed 3.4x between two runs minutes apart (other sessions' tests), and local runs execute
two jobs at a time on two cores, so whichever method runs alone looks faster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch import calibration, forecast, memory, tokencount  # noqa: E402
from launch.data import load_jsonl_questions  # noqa: E402
from launch.expdir import ExperimentDir  # noqa: E402

METHODS = ("full_sft", "lora", "qlora")


def run(out: Path, tag: str, steps: int, micro_batch: int) -> Path:
    """One smoke experiment with every method cut to ``steps`` steps of ``micro_batch``; its directory."""
    overrides = [f"output_dir={out / tag}", f"name=forecast-{tag}"]
    for m in METHODS:
        overrides += [f"methods.{m}.max_steps={steps}", f"methods.{m}.micro_batch_size={micro_batch}"]
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "launch.cli", "run", "configs/smoke.yaml", *overrides],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"run {tag}: {steps} steps of {micro_batch}, {time.perf_counter() - t0:.0f} s", flush=True)
    return next((out / tag).iterdir())


def predict(exp: Path, peak: float, cal: calibration.Calibration | None = None) -> forecast.Forecast:
    """The forecast of experiment ``exp`` from its frozen config and staged data."""
    cfg = ExperimentDir(exp).load_config()
    train = load_jsonl_questions(ExperimentDir(exp).data.train_file)
    eval_ = load_jsonl_questions(ExperimentDir(exp).data.eval_file)
    counts = tokencount.count_tokens(train, eval_, cfg.model.name_or_path, cfg.model.max_seq_len, mode="count")
    shape = memory.model_shape(cfg.model.name_or_path)
    return forecast.forecast(cfg, shape, counts, "cpu", gpu_tflops=peak, calibration=cal)


def metrics(exp: Path, name: str) -> dict:
    return json.loads(ExperimentDir(exp).method(name).metrics_file.read_text())


def compared(exp: Path, fc: forecast.Forecast) -> dict:
    """Each method's forecast against its metrics.json (GPU-hours: wall x 1, as one "GPU" per job)."""
    cfg = ExperimentDir(exp).load_config()
    shape = memory.model_shape(cfg.model.name_or_path)
    out = {}
    for name, job in fc.to_json()["methods"].items():
        m = metrics(exp, name)
        row = {
            "wall_s": m["wall_s"],
            "gpu_hours": m["wall_s"] / 3600,
            "tokens_per_s": m["tokens_per_s"],
            "peak_mem_gb": m["peak_mem_bytes"] / 2**30,
        }
        est = memory.estimate(shape, cfg.method(name), cfg.model.max_seq_len).total_gb
        out[name] = forecast.compare(job, row, est)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak", type=float, default=0.085, help="TFLOP/s of one job's compute (one CPU thread)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="forecast-accuracy-"))
    cal_path = out / "site.calibration.jsonl"

    a = run(out, "a", args.steps, args.micro_batch)
    fa = predict(a, args.peak)
    print(fa.table())
    print(forecast.format_comparison(compared(a, fa)))
    for name, job in fa.to_json()["methods"].items():
        rec = calibration.measure_method(job, metrics(a, name), None, a.name, "cpu")
        if rec is not None:
            calibration.append(cal_path, rec)
    print(calibration.format_calibration(calibration.load(cal_path)))

    b = run(out, "b", 2 * args.steps, max(1, args.micro_batch // 2))
    for label, cal in (("defaults", None), ("calibrated by run a", calibration.load(cal_path))):
        fb = predict(b, args.peak, cal)
        print(f"\nrun b, forecast with the {label}:")
        print(fb.table())
        print(forecast.format_comparison(compared(b, fb)))


if __name__ == "__main__":
    main()
