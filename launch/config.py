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

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METHOD_KINDS = ("full_sft", "lora", "qlora")
MAX_NAME_LEN = 100
"""Longest experiment or method name: each names directories (``<name>-<UTC time>``,
``methods/<name>``) and Slurm jobs (``<experiment>.<method>``), and file names stop at 255 bytes."""
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

    target_modules: tp.Union[tp.Literal["all-linear"], tp.List[str]] = "all-linear"
    """Modules that get adapters. ``all-linear`` (peft's name): every linear layer of the decoder,
    whatever the architecture calls them (Llama's ``q_proj``..``down_proj``, Phi-3's fused ``qkv_proj``
    and ``gate_up_proj``, GPT-NeoX's ``query_key_value``...), not the output layer. Or a list of module
    names, matched as peft does (a name or its last dotted parts), e.g. ``[q_proj, v_proj]``; an entry
    that matches no linear layer of the model stops the job before its first step, listing the names
    the model has."""


@dataclass
class CheckpointSettings:
    """When a training job saves a resumable checkpoint (model or adapter, optimizer, scheduler,
    RNG states, data position) into ``EXP/methods/<name>/checkpoints/``.

    A job restarted for any reason (requeued on SIGUSR2 near its time limit or on preemption,
    ``scontrol requeue``, a node failure) continues from the newest complete one; on SIGUSR2 the
    job also saves one right away. They are deleted once the final model is saved."""

    every_steps: tp.Optional[int] = None
    """Save every this many optimizer steps; null: by time only."""

    every_min: float = 30.0
    """Save when this many minutes of training passed since the last save; 0: by steps only."""

    keep: int = 2
    """Complete checkpoints kept (older ones are deleted once a newer one is complete)."""


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

    max_timeouts: int = 3
    """How many times the job may run into ``time_min`` and be requeued to continue from its
    last checkpoint (submitit's ``max_num_timeout``); preemptions are not counted. A run
    longer than the partition allows needs ``time_min x (max_timeouts + 1)`` to cover it."""


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
    """Examples (questions) per device per forward pass, in either ``batching`` layout."""

    batching: tp.Literal["packed", "padded"] = "packed"
    """How a micro-batch's examples become tensors. ``packed``: laid end to end in one row,
    no padding; position ids restart at every example and attention stays within it
    (per-example SDPA, or transformers' packed-sequence masks for other attention
    implementations; see ``train/packing.py``). ``padded``: one row per example, right-padded
    to the longest. Same examples, order, steps and loss (the mean over the micro-batch's
    answer tokens) either way; ``packed`` computes no padding: 1.66x the tokens/s of
    ``padded`` in ``bench/bench_train.py`` (16 CyberMetric-500 questions per micro-batch, CPU)."""

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

    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Resumable checkpoints (requeue, preemption, time limits)."""

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
        for alternative in inner:  # the first alternative the value fits, e.g. 'all-linear' or a list
            trial: list[str] = []
            converted = _convert(value, alternative, where, trial)
            if not trial:
                return converted
        problems.append(f"{where}: {value!r} is not {_type_name(t)} -> write one of those")
        return None
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
            keys = ", ".join(f.name for f in dataclasses.fields(t))
            problems.append(
                f"{where}: expected a mapping of {t.__name__} fields, got {type(value).__name__} {value!r} "
                f"-> write it as `key: value` lines indented under {where.rsplit('.', 1)[-1]}: (keys: {keys})"
            )
            return None
        return _build(t, value, where, problems)
    if t is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: expected true or false, got {type(value).__name__} {value!r} -> write true or false")
        return None
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: expected an integer, got {type(value).__name__} {value!r} -> write a whole number")
        return None
    if t is float:
        number: float | None = None
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if is_number or isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
            except OverflowError:  # an integer beyond float range
                is_number = True
        if number is not None and math.isfinite(number):
            return number
        # nan and inf pass every range check (nan < 0 is false), so they are refused here.
        what = "a finite number" if number is not None or is_number else "a number"
        problems.append(f"{where}: expected {what}, got {type(value).__name__} {value!r} -> write a number such as 2e-4 or 0.1")
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
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: e.g. an integer of 5000 digits
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
                problems.append(f"override {key}: {'.'.join(parts[:i + 1])} is {_kind_of(node)}, not a mapping -> "
                                f"set it as a whole ({'.'.join(parts[:i + 1])}=...), or check the key")
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
        else:  # e.g. name.x=1: never drop an override silently
            parent = ".".join(parts[:-1])
            problems.append(f"override {key}: {parent} is {_kind_of(node)}, not a mapping -> set it as a whole "
                            f"({parent}=...), or check the key")
    return raw


def _kind_of(value: tp.Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


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
    elif p.exists() and not p.is_dir() and (
        src.format == "hf" or (src.format == "auto" and p.suffix.lower() not in (".json", ".jsonl"))
    ):
        # hf reads a save_to_disk directory or a hub name, never a file
        problems.append(f"{where}.path: {src.path!r} is a file, read as a Hugging Face dataset (format {src.format!r}) "
                        "-> name it .json (CyberMetric) or .jsonl, or set format: cybermetric or jsonl")


def validate(cfg: ExperimentConfig, problems: list[str]) -> None:
    """Cross-field and value checks; appends to ``problems``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name or ""):
        problems.append(f"name: {cfg.name!r} -> use letters, digits, '_', '.', '-' (it names a directory)")
    elif len(cfg.name) > MAX_NAME_LEN:
        problems.append(f"name: {len(cfg.name)} characters ({cfg.name[:20]!r}...) -> at most {MAX_NAME_LEN}: "
                        "with the time stamp it names a directory, and file names have a length limit")
    if not 0 <= cfg.seed < 2**32:  # numpy (np.random.seed in every job) takes no other seed
        problems.append(f"seed: {cfg.seed} -> a whole number from 0 to {2**32 - 1}")
    if not cfg.model.name_or_path:
        problems.append("model.name_or_path: empty -> a hub name (meta-llama/Meta-Llama-3-8B) or a local model directory")
    elif _looks_local(cfg.model.name_or_path):
        mp = Path(cfg.model.name_or_path).expanduser()
        if not mp.exists():
            problems.append(
                f"model.name_or_path: {cfg.model.name_or_path!r} does not exist -> check the path (relative to "
                f"{os.getcwd()}), give a hub name, or build a tiny local model with `cyberft tiny-model DIR`"
            )
        elif not (mp / "config.json").is_file():
            problems.append(
                f"model.name_or_path: {cfg.model.name_or_path!r} has no config.json -> "
                "a directory written by save_pretrained (build a tiny one with `cyberft tiny-model DIR`)"
            )
    _check_output_dir(cfg.output_dir, problems)
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


