"""Slurm site profiles: what differs between clusters, as data (``slurm/profiles/<site>.yaml``).

A profile says where jobs go (partition, account, QoS, constraint), what one node
offers (GPUs and their GRES type, GPU memory, CPUs and host memory per GPU), the
site's time limit, the shell lines that prepare a job (``module load``, activating a
venv), extra environment variables, the price of a GPU-hour and any site-specific
sbatch options. Standard library + PyYAML only, like :mod:`launch.spec.config`, and read
by the same YAML reader (:mod:`launch.spec.yamlio`) and typed loader (:mod:`launch.spec.schema`).

Loading collects *every* problem (unknown keys with a did-you-mean, wrong types,
numbers out of range, credentials in ``env`` or ``setup``, values that cannot go into
a job script, sbatch options the launcher sets itself) and raises one
:class:`ProfileError` listing them all, each naming the field, the value and the fix.

Example
-------
>>> p = load_profile("dev")                  # slurm/profiles/dev.yaml
>>> p.partition, p.gpus_per_node
('debug', 2)
>>> load_profile("path/to/site.yaml")        # a path is used as is
"""

from __future__ import annotations

import difflib
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import REPO_ROOT
from launch.spec import scriptsafe, yamlio
from launch.spec.redact import SHELL_FIX, assigned_credentials, is_credential_name, secret_problem, short
from launch.spec.schema import NAME_RE, InputError, Range, build, key_label

PROFILES_DIR = REPO_ROOT / "slurm" / "profiles"

_TASKS = "nothing: one task per GPU, from resources.gpus_per_node"
_GPUS = (
    "resources.gpus_per_node in the config, and for typed GRES (gpu:a100:N) the profile's "
    "gpu_type with typed_gpus: true"
)
_LOGS = "nothing: the launcher writes each job's logs into EXP/jobs/<id>/"
_SBATCH_READS = "nothing: it changes what sbatch does or prints, and the launcher reads the job id from it"
LAUNCHER_OWNED: dict[str, str] = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "time": "resources.time_min in the config (checked against max_time_min)",
    "time-min": "resources.time_min in the config (checked against max_time_min)",
    "nodes": "resources.nodes in the config",
    "ntasks": _TASKS,
    "ntasks-per-node": _TASKS,
    "ntasks-per-core": _TASKS,
    "ntasks-per-socket": _TASKS,
    "ntasks-per-gpu": _TASKS,
    "gres": _GPUS,
    "gpus": _GPUS,
    "gpus-per-node": _GPUS,
    "gpus-per-task": _GPUS,
    "gpus-per-socket": _GPUS,
    "tres-per-task": _GPUS,
    "cpus-per-task": "resources.cpus_per_gpu in the config (the site's share: cpus_per_gpu)",
    "cpus-per-gpu": "resources.cpus_per_gpu in the config (the site's share: cpus_per_gpu)",
    "mincpus": "resources.cpus_per_gpu in the config (the site's share: cpus_per_gpu)",
    "mem": "resources.mem_gb_per_gpu in the config (the site's share: mem_gb_per_gpu)",
    "mem-per-cpu": "resources.mem_gb_per_gpu in the config (the site's share: mem_gb_per_gpu)",
    "mem-per-gpu": "resources.mem_gb_per_gpu in the config (the site's share: mem_gb_per_gpu)",
    "job-name": "nothing: the launcher names jobs <experiment>.<method>",
    "output": _LOGS,
    "error": _LOGS,
    "input": _LOGS,
    "open-mode": _LOGS,
    "signal": "nothing: the launcher asks for USR2 before the time limit to checkpoint and requeue",
    "array": "nothing: the launcher submits one job per method",
    "dependency": "nothing: the launcher chains the evaluation after every training job (afterany)",
    "kill-on-invalid-dep": "nothing: the launcher chains the evaluation after every training job (afterany)",
    "requeue": "resources.max_timeouts in the config (jobs checkpoint and requeue themselves)",
    "no-requeue": "resources.max_timeouts in the config (jobs checkpoint and requeue themselves)",
    "export": "env (the jobs need the submitting environment: the W&B key, HF token, SLURM_CONF)",
    "export-file": "env (the jobs need the submitting environment: the W&B key, HF token, SLURM_CONF)",
    "wrap": "nothing: the launcher writes the job script",
    "clusters": "nothing: status and cancel talk to the local cluster; submit from that cluster's login node",
    "parsable": _SBATCH_READS,
    "test-only": _SBATCH_READS,
    "wait": _SBATCH_READS,
    "help": _SBATCH_READS,
    "usage": _SBATCH_READS,
    "version": _SBATCH_READS,
    "quiet": _SBATCH_READS,
    "verbose": _SBATCH_READS,
}
"""sbatch options the launcher sets or depends on, refused in ``additional_parameters``: the field to use."""

