"""Slurm site profiles: what differs between clusters, as data (``slurm/profiles/<site>.yaml``).

A profile says where jobs go (partition, account, QoS, constraint), what one node
offers (GPUs, GPU memory, CPUs and host memory per GPU), the site's time limit,
the shell lines that prepare a job (``module load``, activating a venv), extra
environment variables, the price of a GPU-hour and any site-specific sbatch
options. Standard library + PyYAML only, like :mod:`launch.config`.

Loading collects *every* problem (unknown keys with a did-you-mean, wrong types,
non-positive numbers, secret-looking environment variables) and raises one
:class:`ProfileError` listing them all, each naming the field, the value and the fix.

Example
-------
>>> p = load_profile("dev")                  # slurm/profiles/dev.yaml
>>> p.partition, p.gpus_per_node
('debug', 2)
>>> load_profile("path/to/site.yaml")        # a path is used as is
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch.config import InputError, read_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILES_DIR = REPO_ROOT / "slurm" / "profiles"

SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
"""An ``env`` name containing one of these (any case) is refused: profiles are committed and
their values end up in every sbatch script."""

SECRET_VALUE_PREFIXES = ("hf_", "sk-", "ghp_", "github_pat_", "xoxb-", "xoxp-")
"""Values starting like a well-known API token are refused as well."""

RESERVED_SBATCH = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "time": "max_time_min (each job sets its own time, checked against it)",
    "gpus_per_node": "gpus_per_node",
    "gpus": "gpus_per_node",
    "cpus_per_gpu": "cpus_per_gpu",
    "cpus_per_task": "cpus_per_gpu",
    "mem": "mem_gb_per_gpu",
    "mem_per_gpu": "mem_gb_per_gpu",
    "nodes": "the experiment config's resources.nodes",
    "ntasks_per_node": "nothing: the launcher sets it from the GPUs",
    "job_name": "nothing: the launcher names jobs",
    "output": "nothing: the launcher puts logs in the experiment directory",
    "error": "nothing: the launcher puts logs in the experiment directory",
}
"""sbatch options that ``additional_parameters`` may not set, and the field to use instead."""


class ProfileError(InputError):
    """Every problem found in a Slurm profile (``field: what is wrong (value) -> fix``), raised once."""

    def __init__(self, problems: tp.Sequence[str], source: str = "profile") -> None:
        super().__init__(problems, source)


# --------------------------------------------------------------------------- schema


@dataclass
class SlurmProfile:
    """One Slurm site: where jobs go and what a node offers."""

    name: str = ""
    """Profile name; defaults to the file name without ``.yaml``. If given, it must equal
    that file name so ``--profile NAME`` and the file agree."""

    partition: str = ""
    """Partition (``sbatch --partition``) that has the GPU nodes. Required."""

    account: tp.Optional[str] = None
    """Account charged for the jobs (``--account``); null: the user's default account."""

    qos: tp.Optional[str] = None
    """Quality of service (``--qos``); null: the partition's default."""

    constraint: tp.Optional[str] = None
    """Node features the jobs need (``--constraint``, e.g. ``a100`` or ``a100&ib``); null: any node."""

    gpus_per_node: int = 1
    """GPUs in one node of the partition: the most one job may ask for per node."""

    max_nodes: tp.Optional[int] = None
    """The most nodes one job may ask for: the partition's node count or the QoS's ``MaxNodes``
    (``sinfo -s``, ``sacctmgr show qos``). Jobs asking for more are refused before submission
    instead of pending forever; null: not checked."""

    gpu_type: str = ""
    """GPU model (``a100``, ``h100``, ``fake``), for reports and cost tables. Not sent to Slurm:
    select nodes with ``constraint``, or, where the site wants typed GRES, set
    ``additional_parameters: {gres: "gpu:a100:8"}``."""

    gpu_mem_gb: int = 16
    """Memory of one GPU in GB, to check that a method fits before submitting."""

    cpus_per_gpu: int = 8
    """CPU cores a job gets per GPU (the site's fair share: node cores / GPUs)."""

    mem_gb_per_gpu: int = 32
    """Host memory in GB a job gets per GPU (the site's fair share: node memory / GPUs)."""

    max_time_min: int = 60
    """The partition's (or QoS's) wall-clock limit in minutes; jobs asking for more are refused
    before submission."""

    setup: tp.List[str] = field(default_factory=list)
    """Shell lines run at the start of every job script, before the job, e.g.
    ``module load cuda/12.4`` and ``source ~/venvs/cyberft/bin/activate``."""

    env: tp.Dict[str, str] = field(default_factory=dict)
    """Environment variables set for every job (``NCCL_DEBUG: WARN``). Never secrets: a name with
    TOKEN, KEY, SECRET or PASSWORD is refused; export those in your shell (sbatch passes the
    submitting environment on) so they are read on the compute node."""

    price_per_gpu_hour: float = 0.0
    """Price of one GPU-hour in your currency, for cost estimates; 0 when free."""

    python: tp.Optional[str] = None
    """The Python that runs the jobs on the compute nodes (``/shared/venvs/cyberft/bin/python``, or a
    container command such as ``apptainer exec img.sif python``); null: the interpreter running
    ``cyberft submit``, which must then exist at the same path on the nodes."""

    shared_dirs: tp.List[str] = field(default_factory=list)
    """Directories every compute node sees at the same path (``/home``, ``/scratch``). When set, the
    experiment's output directory, local model and data paths and the job Python must lie under
    one of them (node-local paths such as /tmp fail only once the job starts). Empty: not checked
    (single-machine clusters such as ``dev``)."""

    additional_parameters: tp.Dict[str, tp.Any] = field(default_factory=dict)
    """Other sbatch options for this site, passed to submitit's ``slurm_additional_parameters``:
    the option name without ``--`` (``mail_type: FAIL``, ``exclusive: true``, ``gres: gpu:a100:8``).
    Options that have a field above are refused (use the field)."""


