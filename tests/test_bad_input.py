"""Bad input never starts anything: ``cyberft submit`` refuses it, says where and how to fix it.

Every kind of bad input in :data:`KINDS` mutates one valid experiment (``configs/smoke.yaml`` on
the session's tiny model, a copy of the bundled sample questions, a copy of the ``dev`` profile,
an output directory that already holds an earlier experiment), runs
``cyberft submit CONFIG [key=value ...] --profile PROFILE`` in-process with fake
``sbatch``/``srun``/``scancel`` on PATH (tests/support/fake_slurm.py), then the same command with
``--dry-run``, and checks that

* the exit code is 2 (no traceback, no exit 1), for submit and for the dry run alike: the dry
  run runs every check submit runs (a few kinds document another code, e.g. a refusal only
  Slurm can make, or input that is accepted on purpose);
* stderr (stdout for the dry run) has a problem line that names the field or record
  (``methods[1] (lora).learning_rate``, ``record 3``, ``line 5``, ``profile: gpus_per_node``)
  *and* carries its fix (``->``) on that line;
* ``sbatch`` was never called (how fast a refusal comes is measured in bench/bench_cli.py, not asserted
  here: a wall-clock bound fails on a loaded machine);
* nothing already on disk changed: every file under the case directory (config, profile, data,
  model, the output directory with the earlier experiment) keeps its bytes, mode and mtime, and
  no file or directory appeared or vanished;
* no secret the case planted appears in any output, and no message line is longer than
  :data:`MAX_LINE` (long values are shortened).

The classes: config types, keys, ranges and numbers beyond any range; config and profile files
(syntax, encoding, size, not regular files); overrides; config x profile; profile values; data
records and files; values that would reach a job script unescaped (control characters, shell
syntax, sbatch's own quoting); secrets (credential names, token-shaped values, in env, setup
lines, config strings, overrides); YAML tricks (alias bombs, recursive aliases, duplicate keys,
YAML 1.1 base-60 numbers and yes/no booleans, depth); sbatch options the launcher owns or
abbreviations of them; DeepSpeed values that contradict the config; unfamiliar sites (paths off
shared storage, a submission Slurm refuses).

:func:`test_each_kind_is_refused` runs every kind once with its canonical bad value;
:func:`test_random_bad_input_is_refused` lets hypothesis pick the kind and the details (which
method or record, which bad value) from strategies: the same examples every run (``derandomize``), so a
run fails only when the code changed; ``BAD_INPUT_EXAMPLES=2000`` hunts longer, with new examples.

Running as root, where mode bits do not stop writes, the read-only output directory is checked
with ``os.access`` answering as for another user.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import stat
import tempfile
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launch import cli
from launch.site.profiles import LAUNCHER_OWNED
from launch.spec import yamlio
from launch.spec.config import METHOD_KINDS

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
DEV = yaml.safe_load((REPO / "slurm" / "profiles" / "dev.yaml").read_text(encoding="utf-8"))
SAMPLE = json.loads((REPO / "data" / "sample" / "cyber_mcq.json").read_text(encoding="utf-8"))["questions"]
N_RECORDS = 40  # a slice of the sample keeps each case fast; every mutation works on any size >= 4
LETTERS = ("A", "B", "C", "D")
from support.fake_slurm import install_fake_slurm  # noqa: E402

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MAX_LINE = 2000
"""The longest message line (stderr, the dry run's problem list) a case may print: long values are shortened."""


# --------------------------------------------------------------------------- one case


@dataclass
class Case:
    """A valid experiment on disk, before a mutation makes one part of it bad."""

    root: Path
    model: Path
    config: tp.Any = None
    profile: tp.Any = None
    records: tp.Any = None
    overrides: list[str] = field(default_factory=list)
    jsonl: bool = False  # write the data as JSONL instead of CyberMetric JSON
    config_bytes: bytes | None = None  # raw file contents replacing the YAML dump
    profile_bytes: bytes | None = None
    data_bytes: bytes | None = None
    config_arg: str | None = None  # what the command line names, when not the written file
    profile_arg: str | None = None
    files: dict[Path, bytes | None] = field(default_factory=dict)  # extra files; None: a directory
    chmods: list[tuple[Path, int]] = field(default_factory=list)
    as_non_root: bool = False  # run with os.access honouring mode bits, as for a user other than root
    secrets: list[str] = field(default_factory=lambda: ["s3cr3t"])  # must appear in no output
    env: dict[str, str] = field(default_factory=dict)  # extra environment (the fake sbatch's behaviour)
    patches: list[tuple[tp.Any, str, tp.Any]] = field(default_factory=list)  # (object, attribute, value)
    rc: int = 2  # the documented exit code of submit
    dry_rc: int | None = None  # ... and of the dry run (None: the same)
    verify: tp.Callable[[Path], None] | None = None  # for accepted input: checks on the fake sbatch's records

    def __post_init__(self) -> None:
        self.config = copy.deepcopy(SMOKE)
        self.config["model"]["name_or_path"] = str(self.model)
        self.config["output_dir"] = str(self.output_dir)
        self.config["data"]["train"]["path"] = str(self.data_path)
        self.profile = copy.deepcopy(DEV)
        self.records = copy.deepcopy(SAMPLE[:N_RECORDS])

    config_path = property(lambda self: self.root / "exp.yaml")
    profile_path = property(lambda self: self.root / "profiles" / "dev.yaml")
    output_dir = property(lambda self: self.root / "runs")
    earlier = property(lambda self: self.output_dir / "smoke-20240101-000000")

    @property
    def data_path(self) -> Path:
        return self.root / "data" / ("cyber_mcq.jsonl" if self.jsonl else "cyber_mcq.json")

    def use_jsonl(self) -> None:
        self.jsonl = True
        self.config["data"]["train"]["path"] = str(self.data_path)

    def data_text(self) -> str:
        """The data file as written (pretty JSON: one key per line; or one record per line)."""
        if self.jsonl:
            return "".join(json.dumps(r) + "\n" for r in self.records)
        return json.dumps({"questions": self.records}, indent=2)

    def method(self, i: int) -> dict:
        return self.config["methods"][i]

    def label(self, i: int) -> str:
        """Regex for how problems name method ``i``: ``methods[i] (name)`` or ``methods[i]``."""
        name = self.method(i).get("name")
        named = rf" \({re.escape(name)}\)" if isinstance(name, str) else ""
        return rf"methods\[{i}\](?:{named})?"

    def write(self) -> None:
        for path, text in [
            (self.data_path, self.data_bytes if self.data_bytes is not None else self.data_text().encode()),
            (self.profile_path, self.profile_bytes if self.profile_bytes is not None else _yaml(self.profile)),
            (self.config_path, self.config_bytes if self.config_bytes is not None else _yaml(self.config)),
            (
                self.earlier / "manifest.json",
                b'{"experiment": "smoke-20240101-000000", "jobs": {"lora": {"job_id": "17"}}}\n',
            ),
            (self.earlier / "config.yaml", _yaml(SMOKE)),
            (self.earlier / "data" / "train.jsonl", b'{"question": "q"}\n'),
            (self.earlier / "methods" / "lora" / "metrics.json", b'{"status": "completed"}\n'),
            *self.files.items(),
        ]:
            if text is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text)
        for path, mode in self.chmods:
            path.chmod(mode)

    def argv(self) -> list[str]:
        config = self.config_arg if self.config_arg is not None else str(self.config_path)
        profile = self.profile_arg if self.profile_arg is not None else str(self.profile_path)
        # Overrides before --profile: argparse hands them to the overrides list whatever they look like.
        return ["submit", config, *self.overrides, "--profile", profile]


def _yaml(obj: tp.Any) -> bytes:
    text = yamlio.dump(obj)
    assert yamlio.dump(yamlio.parse(text)) == text  # the harness writes what it means
    return text.encode("utf-8")


def _yaml_fails(text: str) -> bool:
    return yamlio.parse_problem(text)[1] is not None


class Pick:
    """Where a mutation chooses: the canonical ``default``, or (under hypothesis) a draw from ``strategy``."""

    def __init__(self, data: tp.Any = None) -> None:
        self.data = data

    def __call__(self, default: tp.Any, strategy: st.SearchStrategy | None = None) -> tp.Any:
        if self.data is None or strategy is None:
            return default
        return self.data.draw(st.one_of(st.just(default), strategy))


# --------------------------------------------------------------------------- strategies


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