SBATCH_OPTIONS = frozenset(LAUNCHER_OWNED) | frozenset(
    """
    acctg-freq batch bb bbf begin chdir cluster-constraint comment container container-id contiguous core-spec
    cores-per-socket cpu-freq deadline delay-boot distribution exclude exclusive extra-node-info get-user-env gid
    gpu-bind gpu-freq gres-flags hint hold ignore-pbs licenses mail-type mail-user mcs-label mem-bind network nice
    no-kill nodefile nodelist overcommit oversubscribe power priority profile propagate reboot reservation segment
    sockets-per-node spread-job stepmgr switches thread-spec threads-per-core tmp tres-bind uid use-min-nodes
    wait-all-nodes wckey
""".split()
)
"""Long options of sbatch (Slurm 22.05 to 24.11). getopt accepts any unambiguous prefix of one
(``--part`` is ``--partition``), so a key must be a full name: an abbreviation could set an option
the launcher owns."""


class ProfileError(InputError):
    """Every problem found in a Slurm profile (``field: what is wrong (value) -> fix``), raised once."""

    def __init__(self, problems: tp.Sequence[str], source: str = "profile") -> None:
        super().__init__(problems, source)


# --------------------------------------------------------------------------- schema

_POSITIVE = "a positive whole number"


@dataclass
class SlurmProfile:
    """One Slurm site: where jobs go and what a node offers."""

    name: str = ""
    """Profile name; defaults to the file name without ``.yaml``. If given, it must equal
    that file name so ``--profile NAME`` and the file agree."""

    partition: str = ""
    """Partition (``sbatch --partition``) that has the GPU nodes. Required."""

    account: str | None = None
    """Account charged for the jobs (``--account``); null: the user's default account."""

    qos: str | None = None
    """Quality of service (``--qos``); null: the partition's default."""

    constraint: str | None = None
    """Node features the jobs need (``--constraint``, e.g. ``a100`` or ``a100&ib``); null: any node."""

    gpus_per_node: tp.Annotated[int, Range(1, 1024, _POSITIVE)] = 1
    """GPUs in one node of the partition: the most one job may ask for per node."""

    max_nodes: tp.Annotated[int, Range(1, 100_000, f"{_POSITIVE}, or null for no limit")] | None = None
    """The most nodes one job may ask for: the partition's node count or the QoS's ``MaxNodes``
    (``sinfo -s``, ``sacctmgr show qos``). Jobs asking for more are refused before submission
    instead of pending forever; null: not checked."""

    gpu_type: str = ""
    """GPU model (``a100``, ``h100``, ``fake``), for reports and cost tables; with ``typed_gpus``
    also the GRES type the jobs request."""

    typed_gpus: bool = False
    """Request GPUs by type: ``--gpus-per-node=<gpu_type>:N`` instead of ``--gpus-per-node=N``. For
    sites whose GRES is typed (``sinfo -o %G`` shows ``gpu:a100:8``) and whose partition mixes GPU
    models or requires the type; a plain count is granted any type."""

    gpu_mem_gb: tp.Annotated[int, Range(1, 100_000, _POSITIVE)] = 16
    """Memory of one GPU in GB, to check that a method fits before submitting."""

    cpus_per_gpu: tp.Annotated[int, Range(1, 100_000, _POSITIVE)] = 8
    """CPU cores a job gets per GPU (the site's fair share: node cores / GPUs)."""

    mem_gb_per_gpu: tp.Annotated[int, Range(1, 100_000, _POSITIVE)] = 32
    """Host memory in GB a job gets per GPU (the site's fair share: node memory / GPUs)."""

    max_time_min: tp.Annotated[int, Range(1, 10**7, _POSITIVE)] = 60
    """The partition's (or QoS's) wall-clock limit in minutes; jobs asking for more are refused
    before submission."""

    setup: list[str] = field(default_factory=list)
    """Shell lines run at the start of every job script, before the job, e.g.
    ``module load cuda/12.4`` and ``source ~/venvs/cyberft/bin/activate``. Never a credential:
    a line assigning one (``export WANDB_API_KEY=...``) is refused."""

    env: dict[str, str] = field(default_factory=dict)
    """Environment variables set for every job (``NCCL_DEBUG: WARN``). Never secrets: a name that
    names a credential (TOKEN, KEY, SECRET, PASSWORD, PASSWD, ...) or a token-shaped value is
    refused; export those in your shell (sbatch passes the submitting environment on) so they
    are read on the compute node."""

    price_per_gpu_hour: tp.Annotated[float, Range(0, 10**6, "0 or more")] = 0.0
    """Price of one GPU-hour in your currency, for cost estimates; 0 when free."""

    job_startup_s: tp.Annotated[float, Range(0, 3600, "from 0 to 3600 (seconds), or null")] | None = None
    """Seconds a job takes at this site from its start to its first step, apart from reading the
    weights (module loads, a container's start, imports from shared storage, CUDA and NCCL
    initialisation), for the cost forecast; null: 60, an assumption for a GPU site. Its calibration
    scales whatever is given by what the site measures."""

    gpu_tflops: tp.Annotated[float, Range(0, 10**5, "more than 0 (TFLOP/s), or null", lo_open=True)] | None = None
    """Peak dense TFLOP/s of one GPU at the precision the methods train in, for the cost forecast
    (``launch/cost/forecast.py``); null: the data sheet's figure for ``gpu_type`` (a100, h100, h200, l40s,
    a10g, v100). Set it for other GPUs, power-capped ones, or where CPUs stand in (``dev``: one core's
    fp32 matmul rate). The forecast's utilisation is calibrated against it, so keep it fixed once
    the site has calibration runs."""

    python: str | None = None
    """The Python that runs the jobs on the compute nodes (``/shared/venvs/cyberft/bin/python``, or a
    container command such as ``apptainer exec img.sif python``); null: the interpreter running
    ``cyberft submit``, which must then exist at the same path on the nodes."""

    shared_dirs: list[str] = field(default_factory=list)
    """Directories every compute node sees at the same path (``/home``, ``/scratch``). When set, the
    experiment's output directory, a local model directory and the job Python must lie under one
    of them, as written (node-local paths such as /tmp fail only once the job starts). Data files
    need not: they are copied into the experiment. Empty: not checked (single-machine clusters
    such as ``dev``)."""

    additional_parameters: dict[str, tp.Any] = field(default_factory=dict)
    """Other sbatch options for this site, passed to submitit's ``slurm_additional_parameters``:
    the full option name without ``--`` (``mail_type: FAIL``, ``exclusive: true``,
    ``reservation: my-resv``). Options the launcher sets itself (:data:`LAUNCHER_OWNED`: time,
    GPUs, CPUs, memory, tasks, logs, signal, array, dependency, requeue, export, ...) are refused
    with the field that controls each."""


