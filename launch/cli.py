"""``cyberft``: the command line.

Subcommands map to small functions; heavy imports (torch, transformers) happen
only inside the subcommands that need them, so ``cyberft --help`` and config
validation stay fast on a login node.

Exit codes: 0 success, 1 a job failed, 2 bad input (nothing was started).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import typing as tp
from pathlib import Path

from launch.config import InputError, dump_yaml, load_config

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _err(msg: str) -> None:
    print(f"cyberft: {msg}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> tp.Any:
    return load_config(args.config, args.overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and validate a config; print the resolved config."""
    cfg = _load(args)
    print(dump_yaml(cfg), end="")
    print(f"# OK: {len(cfg.methods)} method(s): {', '.join(f'{m.name} ({m.kind})' for m in cfg.methods)}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run a whole experiment locally: training jobs, then the shared evaluation."""
    from launch import experiment, local, report
    from launch.data import DataError, prepare_splits

    cfg = experiment.resolve_paths(_load(args))
    exp_dir = experiment.create(cfg, args.config, args.overrides)
    try:
        prepared = prepare_splits(cfg.data, exp_dir / "data", progress=not args.no_progress)
    except DataError as exc:
        shutil.rmtree(exp_dir)  # ours, just made: leave nothing half-prepared behind
        _err(f"{len(exc.problems)} problem(s) in the data:\n" + "\n".join(f"  - {p}" for p in exc.problems))
        return EXIT_BAD_INPUT
    print(f"[cyberft] experiment {exp_dir}", flush=True)
    print(f"[cyberft] data: {prepared.n_train} train, {prepared.n_eval} eval, {prepared.n_dropped_duplicates} duplicate(s) dropped", flush=True)
    rows, states = local.run(cfg, exp_dir, progress=not args.no_progress)
    print()
    print(report.format_table(rows))
    print(f"\nexperiment directory: {exp_dir}")
    print(f"report: {exp_dir / 'report.html'}")
    return EXIT_OK if all(s == "completed" for s in states.values()) else EXIT_JOB_FAILED


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a dataset: count, answer-letter distribution, every problem."""
    from launch.data import check_path

    return check_path(args.path, args.format, args.split)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Build a tiny local Llama model and tokenizer (imports torch)."""
    from train import tiny_model

    argv = [args.out_dir, "--data", args.data, "--seed", str(args.seed)]
    return tiny_model.main(argv)


def cmd_report(args: argparse.Namespace) -> int:
    """Print an experiment's comparison table from its summary.json."""
    from launch import report
    from launch.fsio import read_json

    summary = Path(args.exp_dir) / "summary.json"
    if not summary.is_file():
        _err(f"{summary} does not exist -> the evaluation job has not finished; check its log under {args.exp_dir}/jobs")
        return EXIT_BAD_INPUT
    print(report.format_table(read_json(summary)["rows"]))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cyberft",
        description="Fine-tune LLMs with several methods, evaluate them on CyberMetric-style "
        "multiple-choice questions, and compare accuracy against cost.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="experiment YAML, e.g. configs/smoke.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. methods.lora.learning_rate=1e-4")

    p = sub.add_parser("run", help="run an experiment locally (training jobs, then evaluation)")
    with_config(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="validate a config and print it resolved")
    with_config(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = dsub.add_parser("check", help="record count, answer-letter distribution and every problem")
    c.add_argument("path", help="CyberMetric JSON, JSONL, or a datasets directory")
    c.add_argument("--format", default="auto", choices=["auto", "cybermetric", "jsonl", "hf"])
    c.add_argument("--split", default="train", help="split of a Hugging Face dataset")
    c.set_defaults(func=cmd_data_check)

    p = sub.add_parser("tiny-model", help="build a tiny local Llama model + tokenizer (no hub)")
    p.add_argument("out_dir")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "data" / "sample" / "cyber_mcq.json"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("report", help="print an experiment's comparison table")
    p.add_argument("exp_dir")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: tp.Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:  # config, profile or data: nothing was started
        _err(str(exc))
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
