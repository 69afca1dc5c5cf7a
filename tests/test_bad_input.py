"""Bad input never starts anything: ``cyberft submit`` refuses it, says where and how to fix it.

Every kind of bad input in :data:`KINDS` mutates one valid experiment (``configs/smoke.yaml`` on
the session's tiny model, a copy of the bundled sample questions, a copy of the ``dev`` profile,
an output directory that already holds an earlier experiment), runs
``cyberft submit CONFIG [key=value ...] --profile PROFILE`` in-process with fake
``sbatch``/``srun``/``scancel`` on PATH (as in tests/test_submit.py), and checks that

* the exit code is 2 (no traceback, no exit 1);
* stderr has a problem line that names the field or record (``methods[1] (lora).learning_rate``,
  ``record 3``, ``line 5``, ``profile: gpus_per_node``) *and* carries its fix (``->``) on that line;
* ``sbatch`` was never called;
* nothing already on disk changed: every file under the case directory (config, profile, data,
  model, the output directory with the earlier experiment) keeps its bytes, mode and mtime, and
  no file or directory appeared or vanished.

:func:`test_each_kind_is_refused` runs every kind once with its canonical bad value;
:func:`test_random_bad_input_is_refused` lets hypothesis pick the kind and the details (which
method or record, which bad value) from strategies (``BAD_INPUT_EXAMPLES=2000`` for a longer hunt).

Directory mtimes are not compared: data problems are found by ``submit.submit()`` after it has
made a new experiment directory in ``output_dir``, which it removes again (the earlier experiment
and every file stay as they were). Running as root, where mode bits do not stop writes, the
read-only output directory is checked with ``os.access`` answering as for another user.
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
from launch.config import METHOD_KINDS
from launch.profiles import SECRET_VALUE_PREFIXES, SECRET_WORDS

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
DEV = yaml.safe_load((REPO / "slurm" / "profiles" / "dev.yaml").read_text(encoding="utf-8"))
SAMPLE = json.loads((REPO / "data" / "sample" / "cyber_mcq.json").read_text(encoding="utf-8"))["questions"]
N_RECORDS = 40  # a slice of the sample keeps each case fast; every mutation works on any size >= 4
LETTERS = ("A", "B", "C", "D")
from test_submit import install_fake_slurm  # noqa: E402

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 5000)
n=$((n+1)); echo $n > "$FAKE_SLURM/count"
cp "$1" "$FAKE_SLURM/script-$n.sh"
echo "Submitted batch job $n"
"""


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
            (self.earlier / "manifest.json", b'{"experiment": "smoke-20240101-000000", "jobs": {"lora": {"job_id": "17"}}}\n'),
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
    text = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
    assert yaml.safe_dump(yaml.safe_load(text), sort_keys=False, allow_unicode=True) == text  # the harness writes what it means
    return text.encode("utf-8")


def _yaml_fails(text: str) -> bool:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return True
    return False


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


def _where(where: str) -> str:
    """Regex for a dotted config path as problems spell it: ``methods.1.kind`` -> ``methods\\[1\\]\\.kind``."""
    parts = [rf"\[{p}\]" if p.isdigit() else re.escape(p) for p in where.split(".")]
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
    i, key = pick(1, METHOD), pick("learning_rate", st.sampled_from(["learning_rate", "epochs", "warmup_ratio", "weight_decay"]))
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
    where = pick("model", st.sampled_from(["model", "data", "data.train", "eval", "tracking", "local", "methods.0.resources", "methods.1.lora"]))
    *parents, key = where.split(".")
    node: tp.Any = case.config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[key] = pick(["a", "b"], NOT_A_MAPPING)
    return [rf"config: {_where(where)}: expected a mapping"]