# --------------------------------------------------------------------------- typed loading


def _type_error(where: str, want: str, value: tp.Any, fix: str) -> str:
    return f"{where}: expected {want}, got {type(value).__name__} {value!r} -> {fix}"


def _convert(name: str, value: tp.Any, hint: tp.Any, problems: list[str]) -> tp.Any:
    """``value`` checked against field type ``hint``; appends a problem and returns None when it does not fit."""
    origin, args = tp.get_origin(hint), tp.get_args(hint)
    if origin is tp.Union:  # Optional[str]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is str:
        if isinstance(value, str):
            return value
        return problems.append(_type_error(name, "a string", value, "quote it"))
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return problems.append(_type_error(name, "a whole number", value, "write e.g. 8"))
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if math.isfinite(value):
                    return float(value)
            except OverflowError:  # an integer beyond float range
                pass
        # nan passes every range check (nan < 0 is false), so it is refused here with inf.
        return problems.append(_type_error(name, "a finite number", value, "write e.g. 2.5"))
    if origin is list:
        if not isinstance(value, list):
            return problems.append(_type_error(name, "a list of strings", value, "write a YAML list: [line one, line two]"))
        bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
        for i in bad:
            problems.append(_type_error(f"{name}[{i}]", "a string", value[i], "quote the shell line"))
        return None if bad else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            return problems.append(_type_error(name, "a mapping", value, "write NAME: value pairs, or {} for none"))
        return dict(value)  # entries are checked in _check_env / _check_additional
    raise TypeError(f"unsupported schema type {hint!r} for {name}")  # a bug in the schema, not user input