NOT_A_NUMBER = st.text(max_size=12).filter(lambda s: not _is_float(s))
"""Text that the config's float fields cannot read ("1e-3" as text is fine; "fast" is not)."""
ANY_TEXT = st.text(max_size=12)
NON_POSITIVE_INT = st.integers(max_value=0)
NON_POSITIVE_FLOAT = st.floats(max_value=0.0)  # -inf included
NOT_A_MAPPING = st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(min_size=1, max_size=8))
METHOD = st.integers(0, len(SMOKE["methods"]) - 1)
RECORD = st.integers(0, N_RECORDS - 1)
RESOURCES = st.sampled_from(["methods", "eval"])
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKENS = {  # the canonical token of each shape, and a strategy drawing others of the same shape
    "wandb": ("0123456789abcdef" * 3)[:40],
    "hf": "hf_" + "s3cr3t" + "A" * 28,
    "github": "ghp_" + "s3cr3t" + "b" * 30,
    "github_pat": "github_pat_" + "s3cr3t" + "C" * 40,
    "aws": "AKIA" + "S3CR3T" + "Q" * 10,
    "openai": "sk-" + "s3cr3t" + "d" * 30,
    "slack": "xoxb-" + "1234567890-s3cr3t",
    "private_key": "-----BEGIN RSA PRIVATE KEY-----",
    "url": "https://alice:s3cr3t@example.org/x",
}
TOKEN_SHAPES = {
    "wandb": st.text("0123456789abcdef", min_size=40, max_size=40),
    "hf": st.text(ALNUM, min_size=34, max_size=40).map(lambda t: "hf_" + t),
    "github": st.text(ALNUM, min_size=36, max_size=36).map(lambda t: "ghp_" + t),
    "github_pat": st.text(ALNUM + "_", min_size=60, max_size=82).map(lambda t: "github_pat_" + t),
    "aws": st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=16).map(lambda t: "AKIA" + t),
    "openai": st.text(ALNUM, min_size=40, max_size=48).map(lambda t: "sk-" + t),
    "slack": st.text("0123456789", min_size=10, max_size=13).map(lambda t: f"xoxp-{t}-{t}"),
    "private_key": st.sampled_from(["RSA ", "EC ", "OPENSSH ", ""]).map(lambda t: f"-----BEGIN {t}PRIVATE KEY-----"),
    "url": st.text(ALNUM, min_size=6, max_size=12).map(lambda t: f"postgres://bob:{t}@db.example.org/x"),
}
CREDENTIAL_NAME = (
    st.tuples(
        st.sampled_from(["", "HF_", "WANDB_", "DB_", "MY_APP_", "AWS_", "hf_", "Github"]),
        st.sampled_from(
            [
                "TOKEN",
                "SECRET",
                "PASSWORD",
                "PASSWD",
                "PWD",
                "API_KEY",
                "APIKEY",
                "CREDENTIALS",
                "ACCESS_KEY",
                "PRIVATE_KEY",
                "AUTH",
                "Token",
                "secret",
                "Key",
            ]
        ),
    )
    .filter(lambda t: t[0] or t[1] != "Key")
    .map("".join)
)
"""Variable names that name a credential (by their words: HF_TOKEN, DB_PASSWD, GithubToken...)."""


def _token(case: Case, pick: Pick) -> str:
    """A token-shaped value (of a shape picked too), registered as a secret no output may show."""
    shape = pick("hf", st.sampled_from(sorted(TOKENS)))
    token = pick(TOKENS[shape], TOKEN_SHAPES[shape])
    case.secrets.append(token)
    return token


def _where(where: str) -> str:
    """Regex for a dotted config path as problems spell it: ``methods.1.kind`` -> ``methods\\[1\\] (lora)\\.kind``."""
    parts = [rf"\[{p}\](?: \([^)]*\))?" if p.isdigit() else re.escape(p) for p in where.split(".")]
    return r"\.".join(parts).replace(r"\.\[", r"\[")


def _resources(case: Case, pick: Pick, which: str | None = None) -> tuple[dict, str]:
    """The resources mapping a mutation changes (a method's or the eval job's) and its label regex."""
    if (which or pick("methods", RESOURCES)) == "eval":
        return case.config["eval"]["resources"], r"eval\.resources"
    i = pick(1, METHOD)
    return case.method(i)["resources"], case.label(i) + r"\.resources"


# --------------------------------------------------------------------------- the catalogue

Mutation = tp.Callable[[Case, Pick], list[str]]
KINDS: dict[str, Mutation] = {}
"""Kind of bad input -> mutation. A mutation changes the case and returns regexes, one per
problem line that must appear in stderr (each such line must also carry a ``->`` fix)."""


def kind(name: str) -> tp.Callable[[Mutation], Mutation]:
    def register(fn: Mutation) -> Mutation:
        assert name not in KINDS, name
        KINDS[name] = fn
        return fn

    return register


# ---- config: wrong types


@kind("string_for_float")
def _(case: Case, pick: Pick) -> list[str]:
    i, key = (
        pick(1, METHOD),
        pick("learning_rate", st.sampled_from(["learning_rate", "epochs", "warmup_ratio", "weight_decay"])),
    )
    case.method(i)[key] = pick("fast", NOT_A_NUMBER)
    return [rf"config: {case.label(i)}\.{key}: expected a number"]


@kind("string_for_int")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    key = pick("micro_batch_size", st.sampled_from(["micro_batch_size", "grad_accum_steps", "max_steps"]))
    case.method(i)[key] = pick("four", ANY_TEXT)
    return [rf"config: {case.label(i)}\.{key}: expected an integer"]


@kind("float_for_int")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    key = pick("time_min", st.sampled_from(["nodes", "gpus_per_node", "cpus_per_gpu", "mem_gb_per_gpu", "time_min"]))
    r[key] = pick(1.5, st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)))
    return [rf"config: {where}\.{key}: expected an integer"]


@kind("bool_for_number")
def _(case: Case, pick: Pick) -> list[str]:
    i, key = pick(0, METHOD), pick("learning_rate", st.sampled_from(["learning_rate", "micro_batch_size", "max_steps"]))
    case.method(i)[key] = pick(True, st.booleans())
    return [rf"config: {case.label(i)}\.{key}: expected "]


@kind("number_for_string")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("name", st.sampled_from(["name", "output_dir", "model.name_or_path", "data.train.path"]))
    *parents, key = where.split(".")
    node = case.config
    for p in parents:
        node = node[p]
    node[key] = pick(42, st.one_of(st.integers(), st.floats(allow_nan=False)))
    return [rf"config: {re.escape(where)}: expected a string"]


@kind("list_for_mapping")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick(
        "model",
        st.sampled_from(
            ["model", "data", "data.train", "eval", "tracking", "local", "methods.0.resources", "methods.1.lora"]
        ),
    )
    *parents, key = where.split(".")
    node: tp.Any = case.config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[key] = pick(["a", "b"], NOT_A_MAPPING)
    return [rf"config: {_where(where)}: expected a mapping"]


@kind("mapping_for_list")
def _(case: Case, pick: Pick) -> list[str]:
    """A mapping where a list goes (``target_modules`` also takes the word 'all-linear'). The contract, not the
    wording: the line names the field, says a mapping was given and echoes it, and its fix says to write a list."""
    if pick("methods", st.sampled_from(["methods", "target_modules"])) == "methods":
        case.config["methods"] = {m["name"]: m for m in case.config["methods"]}
        field_, keys = "methods", []  # the echo is cut after the first method: which one comes first is not the point
    else:
        value = pick({"q_proj": True}, st.dictionaries(IDENT, st.integers(), min_size=1, max_size=2))
        case.method(1)["lora"]["target_modules"] = value
        field_, keys = rf"{case.label(1)}\.lora\.target_modules", list(value)
    return [
        rf"config: {field_}: .*\b(mapping|dict)\b \{{",  # what was given ...
        *(rf"config: {field_}: .*\{{.*{re.escape(repr(k))}" for k in keys),  # ... echoed (its keys)
        rf"config: {field_}: .*-> .*\blist\b",  # the fix: a list
    ]


@kind("yaml11_surprise")
def _(case: Case, pick: Pick) -> list[str]:
    """What YAML 1.1 reads as a number or a boolean is text here, and the field refuses it."""
    where, text, needle = pick(
        ("methods.1.resources.time_min", "2:00:00", "expected an integer"),
        st.sampled_from(
            [
                ("methods.0.resources.time_min", "1:30", "expected an integer"),
                ("data.dedup", "yes", "expected true or false"),
                ("data.dedup", "off", "expected true or false"),
                ("model.trust_remote_code", "on", "expected true or false"),
                ("methods.2.learning_rate", "1_000", "expected a number"),
                ("eval.include_base", "No", "expected true or false"),
            ]
        ),
    )
    case.overrides.append(f"{where}={text}")
    return [rf"config: {_where(where)}: {needle}, got str"]


@kind("unknown_literal")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick(
        "methods.1.kind",
        st.sampled_from(["methods.1.kind", "methods.0.precision", "model.dtype", "eval.mode", "tracking.mode"]),
    )
    *parents, key = where.split(".")
    node: tp.Any = case.config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    allowed = {
        "kind": METHOD_KINDS,
        "precision": ("auto", "fp32", "bf16", "fp16"),
        "dtype": ("auto", "float32", "bfloat16", "float16"),
        "mode": ("loglik", "generate", "online", "offline", "disabled"),
    }[key]
    node[key] = pick("dpo", st.one_of(ANY_TEXT, st.integers()).filter(lambda v: v not in allowed))
    return [rf"config: {_where(where)}: .* is not allowed"]


# ---- config: missing keys, unknown keys


@kind("missing_model_path")
def _(case: Case, pick: Pick) -> list[str]:
    del case.config["model"]["name_or_path"]
    return [r"config: model\.name_or_path: empty"]


@kind("missing_train_path")
def _(case: Case, pick: Pick) -> list[str]:
    del case.config["data"]["train"]["path"]
    return [r"config: data\.train\.path: empty"]


