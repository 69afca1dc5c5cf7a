"""``cyberft profile detect`` and ``cyberft profile check``: ask Slurm, write a profile, let Slurm judge it.

:func:`gather` runs the read-only commands (``sinfo``, ``scontrol``, ``sacctmgr`` where slurmdbd
answers) and parses them with :mod:`launch.site.sitedetect`; :func:`detect` resolves the choices (a
terminal is asked, otherwise the flag is required: exit 2 listing them), writes the profile
atomically and checks it. :func:`check` loads a profile with the existing loader and tries a
training job of the profile's full shape and an evaluation job with ``sbatch --test-only``: nothing
is queued. A refusal is shown with Slurm's own words and the profile field that causes it, found by
retrying with that one field relaxed. Slurm 22.05's ``--test-only`` does not look at accounts,
QoS or time limits (the scheduler would hold such a job pending for ever), so those are checked
against the facts too, with the pending reason Slurm would give.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import typing as tp
from dataclasses import dataclass, replace
from pathlib import Path

from launch import REPO_ROOT
from launch.run.slurm import SlurmError, available
from launch.site.sitechoice import Choice, resolve
from launch.site.sitedetect import (
    ASSOC_FORMAT,
    QOS_FORMAT,
    SINFO_FORMAT,
    Facts,
    Partition,
    enforced,
    parse_assoc,
    parse_config,
    parse_partitions,
    parse_qos,
    parse_sinfo,
    parse_users,
)
from launch.site.siteprofile import build, render

Runner = tp.Callable[[list[str]], tuple[int, str, str]]
SLURM_COMMANDS = ("sinfo", "scontrol", "sacctmgr", "sbatch")


def run_command(cmd: list[str], timeout: float = 30) -> tuple[int, str, str]:
    """Run a Slurm command: ``(returncode, stdout, stderr)``; a timeout is returncode 124."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"{cmd[0]} did not answer within {timeout:.0f}s"
    return proc.returncode, proc.stdout, proc.stderr


def _out(run: Runner, cmd: list[str]) -> str:
    rc, out, err = run(cmd)
    if rc != 0:
        raise SlurmError(
            f"{' '.join(cmd)} failed (rc={rc}): {(err or out).strip()} -> is slurmctld up? (`scontrol ping`)"
        )
    return out


def no_slurm_message() -> str | None:
    """Why detection cannot run here (no Slurm command on PATH), or None."""
    missing = [c for c in SLURM_COMMANDS[:2] if not available(c)]
    if not missing:
        return None
    return (
        f"no Slurm command found ({', '.join(missing)} not on PATH) -> run this on the cluster's login node, "
        "or load Slurm first (`module load slurm`); detection asks the scheduler, not this machine"
    )


def gather(run: Runner = run_command) -> Facts:
    """Read the scheduler: nodes, partitions, configuration, and associations/QoS where slurmdbd answers."""
    config = parse_config(_out(run, ["scontrol", "show", "config"]))
    user = os.environ.get("USER") or getpass.getuser()
    facts = Facts(
        nodes=parse_sinfo(_out(run, ["sinfo", "-N", "-h", "-o", SINFO_FORMAT])),
        partitions=parse_partitions(_out(run, ["scontrol", "show", "partition", "-o"])),
        config=config,
        user=user,
        login_host=socket.gethostname().split(".")[0],
        python=sys.executable,
        base_python=os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        checkout=str(REPO_ROOT),
    )
    if config.get("AccountingStorageType", "").endswith("/none"):
        facts.dbd_note = "AccountingStorageType=accounting_storage/none"
    elif not available("sacctmgr"):
        facts.dbd_note = "sacctmgr not on PATH"
    else:
        calls = {
            "assoc": ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}", f"format={ASSOC_FORMAT}"],
            "user": ["sacctmgr", "-n", "-P", "show", "user", user, "format=User,DefaultAccount"],
            "qos": ["sacctmgr", "-n", "-P", "show", "qos", f"format={QOS_FORMAT}"],
        }
        answers = {k: run(cmd) for k, cmd in calls.items()}
        failed = [(k, a) for k, a in answers.items() if a[0] != 0]
        if failed:
            rc, out, err = failed[0][1]
            facts.dbd_note = f"sacctmgr: {((err or out).strip().splitlines() or [f'rc={rc}'])[-1]}"
        else:
            facts.assoc = parse_assoc(answers["assoc"][1])
            facts.default_accounts = parse_users(answers["user"][1])
            facts.qos = parse_qos(answers["qos"][1])
    return facts