def _check_output_dir(output_dir: str, problems: list[str]) -> None:
    """``output_dir`` must be a writable directory, or creatable (with its parents) under one.

    Checked before anything is written, so ``run`` and ``submit`` refuse instead of failing
    half-way. Writability uses :func:`os.access`: root passes on read-only mode bits, as it
    would when writing.
    """
    where = "output_dir"
    if not output_dir:
        problems.append(f"{where}: empty -> the directory that receives experiment directories, e.g. runs")
        return
    p = Path(output_dir).expanduser().absolute()
    try:
        if p.exists():
            if not p.is_dir():
                problems.append(f"{where}: {output_dir!r} is a file, not a directory -> give a directory (it is "
                                "created if missing), e.g. runs")
            elif not os.access(p, os.W_OK | os.X_OK):
                problems.append(f"{where}: {output_dir!r} is not writable by this user -> give a directory you can "
                                f"write to, or fix its permissions (chmod u+w {p})")
            return
        existing = p.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problems.append(f"{where}: {output_dir!r} cannot be created: {str(existing)!r} is a file, not a directory "
                            "-> give a path under a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"{where}: {output_dir!r} cannot be created: {str(existing)!r} is not writable by this "
                            "user -> give a directory you can write to")
    except OSError as exc:  # e.g. a parent that may not be searched
        problems.append(f"{where}: {output_dir!r} cannot be checked ({exc.strerror or exc}) -> give a directory you "
                        "can write to")