@kind("mapping_for_list")
def _(case: Case, pick: Pick) -> list[str]:
    if pick("methods", st.sampled_from(["methods", "target_modules"])) == "methods":
        case.config["methods"] = {m["name"]: m for m in case.config["methods"]}
        return [r"config: methods: expected a list"]
    case.method(1)["lora"]["target_modules"] = pick({"q_proj": True}, st.dictionaries(IDENT, st.integers(), min_size=1, max_size=2))
    return [rf"config: {case.label(1)}\.lora\.target_modules: expected a list"]


@kind("yaml_date_for_string")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("name", st.sampled_from(["name", "output_dir"]))
    text = _yaml(case.config).decode()
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
    case.config_bytes = text.replace(line, f"{key}: 2024-05-01", 1).encode()  # YAML reads a date, not text
    return [rf"config: {key}: expected a string"]


@kind("unknown_literal")
def _(case: Case, pick: Pick) -> list[str]:
    where = pick("methods.1.kind", st.sampled_from(["methods.1.kind", "methods.0.precision", "model.dtype", "eval.mode", "tracking.mode"]))
    *parents, key = where.split(".")
    node: tp.Any = case.config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    allowed = {"kind": METHOD_KINDS, "precision": ("auto", "fp32", "bf16", "fp16"), "dtype": ("auto", "float32", "bfloat16", "float16"),
               "mode": ("loglik", "generate", "online", "offline", "disabled")}[key]
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
    typo = key[:pos] + key[pos + 1:]  # one letter dropped: close enough for a did-you-mean
    case.config[typo] = case.config.pop(key) if key != "methods" else case.config["methods"]
    return [rf"config: {re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


@kind("typo_method_key")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(0, METHOD)
    key = pick("learning_rate", st.sampled_from(["learning_rate", "micro_batch_size", "max_steps", "resources"]))
    pos = pick(5, st.integers(0, len(key) - 1))
    typo = key[:pos] + key[pos + 1:]
    case.method(i)[typo] = case.method(i).pop(key)
    return [rf"config: methods\[{i}\]\.{re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


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
    r["max_timeouts"] = pick(-1, st.integers(-10**6, -1))
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
    case.method(i)["learning_rate"] = pick(10**400, st.integers(min_value=2**1024, max_value=10**1000))  # beyond float range
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
        case.config_bytes = _yaml(case.config) + f"local: {{max_parallel: {digits}}}\n".encode()
        return [r"config: .* is not valid YAML: .*4300 digits"]
    if where == "override":
        case.overrides.append(f"seed={digits}")
        return [r"config: seed: expected an integer"]
    if where == "jsonl":
        case.use_jsonl()
    k = pick(3, RECORD)
    case.data_bytes = case.data_text().replace(f'"solution": "{case.records[k]["solution"]}"', f'"solution": {digits}', 1).encode()
    return [r"JSON cannot be read \(.*4300 digits"]


@kind("eval_fraction_out_of_range")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["eval_fraction"] = pick(1.5, st.floats().filter(lambda x: not 0 < x < 1))
    return [r"config: data\.eval_fraction"]


@kind("bad_experiment_name")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["name"] = pick("../escape", ANY_TEXT.filter(lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s)))
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
    where = pick("eval.batch_size", st.sampled_from(["eval.batch_size", "model.max_seq_len", "data.max_train", "data.max_eval", "eval.max_new_tokens"]))
    section, key = where.split(".")
    case.config[section][key] = pick(0, st.integers(max_value=0 if key in ("batch_size", "max_train", "max_eval") else 3))
    return [rf"config: {re.escape(where)}: -?\d+ ->"]


@kind("lora_settings_out_of_range")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, st.sampled_from([1, 2]))
    key = pick("r", st.sampled_from(["r", "alpha", "dropout"]))
    case.method(i)["lora"][key] = pick(0, st.integers(max_value=0)) if key != "dropout" else pick(1.0, st.floats(min_value=1.0))
    return [rf"config: {case.label(i)}\.lora"]


# ---- config: methods