# --------------------------------------------------------------------------- sbatch --test-only


@dataclass(frozen=True)
class Shape:
    """One job as the launcher would ask for it (per node)."""

    what: str
    gpus: int
    cpus_per_gpu: int
    mem_gb_per_gpu: int
    time_min: int
    typed: bool
    account: str | None
    qos: str | None
    constraint: str | None


def shapes(p: tp.Any) -> list[Shape]:
    """The profile's training shape (a whole node of it, its longest time) and the evaluation shape (1 GPU)."""
    common = dict(typed=p.typed_gpus, account=p.account, qos=p.qos, constraint=p.constraint)
    return [
        Shape("training job", p.gpus_per_node, p.cpus_per_gpu, p.mem_gb_per_gpu, p.max_time_min, **common),
        Shape("evaluation job", 1, p.cpus_per_gpu, p.mem_gb_per_gpu, min(60, p.max_time_min), **common),
    ]


def sbatch_args(p: tp.Any, s: Shape) -> list[str]:
    """``sbatch --test-only`` arguments for shape ``s`` under profile ``p`` (as :mod:`launch.run.submit` asks)."""
    gpus = f"{p.gpu_type}:{s.gpus}" if s.typed and p.gpu_type else str(s.gpus)
    args = ["sbatch", "--test-only", f"--partition={p.partition}", f"--time={s.time_min}", "--nodes=1"]
    args += [f"--ntasks-per-node={s.gpus}", f"--cpus-per-task={s.cpus_per_gpu}"]
    args += [f"--mem={s.mem_gb_per_gpu * s.gpus}G", f"--gpus-per-node={gpus}"]
    args += [f"--{k}={v}" for k, v in (("account", s.account), ("qos", s.qos), ("constraint", s.constraint)) if v]
    for k, v in p.additional_parameters.items():
        args.append(f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}"))
    return [*args, "--wrap=true"]


RELAX: dict[str, tp.Callable[[Shape], Shape]] = {
    "max_time_min": lambda s: replace(s, time_min=1),
    "gpus_per_node": lambda s: replace(s, gpus=1),
    "cpus_per_gpu": lambda s: replace(s, cpus_per_gpu=1),
    "mem_gb_per_gpu": lambda s: replace(s, mem_gb_per_gpu=1),
    "typed_gpus": lambda s: replace(s, typed=False),
    "qos": lambda s: replace(s, qos=None),
    "account": lambda s: replace(s, account=None),
    "constraint": lambda s: replace(s, constraint=None),
}
"""Per profile field: the same job with that field at its most modest; the fields whose relaxation
lets Slurm accept the job are the ones to change."""


def _slurm_words(out: str, err: str) -> str:
    lines = [x.strip() for x in (err + "\n" + out).splitlines() if x.strip() and "to start at" not in x]
    return (
        "; ".join(dict.fromkeys(x.removeprefix("sbatch: error: ").removeprefix("allocation failure: ") for x in lines))
        or "refused, no message"
    )


def _accepted(p: tp.Any, s: Shape, run: Runner) -> tuple[bool, str]:
    rc, out, err = run(sbatch_args(p, s))
    return rc == 0, _slurm_words(out, err)


SIZES = {"max_time_min": "time_min", "gpus_per_node": "gpus", "cpus_per_gpu": "cpus_per_gpu",
         "mem_gb_per_gpu": "mem_gb_per_gpu"}  # fmt: skip
"""Fields with a size: Slurm is asked for the largest it accepts (bisection, a dozen ``--test-only`` calls)."""


def _largest(p: tp.Any, s: Shape, attr: str, run: Runner) -> int:
    lo, hi = 1, getattr(s, attr)  # 1 accepted (the relaxed shape), hi refused
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _accepted(p, replace(s, **{attr: mid}), run)[0] else (lo, mid)
    return lo


