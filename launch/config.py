"""The one typed experiment config: YAML + dotted ``key=value`` overrides.

Every field is documented where it is defined. Defaults live here and only
here. The module is standard library + PyYAML so that the login node, the
compute nodes and the tests all read configs the same way, without torch.

Loading collects *every* problem (unknown keys with a did-you-mean, wrong
types, bad values, cross-field conflicts, missing files) and raises one
:class:`ConfigError` listing them all, each naming the field, the value and
the fix.

Example
-------
>>> cfg = load_config("configs/smoke.yaml", ["methods.lora.learning_rate=1e-3"])
>>> cfg.methods[1].learning_rate
0.001
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METHOD_KINDS = ("full_sft", "lora", "qlora")
LETTERS = ("A", "B", "C", "D")


class InputError(ValueError):
    """Every problem found in one input (config, profile, dataset), raised once.

    The CLI turns it into exit code 2 before anything is started.

    Parameters
    ----------
    problems:
        One line each: ``field or record: what is wrong (value) -> fix``.
    source:
        Where the input came from, for the header line.
    max_lines:
        Problems shown in the message (all stay in ``.problems``).
    """

    def __init__(self, problems: tp.Sequence[str], source: str = "input", max_lines: int | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        shown = self.problems[:max_lines]
        lines = "\n".join(f"  - {p}" for p in shown)
        more = len(self.problems) - len(shown)
        tail = f"\n  ... and {more} more (see .problems)" if more else ""
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}{tail}")


class ConfigError(InputError):
    """Every problem found in an experiment config (``field: what is wrong (value) -> fix``)."""


# --------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """Which model to fine-tune."""

    name_or_path: str = ""
    """A Hugging Face hub name (``meta-llama/Meta-Llama-3-8B``) or a local directory
    written by ``save_pretrained``. Relative paths are resolved against the
    directory the CLI runs from."""

    dtype: tp.Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype when loading. ``auto``: bfloat16 on a GPU that supports it,
    float32 on CPU."""

    trust_remote_code: bool = False
    """Passed to ``from_pretrained``; leave off unless the model needs it."""

    max_seq_len: int = 512
    """Prompts plus answers longer than this are truncated from the left of the
    prompt (the answer is always kept)."""


@dataclass
class DataSource:
    """One dataset: a file or a Hugging Face dataset."""

    path: str = ""
    """CyberMetric JSON (``{"questions": [...]}``), JSONL with the same records, a
    directory written by ``datasets.save_to_disk``, or a hub dataset name."""

    format: tp.Literal["auto", "cybermetric", "jsonl", "hf"] = "auto"
    """``auto`` picks by extension: ``.json`` CyberMetric, ``.jsonl`` JSONL, a
    directory or anything else a Hugging Face dataset."""

    split: str = "train"
    """Split to read for Hugging Face datasets (ignored for files)."""


@dataclass
class DataConfig:
    """Training and evaluation data."""

    train: DataSource = field(default_factory=DataSource)
    """Training questions."""

    eval: tp.Optional[DataSource] = None
    """Held-out questions. ``null``: split ``eval_fraction`` off ``train``."""

    eval_fraction: float = 0.2
    """Fraction of ``train`` held out when ``eval`` is null (0 < x < 1)."""

    seed: int = 0
    """Seed of the train/eval split; the same seed gives the same split."""

    dedup: bool = True
    """Drop training questions whose normalised text also appears in the eval set
    (CyberMetric-500 and -2000 share 130 questions)."""

    max_train: tp.Optional[int] = None
    """Keep at most this many training questions (after the split), for quick runs."""

    max_eval: tp.Optional[int] = None
    """Keep at most this many eval questions, for quick runs."""


@dataclass
class LoraSettings:
    """LoRA adapter settings, used by ``lora`` and ``qlora`` methods."""

    r: int = 16
    """Adapter rank."""

    alpha: int = 32
    """Scaling numerator (``alpha / r`` multiplies the adapter output)."""

    dropout: float = 0.0
    """Dropout on the adapter input."""

    target_modules: tp.List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters (all Llama linear projections by default)."""


@dataclass
class Resources:
    """What one method's job asks of the cluster (Slurm) or the machine (local)."""

    nodes: int = 1
    """Number of nodes."""

    gpus_per_node: int = 1
    """GPUs per node; 0 runs on CPU."""

    cpus_per_gpu: int = 8
    """CPU cores per GPU (per task on CPU-only runs)."""

    mem_gb_per_gpu: int = 64
    """Host memory per GPU in GiB."""

    time_min: int = 60
    """Wall-clock limit of the job in minutes."""