@kind("unknown_method_kind")
def _(case: Case, pick: Pick) -> list[str]:
    i = pick(1, METHOD)
    case.method(i)["kind"] = pick("lroa", st.one_of(ANY_TEXT, st.integers()).filter(lambda v: v not in METHOD_KINDS))
    return [rf"config: methods\[{i}\]\.kind: .* is not allowed -> "]


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
    case.method(i)["deepspeed"] = pick("ds_configs/zero2.json", st.sampled_from(["ds_configs/zero3.json", "ds_configs/zero3_offload.json"]))
    return [rf"config: {case.label(i)}\.deepspeed: set for kind"]


@kind("deepspeed_file_missing")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("zero4", IDENT)
    case.method(0)["deepspeed"] = str(case.root / "ds" / f"{name}.json")
    return [r"config: methods\[0\] \(full_sft\)\.deepspeed: .* does not exist"]


@kind("deepspeed_file_not_json")
def _(case: Case, pick: Pick) -> list[str]:
    path = case.root / "ds" / "zero.json"
    case.files[path] = pick(b'{"zero_optimization": {"stage": 3,}', st.sampled_from([b"", b"[1, 2]", b"\xff\xfe", b'{"zero_optimization": 3}']))
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
    case.files[model / pick("tokenizer.json", st.sampled_from(["tokenizer.json", "model.safetensors", "README.md"]))] = b"{}"
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
    item = pick("methods.lora.learning_rate", st.text(min_size=1, max_size=12).filter(lambda s: "=" not in s and not s.startswith("-")))
    case.overrides.append(item)
    return [rf"config: override {re.escape(repr(item))}: expected key=value"]


@kind("override_unknown_method")
def _(case: Case, pick: Pick) -> list[str]:
    names = [m["name"] for m in case.config["methods"]]
    name = pick("dora", st.from_regex(r"[a-z0-9_-]{1,10}", fullmatch=True).filter(
        lambda s: s not in names and not (s.isdigit() and int(s) < len(names))))
    case.overrides.append(f"methods.{name}.learning_rate=1e-4")
    return [rf"config: override methods\.{re.escape(name)}(\.learning_rate)?: no list item"]


@kind("override_into_a_scalar")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("name", st.sampled_from(["name", "seed", "output_dir", "methods.lora.learning_rate", "model.name_or_path"]))
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
    key = pick("gpus_per_node", st.sampled_from(["gpus_per_node", "gpu_mem_gb", "cpus_per_gpu", "mem_gb_per_gpu", "max_time_min"]))
    case.profile[key] = pick(0, NON_POSITIVE_INT)
    return [rf"profile: {key}: -?\d+ -> a positive whole number"]


@kind("profile_non_positive_max_nodes")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile["max_nodes"] = pick(0, NON_POSITIVE_INT)
    return [r"profile: max_nodes: -?\d+ -> a positive whole number, or null"]


@kind("profile_wrong_type")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("gpus_per_node", st.sampled_from(["gpus_per_node", "max_time_min", "price_per_gpu_hour", "partition", "setup", "env"]))
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
    typo = key[:pos] + key[pos + 1:]
    case.profile[typo] = case.profile[key]
    return [rf"profile: {re.escape(typo)}: unknown key -> did you mean {key!r}\?"]


@kind("profile_secret_env")
def _(case: Case, pick: Pick) -> list[str]:
    word = pick("TOKEN", st.sampled_from([*SECRET_WORDS, *(w.lower() for w in SECRET_WORDS)]))
    name = pick("HF_", st.from_regex(r"[A-Z_]{0,4}", fullmatch=True)) + word + pick("", st.from_regex(r"[A-Z0-9_]{0,4}", fullmatch=True))
    case.profile["env"] = {"NCCL_DEBUG": "WARN", name: "s3cr3t-" + pick("abc123", st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True))}
    return [rf"profile: env\.{re.escape(name)}: looks like a secret"]