FIXES = {
    "gpus_per_node": "GPUs per node (sinfo -N -o '%N %G')",
    "cpus_per_gpu": "CPUs per GPU (sinfo -N -o '%N %c %G')",
    "mem_gb_per_gpu": "GB per GPU (sinfo -N -o '%N %m %G', MB)",
    "max_time_min": "minutes",
    "typed_gpus": "false, or a gpu_type the site's GRES has (sinfo -o %G)",
    "qos": "another QoS or null (sacctmgr show assoc user=$USER format=account,qos)",
    "account": "another account or null (sacctmgr show assoc user=$USER format=account)",
    "constraint": "null or a feature the nodes have (sinfo -o '%N %f')",
}


def test_only_problems(p: tp.Any, run: Runner = run_command) -> tuple[list[str], list[str]]:
    """``(problems, accepted)``: each field that makes Slurm refuse a shape, with Slurm's words and the fix.

    A field is named once, for the first shape it makes Slurm refuse.
    """
    problems: dict[str, str] = {}
    accepted = []
    for s in shapes(p):
        ok, words = _accepted(p, s, run)
        shown = " ".join(sbatch_args(p, s)[2:-1])
        if ok:
            accepted.append(f"{s.what} ({shown}): accepted by sbatch --test-only")
            continue
        if "invalid partition" in words.lower():
            problems.setdefault(
                "partition",
                f"partition: {p.partition!r}: sbatch --test-only refused the {s.what}: {words} -> "
                "a partition of `sinfo -s`",
            )
            continue
        # Every field at its most modest; a field is a cause when restoring it alone brings the refusal back.
        relaxed = s
        for relax in RELAX.values():
            relaxed = relax(relaxed)
        causes = []
        if _accepted(p, relaxed, run)[0]:
            for f in RELAX:
                others = s
                for g, other in RELAX.items():
                    others = other(others) if g != f else others
                ok_alone, why = _accepted(p, others, run) if others != relaxed else (True, "")
                if not ok_alone:
                    causes.append((f, others, why))
        if not causes:  # the modest job is refused too (e.g. no account): one field at a time
            for f, relax in RELAX.items():
                if relax(s) != s and _accepted(p, relax(s), run)[0]:
                    causes.append((f, s, words))
        if not causes:
            problems.setdefault(
                f"shape {s.what}",
                f"gpus_per_node, cpus_per_gpu, mem_gb_per_gpu: sbatch --test-only refused the {s.what} ({shown}): "
                f"{words} -> a smaller job: compare with `sinfo -N -o '%N %c %m %G'`",
            )
        for f, alone, why in causes:
            if f in problems:
                continue
            fix = FIXES[f]
            if f in SIZES:
                fix = f"at most {_largest(p, alone, SIZES[f], run)} {fix} (the most Slurm accepts for this job)"
            problems[f] = f"{f}: {getattr(p, f)}: sbatch --test-only refused the {s.what} ({shown}): {why} -> {fix}"
    return list(problems.values()), accepted


# --------------------------------------------------------------------------- what --test-only does not check


def policy_problems(p: tp.Any, f: Facts) -> list[str]:
    """Account, QoS and time limits that ``sbatch --test-only`` (22.05) lets through but the scheduler
    would hold pending for ever, from the facts."""
    part = f.partitions.get(p.partition, Partition(p.partition))
    problems = []
    default = (f.default_accounts or {}).get(f.user)
    account = p.account or default
    if account and part.allow_accounts is not None and account not in part.allow_accounts:
        what = f"null (your default account {account})" if not p.account else repr(account)
        problems.append(
            f"account: {what} may not use partition {p.partition} (AllowAccounts={','.join(part.allow_accounts)}): "
            f"Slurm would hold every job pending (Job's account not permitted to use this partition) -> account: "
            f"{' or '.join(part.allow_accounts)}"
        )
    if p.account and f.assoc is not None and "associations" in enforced(f.config):
        mine = {a.account for a in f.assoc if a.user == f.user}
        if p.account not in mine:
            problems.append(
                f"account: {p.account!r} is not one of {f.user}'s ({', '.join(sorted(mine)) or 'none'}): "
                "sbatch would refuse (Invalid account) -> one of them"
            )
    if part.max_time_min is not None and p.max_time_min > part.max_time_min:
        problems.append(
            f"max_time_min: {p.max_time_min} is above partition {p.partition}'s MaxTime "
            f"({part.max_time_min} min): Slurm would hold such jobs pending (PartitionTimeLimit) "
            f"-> at most {part.max_time_min}"
        )
    qos = p.qos or next((a.default_qos for a in f.assoc or [] if a.user == f.user and a.default_qos), "normal")
    limit = f.qos.get(qos).max_wall_min if f.qos and qos in f.qos else None
    if limit is not None and p.max_time_min > limit:
        problems.append(
            f"max_time_min: {p.max_time_min} is above QoS {qos}'s MaxWall ({limit} min): Slurm would "
            f"refuse or hold such jobs (QOSMaxWallDurationPerJobLimit) -> at most {limit}"
        )
    return problems