# --------------------------------------------------------------------------- checks


def _env_problems(env: dict[str, str]) -> list[str]:
    return [
        f"env.{key_label(k)}: names a credential (value not shown); profiles are committed and copied into "
        f"every job script -> remove it; {SHELL_FIX}"
        for k in env
        if is_credential_name(k)
    ]


def _setup_problems(setup: list[str]) -> list[str]:
    problems = []
    for i, line in enumerate(setup):
        if not line.strip():
            problems.append(f"setup[{i}]: empty line -> remove it")
        for name in assigned_credentials(line):
            problems.append(
                f"setup[{i}]: sets {name}, a credential (value not shown); profiles are committed and "
                f"copied into every job script -> remove the line; {SHELL_FIX}"
            )
    return problems


def option_problem(key: str) -> str | None:
    """Why ``key`` cannot be an ``additional_parameters`` option (None when it can)."""
    where = f"additional_parameters.{key}"
    option = key.replace("_", "-")
    if option in LAUNCHER_OWNED:
        return f"{where}: the launcher sets this option itself -> use {LAUNCHER_OWNED[option]} instead"
    if option in SBATCH_OPTIONS:
        return None
    longer = sorted(o for o in SBATCH_OPTIONS if o.startswith(option))
    if longer:
        return (
            f"{where}: sbatch would read it as an abbreviation of --{' or --'.join(longer[:3])} -> write the full "
            "option name"
        )
    close = difflib.get_close_matches(option, sorted(SBATCH_OPTIONS), n=1)
    fix = f"did you mean {close[0].replace('-', '_')!r}?" if close else "see `man sbatch` for the options"
    return f"{where}: not an sbatch option -> {fix}"