@kind("typo_top_level_key")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("methods", st.sampled_from(["model", "data", "methods", "eval", "tracking", "output_dir", "local"]))
    pos = pick(2, st.integers(0, len(key) - 1))
    typo = key[:pos] + key[pos + 1 :]  # one letter dropped: close enough for a did-you-mean
    case.config[typo] = case.config.pop(key) if key != "methods" else case.config["methods"]
    return [rf"config: {re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


@kind("typo_method_key")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(0, METHOD)
    # Only keys the method has (few_shot has no learning_rate); resources: every method has it.
    keys = [k for k in ("learning_rate", "micro_batch_size", "max_steps", "resources") if k in case.method(i)]
    key = pick(keys[0], st.sampled_from(keys))
    pos = pick(5, st.integers(0, len(key) - 1))
    typo = key[:pos] + key[pos + 1 :]
    case.method(i)[typo] = case.method(i).pop(key)
    return [rf"config: {case.label(i)}\.{re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


@kind("unknown_key")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("colour", IDENT.filter(lambda k: k not in SMOKE and k not in ("name", "seed")))
    case.config[key] = 1
    return [rf"config: {re.escape(key)}: unknown key"]


@kind("missing_profile_partition")
def _(case: Case, pick: Pick) -> list[str]:
    if pick("delete", st.sampled_from(["delete", "empty"])) == "delete":
        del case.profile["partition"]
    else:
        case.profile["partition"] = ""
    return [r"profile: partition: missing or empty"]


# ---- config: values out of range


@kind("non_positive_learning_rate")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    case.method(i)["learning_rate"] = pick(0.0, NON_POSITIVE_FLOAT)
    return [rf"config: {case.label(i)}\.learning_rate"]


@kind("non_finite_float")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    key = pick("learning_rate", st.sampled_from(["learning_rate", "weight_decay", "max_grad_norm", "warmup_ratio"]))
    case.method(i)[key] = pick(math.nan, NOT_FINITE)
    return [rf"config: {case.label(i)}\.{key}"]


@kind("non_positive_micro_batch_size")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(0, METHOD)
    case.method(i)["micro_batch_size"] = pick(0, NON_POSITIVE_INT)
    return [rf"config: {case.label(i)}\.micro_batch_size: -?\d+ -> at least 1"]


@kind("non_positive_max_steps")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(2, METHOD)
    case.method(i)["max_steps"] = pick(0, NON_POSITIVE_INT)
    return [rf"config: {case.label(i)}\.max_steps: -?\d+ ->"]


@kind("non_positive_epochs")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(0, METHOD)
    case.method(i)["max_steps"] = None
    case.method(i)["epochs"] = pick(0.0, NON_POSITIVE_FLOAT)
    return [rf"config: {case.label(i)}\.epochs"]


@kind("non_positive_time_min")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["time_min"] = pick(0, NON_POSITIVE_INT)
    return [rf"config: {where}\.time_min: -?\d+ -> at least 1"]


@kind("negative_max_timeouts")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["max_timeouts"] = pick(-1, st.integers(-(10**6), -1))
    return [rf"config: {where}\.max_timeouts: -\d+ -> 0 \(never requeue"]


@kind("non_positive_nodes")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["nodes"] = pick(0, NON_POSITIVE_INT)
    return [rf"config: {where}\.nodes: -?\d+ -> at least 1"]


@kind("negative_gpus_per_node")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["gpus_per_node"] = pick(-1, st.integers(max_value=-1))
    return [rf"config: {where}\.gpus_per_node: -\d+ -> 0 \(CPU\) or more"]


@kind("huge_number_for_float")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    case.method(i)["learning_rate"] = pick(
        10**400, st.integers(min_value=2**1024, max_value=10**1000)
    )  # beyond float range
    return [rf"config: {case.label(i)}\.learning_rate: expected a finite number"]


@kind("seed_out_of_range")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["seed"] = pick(-1, st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)))  # numpy's range
    return [r"config: seed: -?\d+ -> "]


@kind("number_too_long_to_parse")
def _(case: Case, pick: Pick) -> list[str]:
    digits = "9" * pick(5000, st.integers(4301, 6000))  # Python refuses to parse more than 4300 digits
    where = pick("config", st.sampled_from(["config", "override", "data", "jsonl"]))
    if where == "config":
        case.config_bytes = _yaml(case.config) + f"colour: {digits}\n".encode()
        return [r"config: .* is not valid YAML: .*4300 digits"]
    if where == "override":
        case.overrides.append(f"seed={digits}")
        return [r"config: seed: expected an integer"]
    if where == "jsonl":
        case.use_jsonl()
    k = pick(3, RECORD)
    case.data_bytes = (
        case.data_text().replace(f'"solution": "{case.records[k]["solution"]}"', f'"solution": {digits}', 1).encode()
    )
    return [r"JSON cannot be read \(.*4300 digits"]


@kind("eval_fraction_out_of_range")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["eval_fraction"] = pick(1.5, st.floats().filter(lambda x: not 0 < x < 1))
    return [r"config: data\.eval_fraction"]


@kind("bad_experiment_name")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["name"] = pick(
        "../escape", ANY_TEXT.filter(lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s))
    )
    return [r"config: name: "]


@kind("name_too_long")
def _(case: Case, pick: Pick) -> list[str]:
    name = "a" * pick(300, st.integers(101, 2000))  # a directory name beyond the file system's limit
    if pick("experiment", st.sampled_from(["experiment", "method"])) == "experiment":
        case.config["name"] = name
        return [r"config: name: \d+ characters .* -> at most"]
    i = pick(1, METHOD)
    case.method(i)["name"] = name
    return [rf"config: methods\[{i}\]\.name: \d+ characters .* -> at most"]


@kind("small_numbers_elsewhere")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick(
        "eval.batch_size",
        st.sampled_from(
            ["eval.batch_size", "model.max_seq_len", "data.max_train", "data.max_eval", "eval.max_new_tokens"]
        ),
    )
    section, key = where.split(".")
    case.config[section][key] = pick(
        0, st.integers(max_value=0 if key in ("batch_size", "max_train", "max_eval") else 3)
    )
    return [rf"config: {re.escape(where)}: -?\d+ ->"]


@kind("lora_settings_out_of_range")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, st.sampled_from([1, 2]))
    key = pick("r", st.sampled_from(["r", "alpha", "dropout"]))
    case.method(i)["lora"][key] = (
        pick(0, st.integers(max_value=0)) if key != "dropout" else pick(1.0, st.floats(min_value=1.0))
    )
    return [rf"config: {case.label(i)}\.lora"]


# ---- config: methods


@kind("unknown_method_kind")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    case.method(i)["kind"] = pick("lroa", st.one_of(ANY_TEXT, st.integers()).filter(lambda v: v not in METHOD_KINDS))
    return [rf"config: {case.label(i)}\.kind: .* is not allowed -> "]


@kind("duplicate_method_names")
def _(case: Case, pick: Pick) -> list[str]:
    i, j = pick((0, 2), st.lists(METHOD, min_size=2, max_size=2, unique=True).map(sorted).map(tuple))
    name = case.method(i)["name"]
    case.method(j)["name"] = name
    return [rf"config: methods\[{j}\] \({re.escape(name)}\)\.name: .* is used twice"]


@kind("empty_methods")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["methods"] = []
    return [r"config: methods: empty"]


@kind("reserved_method_name")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    case.method(i)["name"] = "base"
    return [rf"config: methods\[{i}\] \(base\)\.name: 'base' is reserved"]


@kind("qlora_on_several_gpus")
def _(case: Case, pick: Pick) -> list[str]:
    r = case.method(2)["resources"]
    if pick("gpus", st.sampled_from(["gpus", "nodes"])) == "gpus":
        r["gpus_per_node"] = 2  # dev has 2 per node: only the qlora rule refuses it
    else:
        r["nodes"] = pick(2, st.integers(2, 64))
    return [r"config: methods\[2\] \(qlora\): qlora runs on one GPU"]


@kind("deepspeed_on_lora")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, st.sampled_from([1, 2]))
    case.method(i)["deepspeed"] = pick(
        "ds_configs/zero2.json", st.sampled_from(["ds_configs/zero3.json", "ds_configs/zero3_offload.json"])
    )
    return [rf"config: {case.label(i)}\.deepspeed: set for kind"]


@kind("deepspeed_file_missing")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("zero4", IDENT)
    case.method(0)["deepspeed"] = str(case.root / "ds" / f"{name}.json")
    return [r"config: methods\[0\] \(full_sft\)\.deepspeed: .* does not exist"]


@kind("deepspeed_file_not_json")
def _(case: Case, pick: Pick) -> list[str]:
    path = case.root / "ds" / "zero.json"
    case.files[path] = pick(
        b'{"zero_optimization": {"stage": 3,}',
        st.sampled_from([b"", b"[1, 2]", b"\xff\xfe", b'{"zero_optimization": 3}']),
    )
    case.method(0)["deepspeed"] = str(path)
    return [r"config: methods\[0\] \(full_sft\)\.deepspeed: "]


# ---- config: paths


@kind("model_path_missing")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["model"]["name_or_path"] = str(case.root / f"missing-{pick('model', IDENT)}")
    return [r"config: model\.name_or_path: .* does not exist"]


@kind("model_dir_without_config_json")
def _(case: Case, pick: Pick) -> list[str]:
    model = case.root / "half-model"
    case.files[
        model / pick("tokenizer.json", st.sampled_from(["tokenizer.json", "model.safetensors", "README.md"]))
    ] = b"{}"
    case.config["model"]["name_or_path"] = str(model)
    return [r"config: model\.name_or_path: .* has no config\.json"]


@kind("data_path_missing")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["train"]["path"] = str(case.root / f"missing-{pick('data', IDENT)}.json")
    return [r"config: data\.train\.path: .* does not exist"]


@kind("data_path_is_directory")
def _(case: Case, pick: Pick) -> list[str]:
    d = case.root / "data-dir"
    case.files[d / "cyber_mcq.json"] = b'{"questions": []}'
    case.config["data"]["train"]["path"] = str(d)
    fmt = pick("cybermetric", st.sampled_from(["cybermetric", "jsonl", "auto"]))
    case.config["data"]["train"]["format"] = fmt
    if fmt == "auto":  # a directory is read as a datasets save_to_disk directory, which it is not
        return [rf"{re.escape(str(d))}: not a dataset directory"]
    return [r"config: data\.train\.path: .* is a directory"]