def _deepspeed_problem(path: str) -> str | None:
    """Why the DeepSpeed JSON ``path`` cannot be used (what follows the field name), or None."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        return f"{path!r} {what} -> one of ds_configs/zero2.json, zero3.json, zero3_offload.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"{path!r} is not a readable JSON file ({exc}) -> fix it, or use one of ds_configs/*.json"
    if not isinstance(raw, dict):
        return f"{path!r} holds {type(raw).__name__}, not a JSON object -> a DeepSpeed config like ds_configs/zero3.json"
    zero = raw.get("zero_optimization")
    if zero is None:
        return None
    if not isinstance(zero, dict):
        return f"{path!r}: zero_optimization is {zero!r}, not an object -> e.g. {{\"stage\": 3}}"
    stage = zero.get("stage", 0)
    if stage not in ("0", "1", "2", "3") and (isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage <= 3):
        return f"{path!r}: zero_optimization.stage is {stage!r} -> 0, 1, 2 or 3"
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key) is not None and not isinstance(zero[key], dict):
            return f"{path!r}: zero_optimization.{key} is {zero[key]!r}, not an object -> e.g. {{\"device\": \"cpu\"}}"
    return None


def _validate_resources(r: Resources, where: str, problems: list[str]) -> None:
    for key in ("nodes", "cpus_per_gpu", "mem_gb_per_gpu", "time_min"):
        v = getattr(r, key)
        if v < 1:
            problems.append(f"{where}.{key}: {v} -> at least 1")
    if r.gpus_per_node < 0:
        problems.append(f"{where}.gpus_per_node: {r.gpus_per_node} -> 0 (CPU) or more")
    if r.max_timeouts < 0:
        problems.append(f"{where}.max_timeouts: {r.max_timeouts} -> 0 (never requeue on the time limit) or more")


def _validate_method(m: MethodConfig, where: str, seen: set[str], problems: list[str]) -> None:
    label = f"{where} ({m.name})" if m.name else where
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", m.name or ""):
        problems.append(f"{label}.name: {m.name!r} -> letters, digits, '_', '.', '-' (it names a directory)")
    elif len(m.name) > MAX_NAME_LEN:
        problems.append(f"{where}.name: {len(m.name)} characters ({m.name[:20]!r}...) -> at most {MAX_NAME_LEN}: it "
                        "names a directory, and file names have a length limit")
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
            problems.append(f"{label}.lora.target_modules: empty -> all-linear (every linear layer), or names "
                            "such as [q_proj, v_proj]")
        elif isinstance(m.lora.target_modules, list) and "all-linear" in m.lora.target_modules:
            problems.append(f"{label}.lora.target_modules: {m.lora.target_modules!r} -> all-linear stands alone: "
                            "write target_modules: all-linear (not in a list), or list module names only")
    ck = m.checkpoint
    if ck.every_steps is not None and ck.every_steps < 1:
        problems.append(f"{label}.checkpoint.every_steps: {ck.every_steps} -> at least 1, or null to save by time only")
    if ck.every_min < 0:
        problems.append(f"{label}.checkpoint.every_min: {ck.every_min} -> 0 (by steps only) or more minutes")
    if ck.keep < 1:
        problems.append(f"{label}.checkpoint.keep: {ck.keep} -> at least 1 (the newest complete checkpoint)")
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
        else:
            problem = _deepspeed_problem(m.deepspeed)
            if problem:
                problems.append(f"{label}.deepspeed: {problem}")
                # Like a bad scalar, back to its default: later checks (the memory estimate reads
                # the file) run on a config that is safe to use.
                m.deepspeed = None


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
        return None, [f"top level: expected a mapping of config keys, got {type(raw).__name__} "
                      "-> write `key: value` lines (name, model, data, methods, ...) as in configs/smoke.yaml"]
    # A deep copy, not a JSON round trip: YAML also gives dates, sets and non-string keys, and
    # those must become problems below, not a TypeError here.
    raw = apply_overrides(copy.deepcopy(raw), overrides, problems)
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
    raw, problem = read_yaml(p, "config", "configs/smoke.yaml")
    if problem:
        raise ConfigError([problem], str(p))
    if raw is None:
        raise ConfigError([f"config: {str(p)!r} is empty -> write the experiment's settings (name, model, data, "
                           "methods, ...); start from a copy of configs/smoke.yaml"], str(p))
    return raw


def read_yaml(path: Path, what: str, example: str) -> tuple[tp.Any, str | None]:
    """The parsed YAML file ``path``, or None and why it cannot be read (one line, with the fix).

    ``what`` names the input in the message (``config``, ``profile``); ``example`` is a good file to copy.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{what}: {str(path)!r} cannot be read ({exc.strerror or exc}) -> check that it is a readable file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, (f"{what}: {str(path)!r} is not valid YAML: not valid UTF-8 at byte offset {exc.start} (line {line}, "
                      f"byte 0x{data[exc.start]:02x}) -> re-save the file as UTF-8")
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        detail = " ".join(str(getattr(exc, "problem", None) or exc).split())
        return None, (f"{what}: {str(path)!r} is not valid YAML{at}: {detail} -> fix the syntax there (indent with "
                      f"spaces, not tabs; close every [ and {{; quote values containing ': ' or ' #'); compare with {example}")
    except RecursionError:
        return None, f"{what}: {str(path)!r} is nested too deeply to read -> write a plain YAML file like {example}"
    except ValueError as exc:  # a value YAML parses but Python refuses, e.g. an integer of 5000 digits
        return None, f"{what}: {str(path)!r} is not valid YAML: {' '.join(str(exc).split())} -> fix that value"


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