def _validate(p: SlurmProfile, stem: str | None, problems: list[str]) -> None:
    if not p.name:
        problems.append("name: empty -> name the profile, or load it from a file (the name defaults to the file name)")
    elif not NAME_RE.fullmatch(p.name):
        problems.append(f"name: {short(p.name)} -> letters, digits, '_', '.', '-'")
    elif stem is not None and p.name != stem:
        problems.append(
            f"name: {short(p.name)} differs from the file name {stem!r} -> rename the file or remove the name"
        )
    if not p.partition:
        problems.append("partition: missing or empty -> the partition with the GPU nodes (see `sinfo -s`)")
    for key in ("account", "qos", "constraint"):
        if getattr(p, key) == "":
            problems.append(f"{key}: empty string -> write null for the site default")
    if p.typed_gpus and not p.gpu_type:
        problems.append(
            "typed_gpus: true without a gpu_type -> set gpu_type to the GRES type (`sinfo -o %G` shows "
            "gpu:<type>:<count>), or typed_gpus: false"
        )
    if p.python is not None and not p.python.strip():
        problems.append("python: empty string -> write null to use the interpreter running cyberft")
    for i, d in enumerate(p.shared_dirs):
        if not d.startswith("/"):
            problems.append(f"shared_dirs[{i}]: {short(d)} is not an absolute path -> e.g. /scratch")
    problems += _env_problems(p.env) + _setup_problems(p.setup)
    problems += [x for x in map(option_problem, p.additional_parameters) if x]
    problems += [
        x
        for k, v in p.additional_parameters.items()
        if (x := secret_problem(f"additional_parameters.{k}", v, "the profile"))
    ]
    problems += scriptsafe.profile_problems(p)


def profile_from_dict(raw: tp.Any, source: str = "profile", stem: str | None = None) -> SlurmProfile:
    """Build and validate a profile from a raw mapping; raise :class:`ProfileError` with every problem.

    ``stem`` is the file name without ``.yaml``: the default ``name``, which an explicit name must match.
    """
    if not isinstance(raw, dict):
        raise ProfileError(
            [
                f"top level: expected a mapping of profile fields, got {type(raw).__name__} "
                "-> write `field: value` lines (partition, gpus_per_node, ...) as in "
                "slurm/profiles/dev.yaml"
            ],
            source,
        )
    env = raw.get("env")
    if isinstance(env, dict):  # numbers are fine as variable values: written as text
        raw = {
            **raw,
            "env": {
                k: str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in env.items()
            },
        }
    problems: list[str] = []
    profile = build(SlurmProfile, raw, "", problems)
    if not profile.name and stem:
        profile.name = stem
    _validate(profile, stem, problems)
    if problems:
        raise ProfileError(problems, source)
    return profile


# --------------------------------------------------------------------------- entry points


def list_profiles() -> list[str]:
    """Names of the shipped profiles (``slurm/profiles/*.yaml``), sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name_or_path: str | os.PathLike) -> Path:
    """The file for a profile name (``slurm/profiles/<name>.yaml``) or a path (used as is).

    Anything with a path separator or a ``.yaml``/``.yml`` suffix, or that exists, is a path.
    """
    text = os.fspath(name_or_path)
    if os.sep in text or "/" in text or text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return Path(text)
    return PROFILES_DIR / f"{text}.yaml"


def load_profile(name_or_path: str | os.PathLike) -> SlurmProfile:
    """Load and validate a profile by name (``dev``) or path; raise :class:`ProfileError` with every problem."""
    path = profile_path(name_or_path)
    if not path.exists() or path.is_dir():  # a device or pipe is refused by the reader, with its own words
        known = list_profiles()
        close = difflib.get_close_matches(os.fspath(name_or_path), known, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"shipped profiles: {', '.join(known) or 'none'}"
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ProfileError([f"profile: {str(path)!r} {what} -> {fix} (or give the path of a YAML file)"], str(path))
    raw, problem = yamlio.read(path, "profile", "slurm/profiles/example-a100.yaml")
    if problem:
        raise ProfileError([problem], str(path))
    return profile_from_dict(raw if raw is not None else {}, source=str(path), stem=path.stem)