@kind("data_file_read_as_hf")
def _(case: Case, pick: Pick) -> list[str]:
    if pick("format_hf", st.sampled_from(["format_hf", "suffix"])) == "format_hf":
        case.config["data"]["train"]["format"] = "hf"
    else:  # format auto reads an unknown suffix as a hub name or dataset directory
        path = case.root / "data" / pick("questions.txt", st.sampled_from(["questions", "q.csv", "q.JSON5"]))
        case.files[path] = case.data_text().encode()
        case.config["data"]["train"]["path"] = str(path)
    return [r"config: data\.train\.path: .* is a file, read as a Hugging Face dataset"]


@kind("config_path_is_directory")
def _(case: Case, pick: Pick) -> list[str]:
    case.config_arg = str(case.root / "profiles")
    return [r"config: .* is a directory"]


@kind("config_path_missing")
def _(case: Case, pick: Pick) -> list[str]:
    case.config_arg = str(case.root / "nope.yaml")
    return [r"config: .* does not exist"]


@kind("profile_path_is_directory")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile_arg = str(case.root / pick("profiles", st.sampled_from(["profiles", "data", "runs"])))
    return [r"profile: .* is a directory"]


@kind("unknown_profile_name")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile_arg = pick("dve", st.sampled_from(["deb", "devv", "examle-a100"]))
    return [r"profile: .* does not exist -> did you mean"]


@kind("output_dir_under_a_file")
def _(case: Case, pick: Pick) -> list[str]:
    # Fails for root too: nothing can create a directory inside a regular file.
    blocker = case.root / "not-a-dir"
    case.files[blocker] = b"a regular file\n"
    case.config["output_dir"] = str(blocker / pick("runs", st.sampled_from(["runs", "a/b/c"])))
    return [r"config: output_dir: .* cannot be created: .* is a file"]


@kind("output_dir_is_a_file")
def _(case: Case, pick: Pick) -> list[str]:
    blocker = case.root / "runs.txt"
    case.files[blocker] = b"a regular file\n"
    case.config["output_dir"] = str(blocker)
    return [r"config: output_dir: .* is a file, not a directory"]


@kind("read_only_output_dir")
def _(case: Case, pick: Pick) -> list[str]:
    case.chmods.append((case.output_dir, 0o555))  # holds the earlier experiment
    case.as_non_root = IS_ROOT  # root writes through mode bits; check the rule as another user would meet it
    return [r"config: output_dir: .* is not writable"]


# ---- config files


@kind("yaml_syntax_error")
def _(case: Case, pick: Pick) -> list[str]:
    text = _yaml(case.config).decode()
    lines = text.splitlines(keepends=True)
    at = pick(5, st.integers(0, len(lines)))
    bad = pick("methods: [unclosed\n", st.sampled_from(["  : : :\n", "key: 'open\n", "\tname: tab\n", "- [a, b\n"]))
    text = "".join(lines[:at] + [bad] + lines[at:])
    if not _yaml_fails(text):  # some snippets parse at some places (inside a flow mapping...): then at the end
        text = "".join(lines) + bad
    case.config_bytes = text.encode()
    return [r"config: .* is not valid YAML"]


@kind("empty_config_file")
def _(case: Case, pick: Pick) -> list[str]:
    case.config_bytes = pick(b"", st.sampled_from([b"\n", b"# nothing here\n", b"---\n", b"   \n\n"]))
    return [r"config: .* is empty"]


@kind("config_not_a_mapping")
def _(case: Case, pick: Pick) -> list[str]:
    case.config_bytes = pick(b"- name: smoke\n", st.sampled_from([b"smoke\n", b"42\n", b"[1, 2]\n", b"true\n"]))
    return [r"config: top level: expected a mapping"]


@kind("config_invalid_utf8")
def _(case: Case, pick: Pick) -> list[str]:
    text = _yaml(case.config)
    at = pick(text.index(b"name: ") + 6, st.integers(0, len(text)))
    case.config_bytes = text[:at] + pick(b"\xff", st.sampled_from([b"\xc3\x28", b"\xe2\x82", b"\x80"])) + text[at:]
    return [r"config: .* not valid UTF-8"]


# ---- overrides


@kind("override_without_equals")
def _(case: Case, pick: Pick) -> list[str]:
    item = pick(
        "methods.lora.learning_rate",
        st.text(min_size=1, max_size=12).filter(lambda s: "=" not in s and not s.startswith("-")),
    )
    case.overrides.append(item)
    return [rf"config: override {re.escape(repr(item))}: expected key=value"]


@kind("override_with_an_empty_key")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("", st.sampled_from(["", " ", ".", "methods..learning_rate", ".seed", "seed.", "methods.lora."]))
    item = f"{key}={pick('1e-3', st.sampled_from(['1e-3', '7', 'x', '']))}"
    case.overrides.append(item)
    what = "no key before '='" if not key.strip() else "key .* has an empty part"
    return [rf"config: override {re.escape(repr(item))}: {what}.* -> .*e\.g\. methods\.lora\.learning_rate=1e-3"]


@kind("tracking_mode_off")
def _(case: Case, pick: Pick) -> list[str]:
    value = pick("off", st.sampled_from(["off", "Off", "OFF", "no", "none", "false", "0", "null"]))
    case.overrides.append(f"tracking.mode={value}")
    return [r"config: tracking\.mode: .* is not allowed -> did you mean 'disabled'\?"]


@kind("override_unknown_method")
def _(case: Case, pick: Pick) -> list[str]:
    names = [m["name"] for m in case.config["methods"]]
    name = pick(
        "dora",
        st.from_regex(r"[a-z0-9_-]{1,10}", fullmatch=True).filter(
            lambda s: s not in names and not (s.isdigit() and int(s) < len(names))
        ),
    )
    case.overrides.append(f"methods.{name}.learning_rate=1e-4")
    return [rf"config: override methods\.{re.escape(name)}(\.learning_rate)?: no list item"]


@kind("override_into_a_scalar")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick(
        "name", st.sampled_from(["name", "seed", "output_dir", "methods.lora.learning_rate", "model.name_or_path"])
    )
    sub = pick("x", st.sampled_from(["x", "y.z"]))
    case.overrides.append(f"{key}.{sub}=1")
    return [rf"config: override {re.escape(key)}\.{re.escape(sub)}: .* not a mapping"]


@kind("override_bad_value")
def _(case: Case, pick: Pick) -> list[str]:
    value = pick("-1", st.sampled_from(["0", "-3e-4", "fast", "[1]", "{a: 1}", "null"]))
    case.overrides.append(f"methods.lora.learning_rate={value}")
    return [rf"config: {case.label(1)}\.learning_rate"]


# ---- config x profile


@kind("time_above_profile_max")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["time_min"] = pick(600, st.integers(DEV["max_time_min"] + 1, 10**7))
    return [rf"{where}\.time_min: \d+ min, but partition"]


@kind("gpus_above_profile")
def _(case: Case, pick: Pick) -> list[str]:
    which = pick("methods", RESOURCES)
    if which == "eval":
        r, where = case.config["eval"]["resources"], r"eval\.resources"
    else:
        i = pick(0, st.sampled_from([0, 1]))  # qlora on several GPUs has its own rule
        r, where = case.method(i)["resources"], case.label(i) + r"\.resources"
    r["gpus_per_node"] = pick(4, st.integers(DEV["gpus_per_node"] + 1, 64))
    return [rf"{where}\.gpus_per_node: \d+ GPUs per node, but a node of profile"]


@kind("nodes_above_profile")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    r["nodes"] = pick(DEV["max_nodes"] + 1, st.integers(DEV["max_nodes"] + 1, 10**4))
    return [rf"{where}\.nodes: \d+, but a job on 'dev' may use at most {DEV['max_nodes']} node\(s\) -> at most"]


@kind("cpus_or_memory_above_profile")
def _(case: Case, pick: Pick) -> list[str]:
    r, where = _resources(case, pick)
    key = pick("cpus_per_gpu", st.sampled_from(["cpus_per_gpu", "mem_gb_per_gpu"]))
    limit = DEV[key] * DEV["gpus_per_node"]
    r[key] = pick(limit + 1, st.integers(limit + 1, 10**4))
    return [rf"{where}\.{key}: \d+ .*per node, but a node of"]


# ---- profile


@kind("profile_non_positive_number")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick(
        "gpus_per_node",
        st.sampled_from(["gpus_per_node", "gpu_mem_gb", "cpus_per_gpu", "mem_gb_per_gpu", "max_time_min"]),
    )
    case.profile[key] = pick(0, NON_POSITIVE_INT)
    return [rf"profile: {key}: -?\d+ -> a positive whole number"]


@kind("profile_non_positive_max_nodes")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["max_nodes"] = pick(0, NON_POSITIVE_INT)
    return [r"profile: max_nodes: -?\d+ -> a positive whole number, or null"]


@kind("profile_wrong_type")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick(
        "gpus_per_node",
        st.sampled_from(["gpus_per_node", "max_time_min", "price_per_gpu_hour", "partition", "setup", "env"]),
    )
    bad = {"partition": 7, "setup": "module load cuda", "env": ["A=1"]}.get(key, "two")
    case.profile[key] = bad
    return [rf"profile: {key}: expected "]


@kind("profile_non_finite_price")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["price_per_gpu_hour"] = pick(math.nan, st.sampled_from([math.inf, -1.0, -math.inf]))
    return [r"profile: price_per_gpu_hour: "]


@kind("profile_typo_key")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("gpus_per_node", st.sampled_from(["gpus_per_node", "partition", "max_time_min", "cpus_per_gpu"]))
    pos = pick(3, st.integers(0, len(key) - 1))
    typo = key[:pos] + key[pos + 1 :]
    case.profile[typo] = case.profile[key]
    return [rf"profile: {re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


@kind("profile_secret_env")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("HF_TOKEN", CREDENTIAL_NAME)
    case.profile["env"] = {
        "NCCL_DEBUG": "WARN",
        name: "s3cr3t-" + pick("abc123", st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True)),
    }
    return [rf"profile: env\.{re.escape(name)}: names a credential \(value not shown\)"]