def _check_env(env: dict, problems: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in env.items():
        where = f"env.{key}"
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            problems.append(f"{where}: {key!r} is not a valid variable name -> letters, digits and '_', not starting with a digit")
            continue
        if any(w in key.upper() for w in SECRET_WORDS):
            problems.append(
                f"{where}: looks like a secret (name contains {'/'.join(SECRET_WORDS)}); profiles are committed and "
                "copied into every job script -> remove it; export it in your shell; it is read on the compute node"
            )
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(_type_error(where, "a string", value, "quote it, e.g. \"1\" or \"true\""))
            continue
        if isinstance(value, str) and value.startswith(SECRET_VALUE_PREFIXES):
            problems.append(
                f"{where}: the value looks like an API token -> remove it; export it in your shell; "
                "it is read on the compute node"
            )
            continue
        out[key] = str(value)
    return out


def _check_additional(params: dict, problems: list[str]) -> dict[str, tp.Any]:
    out: dict[str, tp.Any] = {}
    for key, value in params.items():
        where = f"additional_parameters.{key}"
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
            problems.append(f"{where}: {key!r} is not an sbatch option name -> e.g. mail_type (without the leading --)")
            continue
        norm = key.replace("-", "_")
        if norm in RESERVED_SBATCH:
            problems.append(f"{where}: has its own field -> use {RESERVED_SBATCH[norm]} instead")
            continue
        if value is not None and not isinstance(value, (str, int, float, bool)):
            problems.append(_type_error(where, "a string, number or true", value, "write the option's value as text"))
            continue
        out[key] = value
    return out


def _validate(p: SlurmProfile, stem: tp.Optional[str], problems: list[str]) -> None:
    if not p.name:
        problems.append("name: empty -> name the profile, or load it from a file (the name defaults to the file name)")
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p.name):
        problems.append(f"name: {p.name!r} -> letters, digits, '_', '.', '-'")
    elif stem is not None and p.name != stem:
        problems.append(f"name: {p.name!r} differs from the file name {stem!r} -> rename the file or remove the name")
    if not p.partition:
        problems.append("partition: missing or empty -> the partition with the GPU nodes (see `sinfo -s`)")
    for key in ("account", "qos", "constraint"):
        if getattr(p, key) == "":
            problems.append(f"{key}: empty string -> write null for the site default")
    for key in ("gpus_per_node", "gpu_mem_gb", "cpus_per_gpu", "mem_gb_per_gpu", "max_time_min"):
        v = getattr(p, key)
        if v < 1:
            problems.append(f"{key}: {v} -> a positive whole number")
    if p.max_nodes is not None and p.max_nodes < 1:
        problems.append(f"max_nodes: {p.max_nodes} -> a positive whole number, or null for no limit")
    if p.price_per_gpu_hour < 0:
        problems.append(f"price_per_gpu_hour: {p.price_per_gpu_hour} -> 0 or more")
    for i, line in enumerate(p.setup):
        if not line.strip():
            problems.append(f"setup[{i}]: empty line -> remove it")
    if p.python is not None and not p.python.strip():
        problems.append("python: empty string -> write null to use the interpreter running cyberft")
    for i, d in enumerate(p.shared_dirs):
        if not d.startswith("/"):
            problems.append(f"shared_dirs[{i}]: {d!r} is not an absolute path -> e.g. /scratch")


def profile_from_dict(raw: tp.Any, source: str = "profile", stem: tp.Optional[str] = None) -> SlurmProfile:
    """Build and validate a profile from a raw mapping; raise :class:`ProfileError` with every problem.

    ``stem`` is the file name without ``.yaml``: the default ``name``, which an explicit name must match.
    """
    if not isinstance(raw, dict):
        raise ProfileError([f"top level: expected a mapping of profile fields, got {type(raw).__name__} "
                            "-> write `field: value` lines (partition, gpus_per_node, ...) as in slurm/profiles/dev.yaml"], source)
    problems: list[str] = []
    hints = tp.get_type_hints(SlurmProfile)
    names = [f.name for f in dataclasses.fields(SlurmProfile)]
    kwargs: dict[str, tp.Any] = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
            problems.append(f"{key}: unknown key -> {fix}")
            continue
        before = len(problems)
        converted = _convert(key, value, hints[key], problems)
        if len(problems) == before:  # a bad value keeps its default so the checks below still run
            kwargs[key] = converted
    if "env" in kwargs:
        kwargs["env"] = _check_env(kwargs["env"], problems)
    if "additional_parameters" in kwargs:
        kwargs["additional_parameters"] = _check_additional(kwargs["additional_parameters"], problems)
    if not kwargs.get("name") and stem:
        kwargs["name"] = stem
    profile = SlurmProfile(**kwargs)
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
    if not path.is_file():
        known = list_profiles()
        close = difflib.get_close_matches(os.fspath(name_or_path), known, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"shipped profiles: {', '.join(known) or 'none'}"
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ProfileError([f"profile: {str(path)!r} {what} -> {fix} (or give the path of a YAML file)"], str(path))
    raw, problem = read_yaml(path, "profile", "slurm/profiles/example-a100.yaml")
    if problem:
        raise ProfileError([problem], str(path))
    return profile_from_dict(raw if raw is not None else {}, source=str(path), stem=path.stem)