@dataclass
class MethodConfig:
    """One fine-tuning method: its kind, hyperparameters and resources."""

    name: str = ""
    """Unique name; used for directories, W&B run names and report rows. ``base``
    is reserved for the un-tuned model."""

    kind: tp.Literal["full_sft", "lora", "qlora"] = "lora"
    """``full_sft`` (all weights, accelerate; ZeRO via ``deepspeed``), ``lora`` (peft
    adapters on a frozen model) or ``qlora`` (4-bit NF4 base + LoRA, one GPU)."""

    learning_rate: float = 2e-4
    """Peak learning rate (linear warm-up, then linear decay to 0)."""

    epochs: float = 1.0
    """Passes over the training set; ignored when ``max_steps`` is set."""

    max_steps: tp.Optional[int] = None
    """Optimizer steps to run; overrides ``epochs``."""

    micro_batch_size: int = 4
    """Sequences per device per forward pass."""

    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step. Global batch =
    micro_batch_size x grad_accum_steps x nodes x gpus_per_node."""

    warmup_ratio: float = 0.03
    """Fraction of steps spent warming the learning rate up."""

    weight_decay: float = 0.0
    """AdamW weight decay."""

    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""

    precision: tp.Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision. ``auto``: bf16 on GPUs that support it, fp32 on CPU."""

    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (slower)."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    """Adapter settings (``lora`` and ``qlora`` only)."""

    deepspeed: tp.Optional[str] = None
    """Path of a DeepSpeed JSON in ``ds_configs/`` (``full_sft`` only); null: plain
    accelerate (DDP across GPUs)."""

    resources: Resources = field(default_factory=Resources)
    """What the job asks for."""


@dataclass
class EvalConfig:
    """The shared evaluation job."""

    mode: tp.Literal["loglik", "generate"] = "loglik"
    """``loglik``: the answer letter with the highest log-likelihood; ``generate``:
    greedy generation parsed strictly as ``ANSWER: X`` (parse failures count as
    wrong and are reported)."""

    batch_size: int = 32
    """Questions per forward pass."""

    include_base: bool = True
    """Also score the un-tuned base model (the ``base`` row)."""

    max_new_tokens: int = 8
    """Generation budget in ``generate`` mode."""

    resources: Resources = field(default_factory=Resources)
    """What the evaluation job asks for."""


@dataclass
class TrackingConfig:
    """Weights & Biases. The API key is read from ``WANDB_API_KEY`` on the compute
    node at run time and is never stored in a config."""

    backend: tp.Literal["wandb", "none"] = "wandb"
    """``none`` disables tracking entirely."""

    project: str = "cyberft"
    """W&B project."""

    entity: tp.Optional[str] = None
    """W&B entity (team or user); null: the key's default."""

    mode: tp.Literal["online", "offline", "disabled"] = "offline"
    """``offline`` writes runs under the experiment directory (sync later with
    ``wandb sync``); compute nodes often have no internet."""


@dataclass
class LocalConfig:
    """Local execution (``cyberft run``)."""

    max_parallel: int = 0
    """Training jobs run at once; 0: one per 1-thread CPU slot on CPU, 1 on a GPU."""

    threads_per_job: int = 1
    """torch threads per job on CPU."""