@kind("profile_secret_value")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("HUB_AUTH_MODE", st.sampled_from(["NCCL_DEBUG", "HF_HOME", "MY_SETTING", "HUB"]))
    token = _token(case, pick)
    case.profile["env"] = {name: pick("", st.sampled_from(["  ", "x=", "Bearer ", "\t"])) + token}
    return [rf"profile: env\.{re.escape(name)}: holds what looks like a .* \(not shown\)"]


@kind("profile_reserved_sbatch_option")
def _(case: Case, pick: Pick) -> list[str]:
    option = pick("time", st.sampled_from(sorted(LAUNCHER_OWNED)))
    key = option.replace("-", "_") if pick(False, st.booleans()) else option
    case.profile["additional_parameters"] = {"mail_type": "FAIL", key: pick(1, st.sampled_from(["x", True, 2]))}
    field_ = re.escape(LAUNCHER_OWNED[option].split(" ")[0])
    return [rf"profile: additional_parameters\.{re.escape(key)}: the launcher sets this option itself -> use {field_}"]


@kind("profile_yaml_syntax_error")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile_bytes = _yaml(case.profile) + pick(
        b"setup: [module load\n", st.sampled_from([b"env: {A: 1\n", b"  : :\n", b"\tpartition: x\n"])
    )
    return [r"profile: .* is not valid YAML"]


@kind("profile_not_a_mapping")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile_bytes = pick(b"- partition: debug\n", st.sampled_from([b"debug\n", b"7\n"]))
    return [r"profile: top level: expected a mapping"]


@kind("profile_name_mismatch")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["name"] = pick("prod", IDENT.filter(lambda s: s != "dev"))
    return [r"profile: name: .* differs from the file name 'dev'"]


# ---- data


@kind("empty_dataset")
def _(case: Case, pick: Pick) -> list[str]:
    case.records = []
    if pick("json", st.sampled_from(["json", "jsonl"])) == "jsonl":
        case.use_jsonl()
        case.data_bytes = pick(b"", st.sampled_from([b"\n", b"\n\n  \n"]))
    return [r"contains 0 questions"]


@kind("single_question")
def _(case: Case, pick: Pick) -> list[str]:
    case.records = case.records[:1]
    return [r"cannot split 1 question"]


@kind("solution_outside_A_D")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    case.records[k]["solution"] = pick(
        "E", st.one_of(ANY_TEXT, st.integers(), st.none(), st.booleans()).filter(lambda v: v not in LETTERS)
    )
    return [rf"record {k}\b.*: solution .* is not one of A, B, C, D"]


@kind("three_options")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    rec = case.records[k]
    drop = pick("D", st.sampled_from(LETTERS))
    del rec["answers"][drop]
    if rec["solution"] == drop:  # keep the one problem under test
        rec["solution"] = next(x for x in LETTERS if x != drop)
    return [rf"record {k}\b.*'answers' must have exactly the keys A, B, C, D \(missing {drop}\)"]


@kind("five_options")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    extra = pick("E", st.text(min_size=1, max_size=3).filter(lambda s: s not in LETTERS))
    case.records[k]["answers"][extra] = "another option"
    return [rf"record {k}\b.*'answers' must have exactly the keys A, B, C, D"]


@kind("answers_as_list")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    case.records[k]["answers"] = [case.records[k]["answers"][x] for x in LETTERS]
    return [rf"record {k}\b.*'answers' is a list"]


@kind("empty_question_text")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    value = pick(
        "", st.one_of(st.sampled_from([" ", "\n\t"]), st.integers(), st.none(), st.lists(st.text(), max_size=2))
    )
    if value is None and pick(False, st.booleans()):
        del case.records[k]["question"]
    else:
        case.records[k]["question"] = value
    return [rf"record {k}\b.*'question'"]


@kind("record_not_a_mapping")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    case.records[k] = pick(
        "Which port does HTTP use?", st.one_of(st.text(), st.integers(), st.lists(st.integers(), max_size=3), st.none())
    )
    return [rf"record {k}\b.*: expected a mapping"]


@kind("contradictory_duplicate")
def _(case: Case, pick: Pick) -> list[str]:
    i, j = pick((2, 7), st.lists(RECORD, min_size=2, max_size=2, unique=True).map(tuple))
    first = case.records[i]
    right = first["answers"][first["solution"]]
    wrong = [x for x in LETTERS if first["answers"][x].strip().lower() != right.strip().lower()]
    dup = copy.deepcopy(first)
    # The same question as the deduplication sees it (case, spacing, end punctuation), another answer.
    dup["question"] = pick(
        lambda q: q.upper(), st.sampled_from([lambda q: q, lambda q: "  " + q + " ", lambda q: q.rstrip("?")])
    )(first["question"])
    dup["solution"] = pick(wrong[0], st.sampled_from(wrong))
    case.records[j] = dup
    if pick("json", st.sampled_from(["json", "jsonl"])) == "jsonl":
        case.use_jsonl()
    later, earlier = max(i, j), min(i, j)
    return [rf"record {later}\b.*same question as record {earlier}\b"]