@kind("profile_secret_value")
def _(case: Case, pick: Pick) -> list[str]:
    name = pick("HUB_AUTH", st.from_regex(r"[A-Z][A-Z_]{0,8}", fullmatch=True).filter(lambda n: not any(w in n for w in SECRET_WORDS)))
    case.profile["env"] = {name: pick("hf_", st.sampled_from(SECRET_VALUE_PREFIXES)) + "s3cr3tvalue"}
    return [rf"profile: env\.{re.escape(name)}: the value looks like an API token"]


@kind("profile_reserved_sbatch_option")
def _(case: Case, pick: Pick) -> list[str]:
    key = pick("time", st.sampled_from(["partition", "gres_flags", "nodes", "mem", "job-name", "output"]))
    case.profile["additional_parameters"] = {key: 1}
    if key == "gres_flags":  # not reserved: fine on its own; make the value bad instead
        case.profile["additional_parameters"] = {key: ["a", "b"]}
    return [rf"profile: additional_parameters\.{re.escape(key)}: "]


@kind("profile_yaml_syntax_error")
def _(case: Case, pick: Pick) -> list[str]:
    case.profile_bytes = _yaml(case.profile) + pick(b"setup: [module load\n", st.sampled_from([b"env: {A: 1\n", b"  : :\n", b"\tpartition: x\n"]))
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
    case.records[k]["solution"] = pick("E", st.one_of(ANY_TEXT, st.integers(), st.none(), st.booleans()).filter(lambda v: v not in LETTERS))
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
    value = pick("", st.one_of(st.sampled_from([" ", "\n\t"]), st.integers(), st.none(), st.lists(st.text(), max_size=2)))
    if value is None and pick(False, st.booleans()):
        del case.records[k]["question"]
    else:
        case.records[k]["question"] = value
    return [rf"record {k}\b.*'question'"]


@kind("record_not_a_mapping")
def _(case: Case, pick: Pick) -> list[str]:
    k = pick(3, RECORD)
    case.records[k] = pick("Which port does HTTP use?", st.one_of(st.text(), st.integers(), st.lists(st.integers(), max_size=3), st.none()))
    return [rf"record {k}\b.*: expected a mapping"]