@dataclass
class ExperimentConfig:
    """One experiment: a model, data, the methods to compare, evaluation, tracking."""

    name: str = "experiment"
    """Experiment name; the experiment directory is ``output_dir/<name>-<time>``."""

    output_dir: str = "runs"
    """Where experiment directories are created (shared storage on a cluster)."""

    seed: int = 0
    """Seed for model init, data order and dropout."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""

    methods: tp.List[MethodConfig] = field(default_factory=list)
    """The methods to compare (at least one)."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    """The shared evaluation job."""

    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking."""

    local: LocalConfig = field(default_factory=LocalConfig)
    """Local execution settings."""

    def method(self, name: str) -> MethodConfig:
        """The method called ``name``; ``KeyError`` with the known names otherwise."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r}; known: {[m.name for m in self.methods]}")


# --------------------------------------------------------------------------- typed loading


def _is_dataclass_type(t: tp.Any) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _type_name(t: tp.Any) -> str:
    origin = tp.get_origin(t)
    if origin is tp.Literal:
        return " | ".join(repr(a) for a in tp.get_args(t))
    if origin in (tp.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in tp.get_args(t))
    if origin in (list, tp.List):
        return f"list of {_type_name(tp.get_args(t)[0])}"
    if t is type(None):
        return "null"
    if _is_dataclass_type(t):
        return "mapping"
    return getattr(t, "__name__", str(t))


def _hints(cls: type) -> dict[str, tp.Any]:
    return tp.get_type_hints(cls)


def _convert(value: tp.Any, t: tp.Any, where: str, problems: list[str]) -> tp.Any:
    """Convert ``value`` to type ``t``; append a problem and return None when it does not fit."""
    origin = tp.get_origin(t)
    if origin in (tp.Union, types.UnionType):
        args = tp.get_args(t)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], where, problems)
    if origin is tp.Literal:
        allowed = tp.get_args(t)
        if value in allowed:
            return value
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"use one of {', '.join(map(repr, allowed))}"
        problems.append(f"{where}: {value!r} is not allowed -> {fix}")
        return None
    if origin in (list, tp.List):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__} {value!r} -> write it as a YAML list")
            return None
        (item_t,) = tp.get_args(t)
        items = [_convert(v, item_t, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return [v for v in items if v is not None]
    if _is_dataclass_type(t):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of {t.__name__} fields, got {value!r}")
            return None
        return _build(t, value, where, problems)
    if t is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: expected true or false, got {value!r}")
        return None
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: expected an integer, got {type(value).__name__} {value!r} -> write a whole number")
        return None
    if t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return None
    if t is str:
        if isinstance(value, str):
            return value
        problems.append(f"{where}: expected a string, got {type(value).__name__} {value!r} -> quote it")
        return None
    raise TypeError(f"unsupported schema type {t!r} at {where}")  # a bug in the schema, not user input


def _build(cls: type, raw: dict, where: str, problems: list[str]) -> tp.Any:
    """Build dataclass ``cls`` from ``raw``, reporting unknown keys with a did-you-mean."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            hint = difflib.get_close_matches(str(key), names, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"known keys: {', '.join(names)}"
            problems.append(f"{path}: unknown key -> {fix}")
            continue
        before = len(problems)
        converted = _convert(value, hints[key], path, problems)
        # A bad scalar keeps its default so later checks still run; nested
        # mappings and lists come back with their own bad fields defaulted.
        if converted is not None or len(problems) == before:
            kwargs[key] = converted
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - all fields have defaults
        problems.append(f"{where or 'config'}: {exc}")
        return cls()


# --------------------------------------------------------------------------- overrides


def _parse_scalar(text: str) -> tp.Any:
    """Parse an override value the way YAML would (``1e-3``, ``true``, ``[a, b]``, ``null``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: tp.Sequence[str], problems: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides to the raw mapping.

    Methods are addressed by name (``methods.lora.learning_rate=1e-4``) or by
    index (``methods.0.learning_rate=1e-4``).
    """
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: expected key=value -> e.g. methods.lora.learning_rate=1e-4")
            continue
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node: tp.Any = raw
        ok = True
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node, ok = _list_child(node, part, ".".join(parts[: i + 1]), problems)
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                ok = False
                problems.append(f"override {key}: {'.'.join(parts[:i + 1])} is not a mapping")
            if not ok:
                break
        if not ok:
            continue
        last = parts[-1]
        if isinstance(node, list):
            idx, ok = _list_index(node, last, key, problems)
            if ok:
                node[idx] = _parse_scalar(text)
        elif isinstance(node, dict):
            node[last] = _parse_scalar(text)
    return raw


def _list_index(items: list, part: str, where: str, problems: list[str]) -> tuple[int, bool]:
    if part.isdigit() and int(part) < len(items):
        return int(part), True
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i, True
    names = [it.get("name") for it in items if isinstance(it, dict)]
    problems.append(f"override {where}: no list item {part!r} -> use an index or one of {names}")
    return 0, False


def _list_child(items: list, part: str, where: str, problems: list[str]) -> tuple[tp.Any, bool]:
    idx, ok = _list_index(items, part, where, problems)
    return (items[idx] if ok else None), ok


# --------------------------------------------------------------------------- semantic checks


def _looks_local(path: str) -> bool:
    """A hub name is ``org/name`` or ``name``; anything else (or anything that exists) is a path."""
    if os.path.exists(path):
        return True
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or path.endswith((".json", ".jsonl"))