@kind("data_invalid_utf8")
def _(case: Case, pick: Pick) -> list[str]:
    data = case.data_text().encode()
    starts = [m.start() for m in re.finditer(rb'"question": "', data)]
    at = starts[pick(3, RECORD)] + len('"question": "')
    case.data_bytes = (
        data[:at] + pick(b"\xff", st.sampled_from([b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    )
    line = data.count(b"\n", 0, at) + 1
    return [rf"not valid UTF-8 at byte offset {at} \(line {line}\b"]


@kind("data_invalid_json")
def _(case: Case, pick: Pick) -> list[str]:
    data = case.data_text()
    commas = [m.start() for m in re.finditer(r",\n", data)]
    at = commas[pick(10, st.integers(0, len(commas) - 1))]
    how = pick("drop_comma", st.sampled_from(["drop_comma", "truncate", "trailing_comma"]))
    if how == "drop_comma":
        data = data[:at] + data[at + 1 :]
    elif how == "truncate":
        data = data[:at]
    else:
        data = data.replace("\n  ]\n}", ",\n  ]\n}")
    case.data_bytes = data.encode()
    return [r"invalid JSON at line \d+ column \d+"]


@kind("jsonl_bad_line")
def _(case: Case, pick: Pick) -> list[str]:
    case.use_jsonl()
    lines = case.data_text().splitlines(keepends=True)
    n = pick(5, st.integers(1, len(lines)))
    lines[n - 1] = pick(
        '{"question": "Which port?", "answers": \n',
        st.sampled_from(["not json\n", "{'single': 'quotes'}\n", "[1, 2\n"]),
    )
    case.data_bytes = "".join(lines).encode()
    return [rf"record {n - 1} \(line {n}\): invalid JSON"]


@kind("data_wrong_top_level")
def _(case: Case, pick: Pick) -> list[str]:
    shape = pick("list", st.sampled_from(["list", "other_key", "questions_not_list", "scalar"]))
    obj = {
        "list": case.records,
        "other_key": {"items": case.records},
        "questions_not_list": {"questions": {"q": 1}},
        "scalar": 42,
    }[shape]
    case.data_bytes = json.dumps(obj).encode()
    return [r"cyber_mcq\.json: (top level|'questions')"]


@kind("all_train_questions_in_eval")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["eval"] = {"path": str(case.data_path)}
    return [r"no training questions left"]


# ---- values that would reach a job script


CONTROL = st.sampled_from(["\n", "\r", "\u2028", "\x00", "\x1b", "\x85", "\u202e", "\x0b"])
SHELL_SYNTAX = st.sampled_from([" ; rm -rf ~", "$(id)", "`id`", " && id", "'", '"', "\\", " x", "|id", "a b"])


@kind("control_char_in_sbatch_field")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("partition", st.sampled_from(["partition", "account", "qos", "constraint"]))
    value = pick("gpu", st.sampled_from(["gpu", "a100", "x"]))
    at = pick(3, st.integers(0, len(value)))
    case.profile[where] = value[:at] + pick("\n#SBATCH --array=1-1000\n", CONTROL) + value[at:]
    return [rf"profile: {where}: holds a control character"]


@kind("shell_syntax_in_sbatch_name")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("account", st.sampled_from(["partition", "account", "qos", "constraint"]))
    case.profile[where] = "proj" + pick(" ; touch /tmp/x", SHELL_SYNTAX)
    return [rf"profile: {where}: .* is not a Slurm name ->"]


@kind("control_char_in_output_dir")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["output_dir"] = str(case.output_dir) + pick("\necho injected", CONTROL)
    return [r"config: output_dir: holds a control character"]


@kind("nul_byte_in_a_path")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("data.train.path", st.sampled_from(["model.name_or_path", "output_dir", "methods.0.deepspeed"]))
    *parents, key = where.split(".")
    node: tp.Any = case.config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[key] = str(case.root / "x\x00y.json")
    return [rf"config: {_where(where)}: holds a NUL byte, which no file name can -> remove it"]


@kind("sbatch_syntax_in_output_dir")
def _(case: Case, pick: Pick) -> list[str]:
    char = pick("%", st.sampled_from(["%", ":", "'", '"', "\\"]))
    case.config["output_dir"] = str(case.root / f"runs{char}x")
    return [r"config: output_dir: .* holds .* -> use a directory without them"]


@kind("control_char_in_setup_line")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["setup"] = ["module load cuda/12.4", "source /opt/env.sh" + pick("\ntouch /tmp/pwned", CONTROL)]
    return [r"profile: setup\[1\]: holds a control character"]


@kind("setup_line_read_by_sbatch")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["setup"] = [pick("#SBATCH --array=1-1000", st.sampled_from(["# a note", "  #SLURM --x", "#!"]))]
    return [r"profile: setup\[0\]: a comment line"]


@kind("control_char_in_env_value")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["env"] = {"NCCL_DEBUG": "WARN" + pick("\necho injected", CONTROL)}
    return [r"profile: env\.NCCL_DEBUG: holds a control character"]


@kind("bad_env_name")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["env"] = {pick("A-B", st.sampled_from(["1X", "A B", "$(id)", "X;Y", "A\nB", "é"])): "1"}
    return [r"profile: env\..*: not a valid variable name"]


@kind("shell_managed_env_name")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("IFS", st.sampled_from(["_", "BASH_ENV", "SHELLOPTS", "SUBMITIT_EXECUTOR", "PWD"]))
    case.profile["env"] = {name: "x"}
    return [rf"profile: env\.{re.escape(name)}: bash or the job script sets this variable itself"]


@kind("python_with_shell_syntax")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["python"] = "/opt/venv/bin/python" + pick(
        "; touch /tmp/pwned",
        st.sampled_from([" && id", " $(id)", " `id`", " # rest", " 'x'", " > /tmp/x", " | tee", "\ntouch /tmp/x"]),
    )
    return [r"profile: python: "]


@kind("option_name_not_sbatch_syntax")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["additional_parameters"] = {
        pick(
            "mail type", st.sampled_from(["--mail-type", "Mail_Type", "x\n#SBATCH --array", "a;b", "_x", "comment="])
        ): "x"
    }
    return [r"profile: additional_parameters\..*: not an sbatch option name"]


@kind("option_value_unsafe")
def _(case: Case, pick: Pick) -> list[str]:
    value = pick(
        "x\n#SBATCH --array=1-9",
        st.one_of(
            CONTROL.map(lambda c: f"a{c}b"), st.sampled_from(["a'b", 'a"b', "a\\b", " lead", "trail ", "", False])
        ),
    )
    case.profile["additional_parameters"] = {"comment": value}
    return [r"profile: additional_parameters\.comment: "]


@kind("typed_gpus_bad_type")
def _(case: Case, pick: Pick) -> list[str]:
    if pick("bad", st.sampled_from(["bad", "missing"])) == "missing":
        case.profile.update(typed_gpus=True, gpu_type="")
        return [r"profile: typed_gpus: true without a gpu_type"]
    case.profile.update(typed_gpus=True, gpu_type=pick("a100 80GB", st.sampled_from(["a100:2", "a100,h100", "x$y"])))
    return [r"profile: gpu_type: .* is not a Slurm name"]


# ---- secrets


@kind("setup_line_sets_a_credential")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("WANDB_API_KEY", CREDENTIAL_NAME)
    form = pick(
        "export {n}={v}",
        st.sampled_from(["{n}={v}", "export {n}='{v}'", "module load x; export {n}={v}", 'declare -x {n}="{v}"']),
    )
    case.profile["setup"] = ["module load cuda/12.4", form.format(n=name, v="s3cr3t0123")]
    return [rf"profile: setup\[1\]: sets {re.escape(name)}, a credential \(value not shown\)"]


@kind("token_in_setup_line")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["setup"] = [f"huggingface-cli login --token {_token(case, pick)}"]
    return [r"profile: setup\[0\]: holds what looks like a"]


@kind("token_in_config_string")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick(
        "tracking.entity", st.sampled_from(["tracking.project", "model.name_or_path", "methods.1.lora.target_modules"])
    )
    token = _token(case, pick)
    if where.endswith("target_modules"):
        case.method(1)["lora"]["target_modules"] = ["q_proj", token]
        return [rf"config: {case.label(1)}\.lora\.target_modules\[1\]: holds what looks like a"]
    section, key = where.split(".")
    case.config[section][key] = pick("", st.sampled_from(["  ", "team-"])) + token
    return [rf"config: {re.escape(where)}: holds what looks like a"]


@kind("token_in_override")
def _(case: Case, pick: Pick) -> list[str]:
    token = _token(case, pick)
    where = pick(
        "tracking.entity", st.sampled_from(["tracking.project", "name", "data.train.split", "tracking.mode", "seed"])
    )
    case.overrides.append(f"{where}={token}")
    if where == "tracking.mode":  # not allowed, and the message does not show it
        return [r"config: tracking\.mode: '<redacted: .*>' is not allowed"]
    if where == "seed":
        return [r"config: seed: expected an integer, got str '<redacted"]
    if where == "name":
        return [r"config: name: "]
    return [rf"config: {re.escape(where)}: holds what looks like a"]


@kind("token_as_a_key")
def _(case: Case, pick: Pick) -> list[str]:
    token = _token(case, pick)
    if pick("config", st.sampled_from(["config", "override"])) == "config":
        case.config["tracking"][token] = 1
    else:
        case.overrides.append(f"tracking.{token}=1")
    return [r"config: tracking\.'<redacted.*: unknown key"]


@kind("token_in_sbatch_option")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["additional_parameters"] = {"comment": _token(case, pick)}
    return [r"profile: additional_parameters\.comment: holds what looks like a"]


# ---- YAML


def _alias_bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@kind("alias_bomb")
def _(case: Case, pick: Pick) -> list[str]:
    # At least 6 levels of width 6: 10 x 6**5 = 77,760 values, beyond yamlio.MAX_NODES (5 levels are 12,960).
    levels, width = pick(9, st.integers(6, 30)), pick(10, st.integers(6, 12))
    assert 10 * width ** (levels - 1) > yamlio.MAX_NODES, (levels, width)  # a bomb, whatever was drawn
    bomb = _alias_bomb(levels, width)
    where = pick("config", st.sampled_from(["config", "profile", "override"]))
    nested = ("bomb:\n" + "".join(f"  {ln}\n" for ln in bomb.splitlines())).encode()
    if where == "config":  # an unknown key holding it: the reader refuses before any key is looked at
        case.config_bytes = _yaml(case.config) + nested
    elif where == "profile":
        case.profile_bytes = _yaml(case.profile) + nested
    else:
        flow = "{" + ", ".join(bomb.splitlines()) + "}"
        case.overrides.append(f"methods.lora.lora={flow}")
        return [r"config: override methods\.lora\.lora: expands to [\d,]+ values, more than"]
    return [rf"{where}: .* is not valid YAML: expands to [\d,]+ values, more than .*line \d+"]


@kind("recursive_alias")
def _(case: Case, pick: Pick) -> list[str]:
    case.config_bytes = _yaml(case.config) + pick(b"loop: &a [1, *a]\n", st.sampled_from([b"loop: &a {x: *a}\n"]))
    return [r"config: .* is not valid YAML: line \d+: an alias refers to a value that contains it"]


@kind("duplicate_key")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("config", st.sampled_from(["config", "profile", "override", "method"]))
    if where == "config":  # a second `methods:` would silently drop the first list
        case.config_bytes = _yaml(case.config) + b"methods:\n- {name: only, kind: lora}\n"
        return [r"config: .* is not valid YAML: line \d+: key 'methods' appears twice in one mapping \(first at line"]
    if where == "profile":
        case.profile_bytes = _yaml(case.profile) + b"partition: other\n"
        return [r"profile: .* is not valid YAML: line \d+: key 'partition' appears twice"]
    if where == "method":
        text = _yaml(case.config).decode().replace("  learning_rate:", "  learning_rate: 0.5\n  learning_rate:", 1)
        case.config_bytes = text.encode()
        return [r"config: .* is not valid YAML: line \d+: key 'learning_rate' appears twice"]
    case.overrides.append("methods.lora.lora={r: 4, r: 64}")
    return [r"config: override methods\.lora\.lora: line 1: key 'r' appears twice"]


@kind("nested_too_deep")
def _(case: Case, pick: Pick) -> list[str]:
    depth = pick(70, st.integers(65, 400))
    case.config_bytes = _yaml(case.config) + ("deep: " + "[" * depth + "]" * depth + "\n").encode()
    return [r"config: .* is not valid YAML: (line \d+: nested more than 64 levels|nested too deeply)"]


@kind("config_file_not_regular")
def _(case: Case, pick: Pick) -> list[str]:
    which = pick("config", st.sampled_from(["config", "profile"]))
    path = pick("/dev/zero", st.sampled_from(["/dev/null", "/dev/urandom"]))
    if which == "config":
        case.config_arg = path
    else:
        case.profile_arg = path
    return [rf"{which}: '{path}' is not a regular file"]


@kind("config_file_too_large")
def _(case: Case, pick: Pick) -> list[str]:
    padding = b"# " + b"x" * 1000 + b"\n"
    case.config_bytes = _yaml(case.config) + padding * pick(1100, st.integers(1050, 1500))
    return [r"config: .* is larger than 1,048,576 bytes"]


# ---- plan checks


@kind("abbreviated_sbatch_option")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("part", st.sampled_from(["time_mi", "gpus_per", "mem_per", "ntasks_per", "dep", "sig", "arr", "p", "n"]))
    case.profile["additional_parameters"] = {key: "x"}
    return [rf"profile: additional_parameters\.{key}: sbatch would read it as an abbreviation of --"]


@kind("unknown_sbatch_option")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("mailtype", st.sampled_from(["reservations", "exclusiv_e", "qoss", "mail_types"]))
    case.profile["additional_parameters"] = {key: "x"}
    return [rf"profile: additional_parameters\.{key}: not an sbatch option -> "]


DS_CONFLICTS = {
    "train_micro_batch_size_per_gpu": (99, r"train_micro_batch_size_per_gpu is 99 but the config's micro_batch_size"),
    "gradient_accumulation_steps": (7, r"gradient_accumulation_steps is 7 but the config's grad_accum_steps"),
    "train_batch_size": (1024, r"train_batch_size is 1024 but the config's micro_batch_size x grad_accum_steps"),
    "gradient_clipping": (3.0, r"gradient_clipping is 3\.0 but the config's max_grad_norm"),
    "bf16": ({"enabled": True}, r"bf16\.enabled is true but the config's precision is "),
    "fp16": ({"enabled": "yes"}, r"fp16\.enabled is 'yes' -> true, false or \"auto\""),
    "optimizer": ({"type": "AdamW", "params": {"lr": 0.1}}, r"has an 'optimizer' section -> remove it"),
    "scheduler": ({"type": "WarmupLR"}, r"has an 'scheduler' section -> remove it"),
}


@kind("deepspeed_value_contradicts_config")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("gradient_accumulation_steps", st.sampled_from(sorted(DS_CONFLICTS)))
    value, needle = DS_CONFLICTS[key]
    ds = json.loads((REPO / "ds_configs" / "zero2.json").read_text())
    ds[key] = value
    path = case.root / "ds" / "mine.json"
    case.files[path] = json.dumps(ds).encode()
    case.method(0)["deepspeed"] = str(path)
    return [rf"config: methods\[0\] \(full_sft\)\.deepspeed: .*{needle}"]


@kind("output_dir_on_a_kernel_file_system")
def _(case: Case, pick: Pick) -> list[str]:
    root = pick("/proc", st.sampled_from(["/sys", "/dev"]))
    case.config["output_dir"] = root + pick("/self/runs", st.sampled_from(["", "/runs", "/x/y"]))
    return [rf"config: output_dir: .* is under {root}, a kernel file system"]


# ---- numbers beyond any range


INT_FIELDS = [
    "methods.1.lora.r",
    "methods.1.lora.alpha",
    "methods.0.micro_batch_size",
    "methods.0.grad_accum_steps",
    "methods.0.max_steps",
    "methods.0.resources.nodes",
    "methods.0.resources.gpus_per_node",
    "methods.1.resources.time_min",
    "methods.2.checkpoint.keep",
    "eval.batch_size",
    "model.max_seq_len",
    "data.max_train",
    "seed",
    "local.threads_per_job",
    "eval.resources.mem_gb_per_gpu",
]


@kind("huge_integer")
def _(case: Case, pick: Pick) -> list[str]:
    digits = pick(300, st.integers(20, 4000))
    where = pick("methods.1.lora.r", st.sampled_from(INT_FIELDS))
    case.overrides.append(f"{where}={'9' * digits}")
    return [rf"config: {_where(where)}: .* -> at most \d+"]


@kind("profile_huge_integer")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick(
        "gpus_per_node", st.sampled_from(["gpu_mem_gb", "cpus_per_gpu", "mem_gb_per_gpu", "max_time_min", "max_nodes"])
    )
    case.profile[key] = 10 ** pick(300, st.integers(10, 4000))
    return [rf"profile: {key}: .* -> at most \d+"]


# ---- data


@kind("correct_option_repeated")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    rec = case.records[k]
    right = rec["answers"][rec["solution"]]
    others = [x for x in LETTERS if x != rec["solution"]]
    for x in pick(others, st.lists(st.sampled_from(others), min_size=1, max_size=3, unique=True)):
        same = pick(lambda t: t, st.sampled_from([lambda t: t.upper(), lambda t: f" {t}.", lambda t: t]))
        rec["answers"][x] = same(right)
    return [rf"record {k}\b.*: the correct answer {rec['solution']} .* is also option"]


@kind("duplicate_key_in_record")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    if pick("json", st.sampled_from(["json", "jsonl"])) == "jsonl":
        case.use_jsonl()
    key = pick("solution", st.sampled_from(["question", "answers", "A"]))
    text = case.data_text()
    starts = [m.start() for m in re.finditer(r'"question": ', text)]
    at = text.index(f'"{key}": ', starts[k])
    case.data_bytes = (text[:at] + f'"{key}": "dropped", ' + text[at:]).encode()
    inside = " in 'answers'" if key == "A" else ""
    return [rf"record {k}\b.*: key '{key}'{inside} appears twice \(JSON keeps the last one silently\)"]


@kind("huge_value_is_shortened")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    field_ = pick("solution", st.sampled_from(["solution", "answers"]))
    huge = "X" * pick(10**6, st.integers(10**4, 2 * 10**6))
    if field_ == "solution":
        case.records[k]["solution"] = huge
        return [rf"record {k}\b.*: solution 'X+'\.\.\.\(\d+ chars\) is not one of A, B, C, D"]
    case.records[k]["answers"] = huge
    return [rf"record {k}\b.*: 'answers' is a string, expected a mapping"]


@kind("data_file_not_regular")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["train"]["path"] = pick("/dev/zero", st.sampled_from(["/dev/urandom", "/dev/null"]))
    case.config["data"]["train"]["format"] = pick("cybermetric", st.sampled_from(["jsonl"]))
    return [r"/dev/\w+: is not a regular file \(a device, pipe or socket\) -> give a CyberMetric JSON"]


@kind("data_file_too_large")
def _(case: Case, pick: Pick) -> list[str]:
    import launch.questions.data

    case.patches.append((launch.questions.data, "MAX_DATA_BYTES", pick(4096, st.integers(1024, 8192))))
    return [r"cyber_mcq\.json: is larger than [\d,]+ bytes -> give a CyberMetric JSON or JSONL file of at most"]


# ---- unfamiliar sites


@kind("python_not_on_shared_storage")
def _(case: Case, pick: Pick) -> list[str]:
    shared = case.root
    case.profile["shared_dirs"] = [str(shared)]
    case.profile["python"] = pick("/opt/venv/bin/python", st.sampled_from(["/usr/bin/python3", "/tmp/x/bin/python"]))
    return [r"python: '.*' \(the interpreter the jobs would run(; a link to .*)?\) is not under the shared directories"]


@kind("output_dir_not_on_shared_storage")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["shared_dirs"] = [pick("/scratch", st.sampled_from(["/lustre", "/home/nobody"]))]
    case.profile["python"] = None
    return [r"output_dir: .* is not under the shared directories of profile 'dev'"]


@kind("slurm_refuses_the_first_job")
def _(case: Case, pick: Pick) -> list[str]:
    message = pick(
        "Invalid partition name specified",
        st.sampled_from(
            [
                "Invalid account or account/partition combination specified",
                "Requested node configuration is not available",
                "Invalid generic resource (gres) specification",
            ]
        ),
    )
    case.env = {
        "FAKE_SBATCH_FAIL_AT": "5001",
        "FAKE_SBATCH_MESSAGE": f"sbatch: error: Batch job submission failed: {message}",
    }
    case.dry_rc = 0  # only Slurm can refuse this: the dry run has nothing to object to
    case.verify = None
    return [rf"sbatch refused job full_sft: .*{re.escape(message)}"]


# ---- accepted on purpose (exit 0, documented)


@kind("anchored_resources_stay_separate")
def _(case: Case, pick: Pick) -> list[str]:
    """One `resources: &res` anchor used by every method: overriding one method changes that one only."""
    cfg = copy.deepcopy(case.config)
    shared = cfg["methods"][0]["resources"]
    for m in cfg["methods"]:
        m["resources"] = "@@RES@@"
    text = _yaml(cfg).decode().replace("resources: '@@RES@@'", f"resources: &res {json.dumps(shared)}", 1)
    case.config_bytes = text.replace("resources: '@@RES@@'", "resources: *res").encode()
    minutes = str(pick(7, st.integers(2, 19)))
    case.overrides.append(f"methods.lora.resources.time_min={minutes}")
    case.rc = 0

    def verify(state: Path) -> None:
        scripts = [(state / f"script-{n}.sh").read_text() for n in range(5001, 5004)]
        times = [re.search(r"#SBATCH --time=(\d+)", text).group(1) for text in scripts]
        assert times == [str(shared["time_min"]), minutes, str(shared["time_min"])], times

    case.verify = verify
    return []


@kind("yaml12_date_is_text")
def _(case: Case, pick: Pick) -> list[str]:
    """YAML 1.1 read `name: 2024-05-01` as a date (refused as not a string); it is the name it looks like."""
    text = _yaml(case.config).decode()
    name = pick("2024-05-01", st.sampled_from(["1999-12-31", "2030-01-02"]))
    case.config_bytes = text.replace("name: smoke\n", f"name: {name}\n", 1).encode()
    case.rc = 0

    def verify(state: Path) -> None:
        assert re.search(rf"#SBATCH --job-name={name}\.full_sft\n", (state / "script-5001.sh").read_text())

    case.verify = verify
    return []


# --------------------------------------------------------------------------- running one case


def _snapshot(root: Path) -> dict[str, tp.Any]:
    """Every file (bytes, mode, mtime) and directory (mode) under ``root``."""
    out: dict[str, tp.Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath, name)
            out[str(p.relative_to(root)) + "/"] = p.lstat().st_mode
        for name in filenames:
            p = Path(dirpath, name)
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (p.read_bytes(), st_.st_mode, st_.st_mtime_ns)
    return out


_REAL_ACCESS = os.access


def _access_by_mode_bits(path: tp.Any, mode: int, **kwargs: tp.Any) -> bool:
    """``os.access`` as for the owner when not root: write access needs the owner's write bit."""
    if not _REAL_ACCESS(path, mode, **kwargs):
        return False
    if mode & os.W_OK and os.path.exists(path):
        return bool(os.stat(path).st_mode & stat.S_IWUSR)
    return True


@pytest.fixture
def harness(tmp_path, tiny_model, monkeypatch, capsys):
    """Fake Slurm commands on PATH; a function that builds a case, mutates it, runs submit and the dry run, checks."""
    state = install_fake_slurm(tmp_path, monkeypatch)
    monkeypatch.chdir(REPO)

    def command(case: Case, argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        with monkeypatch.context() as mp:
            if case.as_non_root:
                mp.setattr(os, "access", _access_by_mode_bits)
            for name, value in case.env.items():
                mp.setenv(name, value)
            for obj, attr, value in case.patches:
                mp.setattr(obj, attr, value)
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse refusing the command line
                rc = exc.code
        out = capsys.readouterr()
        return rc, out.out, out.err

    def check_refusal(kind_name: str, case: Case, what: str, text: str, needles: list[str]) -> None:
        lines = text.split("\n")  # not splitlines(): a quoted value may hold U+2028 and friends
        for needle in needles:
            hits = [ln for ln in lines if re.search(needle, ln)]
            assert hits, f"{kind_name} ({what}): no line matches {needle!r} in\n{text[-6000:]}"
            assert any("->" in ln for ln in hits), f"{kind_name} ({what}): no fix ('->') on {hits}"

    def check_output(kind_name: str, case: Case, what: str, out: str, err: str) -> None:
        assert "Traceback" not in err + out, f"{kind_name} ({what}): a traceback\n{err}"
        for secret in case.secrets:
            assert secret not in err + out, f"{kind_name} ({what}): a secret value was echoed\n{err}{out[-3000:]}"
        # Messages shorten what they echo: stderr, and the dry run's problem list (not the plan it prints).
        messages = err.split("\n") + [ln for ln in out.split("\n") if ln.startswith("  - ")]
        longest = max(map(len, messages), default=0)
        assert longest <= MAX_LINE, f"{kind_name} ({what}): a message line of {longest} characters"

    def run(kind_name: str | None, pick: Pick) -> tuple[int, str]:
        root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="case-"))
        case = Case(root=root, model=tiny_model)
        for recorded in state.iterdir():  # hypothesis runs many cases in one test: each starts with no sbatch call
            recorded.unlink()
        try:
            needles = KINDS[kind_name](case, pick) if kind_name else []
            case.write()
            before = _snapshot(root)
            rc, out, err = command(case, case.argv())
            if kind_name is None:
                return rc, err
            assert rc == case.rc, f"{kind_name}: exit {rc}, expected {case.rc}\n{err}"
            check_output(kind_name, case, "submit", out, err)
            if case.verify is not None:
                case.verify(state)
                return rc, err
            if case.rc == 2:
                assert not (state / "count").exists() or case.env, f"{kind_name}: sbatch was called"
                assert _snapshot(root) == before, f"{kind_name}: files under {root} changed"
                check_refusal(kind_name, case, "submit", err, needles)
            dry_rc, out, err = command(case, case.argv() + ["--dry-run"])
            expected = case.rc if case.dry_rc is None else case.dry_rc
            assert dry_rc == expected, f"{kind_name}: the dry run exited {dry_rc}, not {expected}\n{err}{out[-3000:]}"
            check_output(kind_name, case, "dry run", out, err)
            assert _snapshot(root) == before, f"{kind_name}: the dry run changed files under {root}"
            if dry_rc == 2:
                check_refusal(kind_name, case, "dry run", out + err, needles)
            return rc, err
        finally:
            for path, _ in case.chmods:
                path.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)

    return run


# --------------------------------------------------------------------------- tests


def test_catalogue_is_large_enough():
    assert len(KINDS) >= 120, len(KINDS)


def test_the_unmutated_case_is_submitted(harness, tmp_path):
    """The harness is not vacuous: without a mutation the same case is submitted (one sbatch call per method
    of the smoke config, and the evaluation's)."""
    rc, err = harness(None, Pick())
    assert rc == 0, err
    assert (tmp_path / "fake-slurm" / "count").read_text().strip() == str(5001 + len(SMOKE["methods"]))


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_each_kind_is_refused(harness, kind_name):
    harness(kind_name, Pick())


HUNT = os.environ.get("BAD_INPUT_EXAMPLES")
"""A longer hunt for bad input the catalogue misses (``BAD_INPUT_EXAMPLES=2000``): new examples each run."""


@settings(
    max_examples=int(HUNT or 200),
    # Without a hunt the same examples every run (derived from the test, not from a clock or a seed file):
    # CI cannot draw a new failing example by chance; what a hunt finds becomes a kind or a canonical value.
    derandomize=HUNT is None,
    deadline=None,  # no per-example time limit: a slow machine is not bad input
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_random_bad_input_is_refused(harness, data):
    kind_name = data.draw(st.sampled_from(sorted(KINDS)), label="kind")
    harness(kind_name, Pick(data))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"q_proj": True}, r"target_modules: expected 'all-linear' or a list of str, got a mapping \{'q_proj': True\}"),
        ("q_proj", r"target_modules: expected 'all-linear' or a list of str, got a string 'q_proj'"),
        ("all_linear", r"target_modules: .*'all_linear' -> did you mean 'all-linear'\?"),
        (7, r"target_modules: expected 'all-linear' or a list of str, got an integer 7"),
        ([1, "q_proj"], r"target_modules\[0\]: expected a string, got int 1"),  # the list's own problem, per item
        (["q_proj", TOKENS["hf"]], r"target_modules\[1\]: holds what looks like a Hugging Face token"),
    ],
)
def test_a_field_of_two_shapes_says_which_it_takes_and_what_it_got(value, says):
    """``target_modules`` takes the word 'all-linear' or a list: a value of neither shape gets one line naming
    both, the value and how to write it; a list gets the list's own problems, which name the bad item."""
    from launch.spec.config import ConfigError, from_dict

    raw = copy.deepcopy(SMOKE)
    raw["methods"][1]["lora"]["target_modules"] = value
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    (problem,) = [p for p in info.value.problems if "target_modules" in p]
    assert problem.startswith("methods[1] (lora).lora.target_modules") and re.search(says, problem), problem
    assert " -> " in problem and "s3cr3t" not in problem


