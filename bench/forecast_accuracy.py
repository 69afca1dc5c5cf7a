"""How close the cost forecast comes, before and after one calibration run (CPU figures standing in for GPU ones).

Two experiments of the smoke study (``--config``): run A (``--steps`` steps of ``--micro-batch``), then run B
(twice the steps, micro-batch ``--micro-batch-b``). Each is made the way a user makes it, so the forecast,
its check and the calibration are the launcher's own (``launch/cost/costcheck.py``): A's evaluation job appends
what A measured to the site's calibration file and B's forecast, made at B's submission, uses it. B is also
forecast with the published defaults (no calibration). Both against what B cost: sacct's GPU-hours on
Slurm, the jobs' CPU-hours locally. Not a test: the timings are the machine's.

    # on the dev cluster (eval "$(BASE=/tmp/slurm-dev slurm/dev-cluster/up)" first):
    .venv/bin/python bench/forecast_accuracy.py --profile dev [--steps 150] [--micro-batch 16] [--out DIR]
    # locally (cyberft run; CPU-hours):
    .venv/bin/python bench/forecast_accuracy.py [--steps 150] [--micro-batch 16]

The calibration file lives in ``DIR`` (``CYBERFT_CALIBRATION_DIR``), so the site's own file is untouched and
run A is the only calibration run. Run it on an otherwise idle machine: on the shared 2-core development
machine one job's tokens/s changed 3.4x between two runs minutes apart (other sessions' tests); the load
average before and after each run is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.cost import calibration, costcheck  # noqa: E402
from launch.questions.data import load_jsonl_questions  # noqa: E402
from launch.site.profiles import load_profile  # noqa: E402
from launch.store.expdir import ExperimentDir  # noqa: E402
from launch.store.fsio import read_json  # noqa: E402


def methods(config: str) -> list[tuple[str, str]]:
    """(name, kind) of every method of the study: each is forecast and measured."""
    from launch.spec.config import load_config

    return [(m.name, m.kind) for m in load_config(config).methods]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cyberft(*argv: str, timeout: float = 3600) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if res.returncode != 0:
        raise RuntimeError(f"cyberft {' '.join(argv)} failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr}")
    return res.stdout


def run(args: argparse.Namespace, tag: str, steps: int, micro_batch: int) -> ExperimentDir:
    """One experiment with every method that steps cut to ``steps`` steps of ``micro_batch`` (few-shot and the
    feature head as configured: neither has steps to cut); its directory once it ended."""
    overrides = [f"output_dir={args.out / tag}", f"name=forecast-{tag}"]
    for name, kind in methods(args.config):
        if kind == "feature_head":  # one pass over the data (its epochs are over cached features): the split's size
            continue
        if kind != "few_shot":  # few-shot trains nothing: its cost is its scoring
            overrides += [f"methods.{name}.max_steps={steps}", f"methods.{name}.micro_batch_size={micro_batch}"]
    t0, before = time.perf_counter(), load()
    if args.profile:
        out = cyberft("submit", args.config, "--profile", args.profile, *overrides)
        exp = Path(re.search(r"^experiment: (.+)$", out, re.M).group(1))
        cyberft("status", str(exp), "--wait", "--interval", "2")
        while not ExperimentDir(exp).summary_file.is_file():  # the evaluation job's report comes last
            time.sleep(1)
    else:
        cyberft("run", args.config, "--no-progress", *overrides)
        exp = next((args.out / tag).iterdir())
    print(f"run {tag}: {steps} steps of {micro_batch}, {time.perf_counter() - t0:.0f} s; load {before} -> {load()}")
    return ExperimentDir(exp)


def default_forecast(exp: ExperimentDir, args: argparse.Namespace) -> dict:
    """The forecast of ``exp`` with the published defaults: its site with an empty calibration."""
    cfg = exp.load_config()
    split = argparse.Namespace(train=load_jsonl_questions(exp.data.train_file))
    split.eval = load_jsonl_questions(exp.data.eval_file)
    site = costcheck.Site.from_profile(load_profile(args.profile), args.profile) if args.profile else None
    site = site or costcheck.Site.local(cfg)
    site = dataclasses.replace(site, calibration_file=args.out / "none.calibration.jsonl")
    return costcheck.plan(cfg, split, site).saved()


def errors(exp: ExperimentDir, saved: dict) -> dict[str, dict]:
    """Each method's (and the evaluation's) forecast against ``exp``'s measured cost, as the report computes it."""
    summary = read_json(exp.summary_file)
    metrics = {m: exp.method(m).read_metrics().to_dict() for m, _ in methods(str(exp.config_file))}
    scored = {n: exp.eval.read_result(n).to_dict() for n in exp.eval.scored()}
    tokens = costcheck.counted_eval_tokens(exp.load_config(), exp)
    return costcheck.check(saved, summary["rows"], metrics, summary["evaluation"], scored, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="a Slurm site (dev); default: cyberft run on this machine")
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--micro-batch-b", type=int, default=None, help="run B's micro-batch (default: half A's)")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="forecast-accuracy-"))).absolute()
    os.environ[calibration.DIR_ENV] = str(args.out)  # run A is the only calibration run

    a = run(args, "a", args.steps, args.micro_batch)
    check_a = read_json(a.summary_file)["forecast_vs_actual"]
    print(costcheck.format_check(check_a))
    print(calibration.show(args.profile) if args.profile else calibration.show(None))

    b = run(args, "b", 2 * args.steps, args.micro_batch_b or max(1, args.micro_batch // 2))
    results = {"load_after": load(), "a": check_a}
    for label, saved in (("defaults", default_forecast(b, args)), ("calibrated by run A", b.read_forecast())):
        print(f"\nrun B, forecast with the {label}:")
        cmp = errors(b, saved)
        print(costcheck.format_check(cmp))
        results[label] = cmp
    (args.out / "forecast_accuracy.json").write_text(json.dumps(results, indent=1))
    print(f"\nfigures: {args.out / 'forecast_accuracy.json'}")


if __name__ == "__main__":
    main()