def _check_source(src: DataSource, where: str, problems: list[str]) -> None:
    if not src.path:
        problems.append(f"{where}.path: empty -> give a CyberMetric JSON, a JSONL file or a dataset directory")
        return
    p = Path(src.path).expanduser()
    if _looks_local(src.path) and not p.exists():
        problems.append(f"{where}.path: {src.path!r} does not exist -> check the path (relative to {os.getcwd()})")
    elif p.is_dir() and src.format in ("cybermetric", "jsonl"):
        problems.append(f"{where}.path: {src.path!r} is a directory but format is {src.format!r} -> give a file or set format: hf")


def validate(cfg: ExperimentConfig, problems: list[str]) -> None:
    """Cross-field and value checks; appends to ``problems``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name or ""):
        problems.append(f"name: {cfg.name!r} -> use letters, digits, '_', '.', '-' (it names a directory)")
    if not cfg.model.name_or_path:
        problems.append("model.name_or_path: empty -> a hub name (meta-llama/Meta-Llama-3-8B) or a local model directory")
    elif _looks_local(cfg.model.name_or_path):
        mp = Path(cfg.model.name_or_path).expanduser()
        if not (mp / "config.json").is_file():
            problems.append(
                f"model.name_or_path: {cfg.model.name_or_path!r} has no config.json -> "
                "a directory written by save_pretrained (build a tiny one with `cyberft tiny-model DIR`)"
            )
    if cfg.model.max_seq_len < 16:
        problems.append(f"model.max_seq_len: {cfg.model.max_seq_len} -> at least 16")
    _check_source(cfg.data.train, "data.train", problems)
    if cfg.data.eval is not None:
        _check_source(cfg.data.eval, "data.eval", problems)
    elif not 0.0 < cfg.data.eval_fraction < 1.0:
        problems.append(f"data.eval_fraction: {cfg.data.eval_fraction} -> a fraction strictly between 0 and 1")
    for key in ("max_train", "max_eval"):
        v = getattr(cfg.data, key)
        if v is not None and v < 1:
            problems.append(f"data.{key}: {v} -> a positive number, or null for all")
    if not cfg.methods:
        problems.append("methods: empty -> list at least one method (kind: full_sft | lora | qlora)")
    seen: set[str] = set()
    for i, m in enumerate(cfg.methods):
        _validate_method(m, f"methods[{i}]", seen, problems)
    if cfg.eval.batch_size < 1:
        problems.append(f"eval.batch_size: {cfg.eval.batch_size} -> at least 1")
    if cfg.eval.max_new_tokens < 4:
        problems.append(f"eval.max_new_tokens: {cfg.eval.max_new_tokens} -> at least 4 ('ANSWER: X')")
    _validate_resources(cfg.eval.resources, "eval.resources", problems)
    if cfg.local.max_parallel < 0 or cfg.local.threads_per_job < 1:
        problems.append(
            f"local: max_parallel={cfg.local.max_parallel}, threads_per_job={cfg.local.threads_per_job} "
            "-> max_parallel >= 0 (0 = automatic), threads_per_job >= 1"
        )


def _validate_resources(r: Resources, where: str, problems: list[str]) -> None:
    for key in ("nodes", "cpus_per_gpu", "mem_gb_per_gpu", "time_min"):
        v = getattr(r, key)
        if v < 1:
            problems.append(f"{where}.{key}: {v} -> at least 1")
    if r.gpus_per_node < 0:
        problems.append(f"{where}.gpus_per_node: {r.gpus_per_node} -> 0 (CPU) or more")


def _validate_method(m: MethodConfig, where: str, seen: set[str], problems: list[str]) -> None:
    label = f"{where} ({m.name})" if m.name else where
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", m.name or ""):
        problems.append(f"{label}.name: {m.name!r} -> letters, digits, '_', '.', '-' (it names a directory)")
    elif m.name == "base":
        problems.append(f"{label}.name: 'base' is reserved for the un-tuned model row -> pick another name")
    elif m.name in seen:
        problems.append(f"{label}.name: {m.name!r} is used twice -> method names must be unique")
    seen.add(m.name)
    if m.learning_rate <= 0:
        problems.append(f"{label}.learning_rate: {m.learning_rate} -> a positive number such as 2e-4")
    if m.max_steps is None and m.epochs <= 0:
        problems.append(f"{label}.epochs: {m.epochs} -> positive, or set max_steps")
    if m.max_steps is not None and m.max_steps < 1:
        problems.append(f"{label}.max_steps: {m.max_steps} -> at least 1, or null to use epochs")
    for key in ("micro_batch_size", "grad_accum_steps"):
        if getattr(m, key) < 1:
            problems.append(f"{label}.{key}: {getattr(m, key)} -> at least 1")
    if not 0 <= m.warmup_ratio < 1:
        problems.append(f"{label}.warmup_ratio: {m.warmup_ratio} -> between 0 and 1")
    if m.weight_decay < 0 or m.max_grad_norm < 0:
        problems.append(f"{label}: weight_decay={m.weight_decay}, max_grad_norm={m.max_grad_norm} -> both >= 0")
    if m.kind in ("lora", "qlora"):
        if m.lora.r < 1 or m.lora.alpha < 1:
            problems.append(f"{label}.lora: r={m.lora.r}, alpha={m.lora.alpha} -> both at least 1")
        if not 0 <= m.lora.dropout < 1:
            problems.append(f"{label}.lora.dropout: {m.lora.dropout} -> between 0 and 1")
        if not m.lora.target_modules:
            problems.append(f"{label}.lora.target_modules: empty -> e.g. [q_proj, v_proj]")
    _validate_resources(m.resources, f"{label}.resources", problems)
    r = m.resources
    world = r.nodes * max(r.gpus_per_node, 1)
    if m.kind == "qlora" and (r.nodes != 1 or r.gpus_per_node > 1):
        problems.append(
            f"{label}: qlora runs on one GPU, but resources ask for nodes={r.nodes} x gpus_per_node="
            f"{r.gpus_per_node} = {world} devices -> set resources.nodes=1 and resources.gpus_per_node=1, "
            "or use kind: lora for several GPUs"
        )
    if m.deepspeed is not None:
        if m.kind != "full_sft":
            problems.append(f"{label}.deepspeed: set for kind {m.kind!r} -> DeepSpeed ZeRO is for full_sft; remove it")
        elif not Path(m.deepspeed).is_file():
            problems.append(f"{label}.deepspeed: {m.deepspeed!r} does not exist -> one of ds_configs/zero2.json, zero3.json, zero3_offload.json")


# --------------------------------------------------------------------------- entry points


def build_config(raw: tp.Any, overrides: tp.Sequence[str] = ()) -> tuple[ExperimentConfig | None, list[str]]:
    """Build a config from a raw mapping and validate it, without raising.

    Returns the config (bad values left at their defaults, so it is always
    usable for display) and every problem found; the config is None only when
    ``raw`` is not a mapping at all. ``--dry-run`` uses this to show a plan
    together with everything that would stop it.
    """
    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, [f"top level: expected a mapping of config keys, got {type(raw).__name__}"]
    raw = apply_overrides(json.loads(json.dumps(raw)), overrides, problems)
    cfg = _build(ExperimentConfig, raw, "", problems)
    validate(cfg, problems)  # bad values were left at their defaults, so this is safe
    return cfg, problems


def from_dict(raw: tp.Any, overrides: tp.Sequence[str] = (), source: str = "config") -> ExperimentConfig:
    """Build and validate a config from a raw mapping; raise :class:`ConfigError` with every problem."""
    cfg, problems = build_config(raw, overrides)
    if problems or cfg is None:
        raise ConfigError(problems, source)
    return cfg


def read_raw(path: str | os.PathLike) -> tp.Any:
    """The YAML mapping of a config file; :class:`ConfigError` when it cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError([f"config: {str(p)!r} is a directory -> give a YAML file such as configs/smoke.yaml"], str(p))
    if not p.is_file():
        raise ConfigError([f"config: {str(p)!r} does not exist -> check the path; shipped configs are in configs/"], str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config: {p} is not valid YAML: {exc}"], str(p)) from None
    return raw if raw is not None else {}


def check_config(path: str | os.PathLike, overrides: tp.Sequence[str] = ()) -> tuple[ExperimentConfig | None, list[str]]:
    """:func:`build_config` for a file: (config or None, every problem)."""
    try:
        raw = read_raw(path)
    except ConfigError as exc:
        return None, list(exc.problems)
    return build_config(raw, overrides)


def load_config(path: str | os.PathLike, overrides: tp.Sequence[str] = ()) -> ExperimentConfig:
    """Load a YAML experiment config, apply overrides, validate; raise :class:`ConfigError`."""
    return from_dict(read_raw(path), overrides, source=str(path))


def to_dict(cfg: tp.Any) -> dict:
    """The config as plain data (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(cfg: ExperimentConfig) -> str:
    """A short, stable hash of the resolved config."""
    text = json.dumps(to_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