def check(
    profile_path: str | os.PathLike, facts: Facts | None, run: Runner = run_command
) -> tuple[list[str], list[str]]:
    """Load a profile with the existing loader and let Slurm judge it: ``(problems, accepted shapes)``.

    Raises
    ------
    launch.site.profiles.ProfileError
        When the file does not load (every problem, once).
    """
    from launch.site.profiles import load_profile

    p = load_profile(profile_path)
    problems, accepted = test_only_problems(p, run)
    named = {x.split(":", 1)[0] for x in problems}
    if facts is not None:
        problems += [x for x in policy_problems(p, facts) if x.split(":", 1)[0] not in named]
    return problems, accepted


# --------------------------------------------------------------------------- detect


def ask(choice: Choice, read: tp.Callable[[str], str] = input) -> str:
    """Ask on the terminal for one of ``choice.options`` (by number or name; Enter: the default)."""
    print(f"{choice.what}: several to choose from:")
    for i, o in enumerate(choice.options, 1):
        print(f"  {i}. {o}{'  (default)' if o == choice.default else ''}")
    for _ in range(3):
        answer = read(f"{choice.what} [{choice.default or '1-' + str(len(choice.options))}]: ").strip()
        if not answer and choice.default:
            return choice.default
        if answer.isdigit() and 1 <= int(answer) <= len(choice.options):
            return choice.options[int(answer) - 1]
        if answer in choice.options:
            return answer
        print(f"  not one of them: {answer!r}")
    raise SlurmError(f"{choice.what}: no choice made -> {choice.flag} <one of {', '.join(choice.options)}>")


@dataclass
class DetectArgs:
    output: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    force: bool = False
    python: str | None = None
    shared_dirs: list[str] | None = None
    price: float | None = None
    check: bool = True


def detect(a: DetectArgs, facts: Facts, interactive: bool, run: Runner = run_command) -> tuple[int, list[str]]:
    """Resolve, write and check a profile. Returns ``(exit code, problems)``; prints progress."""
    from launch.store.fsio import atomic_write_text

    picks = {"partition": a.partition, "account": a.account, "qos": a.qos}
    while True:
        r = resolve(facts, **picks)
        if r.problems or not r.pending:
            break
        if not interactive:
            return 2, [c.describe() for c in r.pending] + ["(no terminal to ask on: give the flag(s) above)"]
        picks[r.pending[0].what] = ask(r.pending[0])
    if r.problems:
        return 2, r.problems
    cluster = facts.config.get("ClusterName", "site")
    out = Path(a.output or REPO_ROOT / "slurm" / "profiles" / f"{cluster}-{r.partition}.yaml")
    if out.exists() and not a.force:
        return 2, [f"output: {out} exists -> --force to replace it, or -o another file"]
    extra = {"python": a.python, "shared_dirs": a.shared_dirs, "price": a.price}
    fields, header = build(facts, r, out.stem.removesuffix(".yml"), extra)
    intro = [
        f"Written by `cyberft profile detect` from cluster {cluster} (user {facts.user}); every value says where",
        "it came from. Read it, then: cyberft submit CONFIG --profile THIS_FILE --dry-run",
    ]
    if facts.assoc is None:
        intro.append(f"slurmdbd did not answer ({facts.dbd_note}): accounts from AllowAccounts, no QoS limits")
    atomic_write_text(out, render(fields, header, intro))
    print(f"wrote {out}")
    print("\n".join(f"  {h}" for h in header))
    if not a.check:
        return 0, []
    if not available("sbatch"):
        return 1, [
            "sbatch not on PATH: the profile was written but not checked -> `cyberft profile check` on a login node"
        ]
    problems, accepted = check(out, facts, run)
    print("\n".join(f"  {x}" for x in accepted))
    return (1, problems) if problems else (0, [])