@kind("contradictory_duplicate")
def _(case: Case, pick: Pick) -> list[str]:
    i, j = pick((2, 7), st.lists(RECORD, min_size=2, max_size=2, unique=True).map(tuple))
    first = case.records[i]
    right = first["answers"][first["solution"]]
    wrong = [x for x in LETTERS if first["answers"][x].strip().lower() != right.strip().lower()]
    dup = copy.deepcopy(first)
    # The same question as the deduplication sees it (case, spacing, end punctuation), another answer.
    dup["question"] = pick(lambda q: q.upper(), st.sampled_from([lambda q: q, lambda q: "  " + q + " ", lambda q: q.rstrip("?")]))(first["question"])
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
    case.data_bytes = data[:at] + pick(b"\xff", st.sampled_from([b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    line = data.count(b"\n", 0, at) + 1
    return [rf"not valid UTF-8 at byte offset {at} \(line {line}\b"]


@kind("data_invalid_json")
def _(case: Case, pick: Pick) -> list[str]:
    data = case.data_text()
    commas = [m.start() for m in re.finditer(r",\n", data)]
    at = commas[pick(10, st.integers(0, len(commas) - 1))]
    how = pick("drop_comma", st.sampled_from(["drop_comma", "truncate", "trailing_comma"]))
    if how == "drop_comma":
        data = data[:at] + data[at + 1:]
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
    lines[n - 1] = pick('{"question": "Which port?", "answers": \n', st.sampled_from(["not json\n", "{'single': 'quotes'}\n", "[1, 2\n"]))
    case.data_bytes = "".join(lines).encode()
    return [rf"record {n - 1} \(line {n}\): invalid JSON"]


@kind("data_wrong_top_level")
def _(case: Case, pick: Pick) -> list[str]:
    shape = pick("list", st.sampled_from(["list", "other_key", "questions_not_list", "scalar"]))
    obj = {"list": case.records, "other_key": {"items": case.records}, "questions_not_list": {"questions": {"q": 1}}, "scalar": 42}[shape]
    case.data_bytes = json.dumps(obj).encode()
    return [r"cyber_mcq\.json: (top level|'questions')"]


@kind("all_train_questions_in_eval")
def _(case: Case, pick: Pick) -> list[str]:
    case.config["data"]["eval"] = {"path": str(case.data_path)}
    return [r"no training questions left"]


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
    """Fake Slurm commands on PATH; a function that builds a case, mutates it, runs submit, checks."""
    state = install_fake_slurm(tmp_path, monkeypatch, sbatch=FAKE_SBATCH)
    monkeypatch.chdir(REPO)

    def run(kind_name: str | None, pick: Pick) -> tuple[int, str]:
        root = Path(tempfile.mkdtemp(dir=tmp_path, prefix="case-"))
        case = Case(root=root, model=tiny_model)
        try:
            needles = KINDS[kind_name](case, pick) if kind_name else []
            case.write()
            before = _snapshot(root)
            capsys.readouterr()
            with monkeypatch.context() as mp:
                if case.as_non_root:
                    mp.setattr(os, "access", _access_by_mode_bits)
                try:
                    rc = cli.main(case.argv())
                except SystemExit as exc:  # argparse refusing the command line
                    rc = exc.code
            err = capsys.readouterr().err
            if kind_name is None:
                return rc, err
            assert rc == 2, f"{kind_name}: exit {rc}\n{err}"
            assert not (state / "count").exists(), f"{kind_name}: sbatch was called"
            assert _snapshot(root) == before, f"{kind_name}: files under {root} changed"
            lines = err.split("\n")  # not splitlines(): a quoted value may hold U+2028 and friends
            for needle in needles:
                hits = [ln for ln in lines if re.search(needle, ln)]
                assert hits, f"{kind_name}: no line matches {needle!r} in\n{err}"
                assert any("->" in ln for ln in hits), f"{kind_name}: no fix ('->') on {hits}"
            assert "Traceback" not in err
            assert "s3cr3t" not in err, f"{kind_name}: a secret value was echoed\n{err}"
            return rc, err
        finally:
            for path, _ in case.chmods:
                path.chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)

    return run


# --------------------------------------------------------------------------- tests


def test_catalogue_is_large_enough():
    assert len(KINDS) >= 30, sorted(KINDS)


def test_the_unmutated_case_is_submitted(harness, tmp_path):
    """The harness is not vacuous: without a mutation the same case is submitted (4 sbatch calls)."""
    rc, err = harness(None, Pick())
    assert rc == 0, err
    assert (tmp_path / "fake-slurm" / "count").read_text().strip() == "5004"


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_each_kind_is_refused(harness, kind_name):
    harness(kind_name, Pick())


@settings(max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "100")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_random_bad_input_is_refused(harness, data):
    kind_name = data.draw(st.sampled_from(sorted(KINDS)), label="kind")
    harness(kind_name, Pick(data))


def test_repeated_questions_that_agree_are_accepted(tmp_path):
    """Only a contradiction is refused: repeats with the same answer (shuffled or reworded options) load."""
    from launch.config import DataConfig, DataSource
    from launch.data import DataError, load_questions, prepare_splits

    first = {"question": "Which port does HTTP use?", "answers": {"A": "80", "B": "443", "C": "21", "D": "22"}, "solution": "A"}
    agree = [
        first,
        {**first, "question": "which port does HTTP use"},  # the same record, as dedup compares it
        {"question": "Which port does HTTP use ?", "answers": {"A": "22", "B": "21", "C": "443", "D": "80."}, "solution": "D"},
        {"question": "Which port does HTTP use?", "answers": {"A": "Port 80", "B": "1", "C": "2", "D": "3"}, "solution": "A"},
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