@pytest.mark.parametrize("control", ["\n", "\r", "\u2028", "\x1b", "\x85", "\x0b"])
def test_the_dry_run_refuses_a_value_for_a_job_script_before_printing_anything_resolved(
    tmp_path, tiny_model, monkeypatch, capsys, control
):
    """A line break in output_dir: the refusal comes first, and nothing resolved from the config is printed,
    so the hostile value appears only as the problem line quotes it (escaped, shortened)."""
    monkeypatch.chdir(REPO)
    hostile = f"{tmp_path / 'runs'}{control}#SBATCH --array=1-1000"
    config = tmp_path / "exp.yaml"
    raw = copy.deepcopy(SMOKE)
    raw.update(output_dir=hostile, model={**raw["model"], "name_or_path": str(tiny_model)})
    config.write_bytes(_yaml(raw))
    rc = cli.main(["submit", str(config), "--profile", "dev", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 2
    lines = out.split("\n")
    assert re.fullmatch(r"# ---- \d+ problem\(s\): submit would refuse this plan", lines[0]), out[:2000]
    assert any(ln.startswith("  - config: output_dir: holds a control character") and "->" in ln for ln in lines)
    assert lines[-2].startswith("# ---- nothing else shown (resolved config, forecast, jobs, sbatch scripts)")
    assert "# ---- resolved config" not in out and "#SBATCH" not in out and "#!/bin/bash" not in out
    assert "--array=1-1000" not in out  # the value is never printed, not even quoted by YAML
    assert control == "\n" or control not in out
    assert not (tmp_path / "runs").exists()


def test_repeated_questions_that_agree_are_accepted(tmp_path):
    """Only a contradiction is refused: repeats with the same answer (shuffled or reworded options) load."""
    from launch.questions.data import DataError, load_questions, prepare_splits
    from launch.spec.config import DataConfig, DataSource

    first = {
        "question": "Which port does HTTP use?",
        "answers": {"A": "80", "B": "443", "C": "21", "D": "22"},
        "solution": "A",
    }
    agree = [
        first,
        {**first, "question": "which port does HTTP use"},  # the same record, as dedup compares it
        {
            "question": "Which port does HTTP use ?",
            "answers": {"A": "22", "B": "21", "C": "443", "D": "80."},
            "solution": "D",
        },
        {
            "question": "Which port does HTTP use?",
            "answers": {"A": "Port 80", "B": "1", "C": "2", "D": "3"},
            "solution": "A",
        },
    ]
    path = tmp_path / "agree.json"
    path.write_text(json.dumps({"questions": agree}))
    assert len(load_questions(DataSource(path=str(path)))) == 4

    clash = {**first, "solution": "B"}  # marks 443 right, which record 0 marks wrong
    path.write_text(json.dumps({"questions": [*agree, clash]}))
    with pytest.raises(DataError) as info:
        load_questions(DataSource(path=str(path)))
    assert len(info.value.problems) == 1
    assert "record 4: same question as record 0" in info.value.problems[0] and "->" in info.value.problems[0]

    # Across the train and eval files as well: the eval answer is what every model is scored against.
    train, eval_ = tmp_path / "train.jsonl", tmp_path / "eval.json"
    train.write_text("".join(json.dumps(r) + "\n" for r in [*SAMPLE[:6], clash]))
    eval_.write_text(json.dumps({"questions": [first, *SAMPLE[6:8]]}))
    cfg = DataConfig(train=DataSource(path=str(train)), eval=DataSource(path=str(eval_)))
    with pytest.raises(DataError) as info:
        prepare_splits(cfg, tmp_path / "out", progress=False)
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [f"{train} record 6"]
    assert f"same question as {eval_} record 0" in info.value.problems[0]
    assert not (tmp_path / "out").exists()
