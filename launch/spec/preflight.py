"""Login-side checks of what a config names on disk, run by ``validate``, ``run`` and ``submit``.

First the sweep's own checks (:func:`launch.spec.sweep.check`): they need the whole loaded config, and
:mod:`launch.spec.config` cannot call :mod:`launch.spec.sweep`, which builds on it.

:func:`launch.spec.config.load_config` checks a config's schema and values only. Whether its files
are usable is checked here, before anything is created: the model directory, the data (read,
validated, split and deduplicated exactly as the experiment will, without writing), the output
directory and each DeepSpeed JSON (including its explicit values against the config). Jobs and
``cyberft resume`` never run these checks: they read the experiment's frozen ``config.yaml``,
data split and DeepSpeed copy, so moving or deleting the original files after submitting
changes nothing for them.
"""

from __future__ import annotations

import json
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch.spec import sweep
from launch.spec.config import DataSource, ExperimentConfig, MethodConfig
from launch.spec.redact import short, short_path
from launch.spec.yamlio import read_bytes
from launch.store.expdir import ExperimentDir, parse_result_ref, result_dir

PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
"""Kernel file systems: writable-looking for root, but nothing written there is kept."""

MAX_DEEPSPEED_BYTES = 1 << 20
DEEPSPEED_FIX = "one of ds_configs/zero2.json, zero3.json, zero3_offload.json"


@dataclass
class Preflight:
    """What :func:`check` found: problems with the config's files, with its data, and the data split."""

    problems: list[str] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)
    split: tp.Any = None  # launch.questions.data.Split when the data is usable


def check(cfg: ExperimentConfig, data: bool = True) -> Preflight:
    """Every login-side check of ``cfg``'s files; ``data=False`` skips reading the data."""
    from launch.questions.data import DataError, plan_aux, plan_splits

    out = Preflight()
    # The sweep's checks need the whole config (its grid names methods and their fields, and every
    # grid point gets the config's own checks), so they run here, after the config loaded.
    out.problems += sweep.check(cfg, cfg.sweep)
    if _nul_bytes(cfg, out.problems):
        return out  # no such file can exist, and the OS refuses to look such a path up
    _check_model(cfg.model.name_or_path, out.problems)
    _check_output_dir(cfg.output_dir, out.problems)
    before = len(out.problems)
    _check_source(cfg.data.train, "data.train", out.problems)
    if cfg.data.eval is not None:
        _check_source(cfg.data.eval, "data.eval", out.problems)
    for where, src in _aux_sources(cfg):
        _check_source(src, where, out.problems)
    sources_ok = len(out.problems) == before
    out.problems += _layer_problems(cfg)
    out.problems += continual_problems(cfg)
    for i, m in enumerate(cfg.methods):
        if m.deepspeed and m.adapts == "full_sft":
            problems = deepspeed_problems(m)
            out.problems += [f"methods[{i}] ({m.name}).deepspeed: {p}" for p in problems]
            if problems:
                # Like a bad scalar, back to its default: later checks (the memory estimate reads
                # the file) run on a config that is safe to use.
                m.deepspeed = None
    if data and sources_ok and cfg.data.train.path:
        try:
            out.split = plan_splits(cfg.data)
            out.split.aux = plan_aux(cfg.methods, out.split.eval)
        except DataError as exc:
            out.data_problems = list(exc.problems)
        if out.split is not None:
            out.data_problems += _few_shot_problems(cfg, len(out.split.train))
    return out


# --------------------------------------------------------------------------- method kinds


def _aux_sources(cfg: ExperimentConfig) -> list[tuple[str, DataSource]]:
    """``(field, source)`` of every auxiliary task of the ``multi_task`` methods."""
    return [
        (f"methods[{i}] ({m.name}).multi_task.tasks[{j}]", DataSource(t.path, t.format, t.split))
        for i, m in enumerate(cfg.methods)
        if m.kind == "multi_task"
        for j, t in enumerate(m.multi_task.tasks)
        if t.path
    ]


def _few_shot_problems(cfg: ExperimentConfig, n_train: int) -> list[str]:
    """``few_shot.k`` against the training split it draws from."""
    return [
        f"methods[{i}] ({m.name}).few_shot.k: {m.few_shot.k}, but the training split has {n_train} question(s) "
        f"-> at most {n_train}"
        for i, m in enumerate(cfg.methods)
        if m.kind == "few_shot" and m.few_shot.k > n_train
    ]


def _layer_problems(cfg: ExperimentConfig) -> list[str]:
    """``feature_head.layer`` against the model's layers (when its config.json is here; the job checks again)."""
    heads = [(i, m) for i, m in enumerate(cfg.methods) if m.kind == "feature_head"]
    if not heads:
        return []
    from launch.cost.memory import model_shape

    shape = model_shape(cfg.model.name_or_path)
    if shape is None:
        return []
    n = shape.num_layers
    return [
        f"methods[{i}] ({m.name}).feature_head.layer: {m.feature_head.layer}, but the model has {n} layers -> "
        f"0 (the embeddings) to {n} (the last layer), or -1 to -{n + 1} counted from the end"
        for i, m in heads
        if not -(n + 1) <= m.feature_head.layer <= n
    ]


# --------------------------------------------------------------------------- continual re-training

INIT_FROM_FIX = "EXP_DIR:method (an experiment directory and one of its methods), or a saved adapter or model directory"
SAVED_KINDS = {"lora": "a LoRA adapter", "full_sft": "a full model"}
"""What a result of each weight-training kind (``MethodConfig.adapts``) saves, as the problems name it."""


def continual_problems(cfg: ExperimentConfig) -> list[str]:
    """Every method's ``init_from`` against what it names: the result exists, its training completed, it was
    trained on ``cfg.model``, and its kind fits the method's (LoRA continues an adapter, full SFT a model).

    The kind itself (only ``lora`` and ``full_sft`` continue) is the config's own check.
    """
    from launch.spec.config import CONTINUABLE_KINDS

    problems: list[str] = []
    for i, m in enumerate(cfg.methods):
        if m.init_from and m.init_from.strip() and m.kind in CONTINUABLE_KINDS:
            where = f"methods[{i}] ({m.name}).init_from: {short_path(m.init_from)}"
            ref = parse_result_ref(m.init_from)
            found = _earlier_method(cfg, m, ref) if ref else _saved_result(cfg, m, Path(m.init_from).expanduser())
            problems += [f"{where} {p}" for p in found]
    return problems


def _same_model(a: str, b: str) -> bool:
    """Whether two ``model.name_or_path`` values name the same model: the same directory, or the same hub name."""
    if looks_local(a) or looks_local(b):
        return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
    return a == b


def _kind_problem(m: MethodConfig, saved: str, what: str) -> list[str]:
    """Why a result of weight-training kind ``saved`` (``what``: its kind as named) cannot start ``m``."""
    if saved == m.adapts:
        return []
    if saved in SAVED_KINDS:
        other = "lora" if saved == "lora" else "full_sft"
        return [
            f"is {SAVED_KINDS[saved]} ({what}), but kind {m.kind} continues {SAVED_KINDS[m.adapts]} -> use kind: "
            f"{other} to continue it, or give a {m.kind} result"
        ]
    return [
        f"is a {what} result, which neither a lora nor a full_sft method can continue -> give a lora result (for "
        "kind: lora) or a full_sft result (for kind: full_sft)"
    ]


def _earlier_method(cfg: ExperimentConfig, m: MethodConfig, ref: tuple[ExperimentDir, str]) -> list[str]:
    """``EXP_DIR:method``: the experiment, its method's completed training, its model and kind, its eval split."""
    from launch.spec.config import ConfigError

    exp, address = ref
    if not exp.config_file.is_file():
        return [
            f"names no experiment directory ({short_path(exp.root)} holds no config.yaml) -> {INIT_FROM_FIX}, "
            "e.g. runs/round1-<time>:lora"
        ]
    try:
        earlier_cfg, cell = sweep.locate(exp.load_config(), address)
    except (ConfigError, KeyError) as exc:
        why = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc.args[0])
        return [f"cannot be used ({short(why, 300)}) -> name a method of that experiment, e.g. EXP_DIR:lora"]
    earlier = cell.config
    problems = []
    metrics = exp.method(address).read_metrics()
    if not metrics.completed:
        problems.append(
            f"did not complete (its training is {metrics.status}) -> continue from a completed method, or finish "
            f"it first (cyberft status / cyberft resume {short_path(exp.root)})"
        )
    elif not result_dir(m.init_from, earlier.adapts).is_dir():
        problems.append(
            f"completed, but its saved result {short_path(result_dir(m.init_from, earlier.adapts))} is missing "
            "-> give a method whose result is still on disk"
        )
    if not _same_model(earlier_cfg.model.name_or_path, cfg.model.name_or_path):
        problems.append(
            f"was trained on model {short_path(earlier_cfg.model.name_or_path)}, not on this config's "
            f"{short_path(cfg.model.name_or_path)} -> set model.name_or_path to the earlier experiment's, or "
            "continue a result of this model"
        )
    problems += _kind_problem(m, earlier.adapts, earlier.variant)
    if earlier.adapts == "lora" == m.adapts:
        mine, theirs = _lora_shape(m.lora), _lora_shape(earlier.lora)
        if mine != theirs:
            problems.append(
                f"is an adapter with lora {theirs}, but this method's lora is {mine} -> set lora to the earlier "
                "method's (the adapter continues as it was saved)"
            )
    if not exp.data.eval_file.is_file():
        problems.append(
            f"has no eval split on disk ({short_path(exp.data.eval_file)}), which the evaluation scores as the "
            "old questions -> continue from an experiment whose data is still there"
        )
    return problems


def _lora_shape(lora: tp.Any) -> dict:
    """What a saved LoRA adapter fixes: rank, alpha, targets and the DoRA / rsLoRA options."""
    targets = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
    return {
        "r": lora.r,
        "alpha": lora.alpha,
        "target_modules": targets,
        "use_dora": lora.use_dora,
        "use_rslora": lora.use_rslora,
    }


def _saved_result(cfg: ExperimentConfig, m: MethodConfig, path: Path) -> list[str]:
    """A path: a LoRA adapter directory (``adapter_config.json``) or a full model (``config.json``)."""
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        return [f"{what} -> {INIT_FROM_FIX}"]
    adapter, model = path / "adapter_config.json", path / "config.json"
    if adapter.is_file():
        raw = _json_object(adapter)
        if raw.get("peft_type") != "LORA":
            return _kind_problem(m, "other", f"{raw.get('peft_type') or 'unknown'} adapter")
        problems = _kind_problem(m, "lora", "lora")
        base = str(raw.get("base_model_name_or_path") or "")
        if base and not _same_model(base, cfg.model.name_or_path):
            problems.append(
                f"is an adapter for model {short_path(base)}, not this config's {short_path(cfg.model.name_or_path)} "
                "-> set model.name_or_path to its base, or continue an adapter of this model"
            )
        if not any(path.glob("adapter_model.*")):
            problems.append(
                "has no adapter weights (adapter_model.*): its training did not complete -> give a saved adapter"
            )
        shape = {"r": raw.get("r"), "alpha": raw.get("lora_alpha")}
        mine = {"r": m.lora.r, "alpha": m.lora.alpha}
        if m.adapts == "lora" and shape != mine:
            problems.append(
                f"is an adapter with {shape}, but this method's lora is {mine} -> set lora.r and "
                "lora.alpha to the adapter's"
            )
        return problems
    if model.is_file():
        problems = _kind_problem(m, "full_sft", "full model")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            problems.append("has no weights (*.safetensors): its training did not complete -> give a saved model")
        problems += _shape_problems(cfg, model)
        return problems
    return [f"holds neither adapter_config.json (a LoRA adapter) nor config.json (a model) -> {INIT_FROM_FIX}"]


SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def _shape_problems(cfg: ExperimentConfig, saved_config: Path) -> list[str]:
    """A full model given by path records no base model: the same base is checked as the same architecture
    and shape as ``cfg.model`` (when its config.json is here)."""
    base_config = Path(cfg.model.name_or_path).expanduser() / "config.json"
    if not base_config.is_file():
        return []
    mine, theirs = _json_object(base_config), _json_object(saved_config)
    differ = {k: (theirs.get(k), mine.get(k)) for k in SHAPE_KEYS if theirs.get(k) != mine.get(k)}
    if not differ:
        return []
    shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in differ.items())
    return [
        f"is not a fine-tune of this config's model ({shown}) -> give a model trained from "
        f"{short_path(cfg.model.name_or_path)}, or set model.name_or_path to its base"
    ]


def _json_object(path: Path) -> dict:
    try:
        raw = json.loads(read_bytes(path, MAX_DEEPSPEED_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return raw if isinstance(raw, dict) else {}


# --------------------------------------------------------------------------- model, data sources


def _nul_bytes(cfg: ExperimentConfig, problems: list[str]) -> bool:
    """Report every path holding a NUL byte (YAML can write one, no file name can hold it)."""
    paths = {
        "model.name_or_path": cfg.model.name_or_path,
        "output_dir": cfg.output_dir,
        "data.train.path": cfg.data.train.path,
        "data.eval.path": cfg.data.eval.path if cfg.data.eval else "",
    }
    paths.update({f"methods[{i}] ({m.name}).deepspeed": m.deepspeed or "" for i, m in enumerate(cfg.methods)})
    paths.update({f"{where}.path": src.path for where, src in _aux_sources(cfg)})
    paths.update({f"methods[{i}] ({m.name}).init_from": m.init_from or "" for i, m in enumerate(cfg.methods)})
    bad = [where for where, path in paths.items() if "\x00" in path]
    problems += [f"{where}: holds a NUL byte, which no file name can -> remove it" for where in bad]
    return bool(bad)


def looks_local(path: str) -> bool:
    """A hub name is ``org/name`` or ``name``; anything else (or anything that exists) is a path."""
    if os.path.exists(path):
        return True
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or path.endswith((".json", ".jsonl"))


def _check_model(name: str, problems: list[str]) -> None:
    if not name or not looks_local(name):
        return
    mp = Path(name).expanduser()
    if not mp.exists():
        problems.append(
            f"model.name_or_path: {short_path(name)} does not exist -> check the path (relative to "
            f"{os.getcwd()}), give a hub name, or build a tiny local model with `cyberft tiny-model DIR`"
        )
    elif not (mp / "config.json").is_file():
        problems.append(
            f"model.name_or_path: {short_path(name)} has no config.json -> a directory written by "
            "save_pretrained (build a tiny one with `cyberft tiny-model DIR`)"
        )


def _check_source(src: DataSource, where: str, problems: list[str]) -> None:
    if not src.path:
        return  # reported by the config's value checks
    p = Path(src.path).expanduser()
    if looks_local(src.path) and not p.exists():
        problems.append(
            f"{where}.path: {short_path(src.path)} does not exist -> check the path (relative to {os.getcwd()})"
        )
    elif p.is_dir() and src.format in ("cybermetric", "jsonl"):
        problems.append(
            f"{where}.path: {short_path(src.path)} is a directory but format is {src.format!r} -> give a "
            "file or set format: hf"
        )
    elif (
        p.exists()
        and not p.is_dir()
        and (src.format == "hf" or (src.format == "auto" and p.suffix.lower() not in (".json", ".jsonl")))
    ):
        # hf reads a save_to_disk directory or a hub name, never a file
        problems.append(
            f"{where}.path: {short_path(src.path)} is a file, read as a Hugging Face dataset (format "
            f"{src.format!r}) -> name it .json (CyberMetric) or .jsonl, or set format: cybermetric or "
            "jsonl"
        )


# --------------------------------------------------------------------------- output directory


def _pseudo_fs(p: Path) -> str | None:
    for path in (str(p), os.path.realpath(p)):
        for root in PSEUDO_FILESYSTEMS:
            if path == root or path.startswith(root + "/"):
                return root
    return None


def _check_output_dir(output_dir: str, problems: list[str]) -> None:
    """``output_dir`` must be a writable directory, or creatable (with its parents) under one.

    Checked before anything is written, so ``run`` and ``submit`` refuse instead of failing
    half-way. Writability uses :func:`os.access`: root passes on read-only mode bits, as it
    would when writing, but not under a kernel file system (``/proc``, ``/sys``, ``/dev``).
    """
    where = "output_dir"
    if not output_dir:
        return  # reported by the config's value checks
    shown = short_path(output_dir)
    p = Path(output_dir).expanduser().absolute()
    root = _pseudo_fs(p)
    if root:
        problems.append(
            f"{where}: {shown} is under {root}, a kernel file system that keeps nothing -> give a "
            "directory on real storage, e.g. runs"
        )
        return
    try:
        if p.exists():
            if not p.is_dir():
                problems.append(
                    f"{where}: {shown} is a file, not a directory -> give a directory (it is created if "
                    "missing), e.g. runs"
                )
            elif not os.access(p, os.W_OK | os.X_OK):
                problems.append(
                    f"{where}: {shown} is not writable by this user -> give a directory you can write to, "
                    f"or fix its permissions (chmod u+w {short_path(p)})"
                )
            return
        existing = p.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problems.append(
                f"{where}: {shown} cannot be created: {short_path(existing)} is a file, not a directory "
                "-> give a path under a directory"
            )
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(
                f"{where}: {shown} cannot be created: {short_path(existing)} is not writable by this "
                "user -> give a directory you can write to"
            )
    except OSError as exc:  # e.g. a parent that may not be searched, or a name too long
        problems.append(
            f"{where}: {shown} cannot be checked ({exc.strerror or exc}) -> give a directory you can write to"
        )


# --------------------------------------------------------------------------- DeepSpeed


def read_deepspeed(path: str) -> tuple[dict | None, str | None]:
    """The DeepSpeed JSON at ``path`` as a mapping, or None and why not (what follows the field name)."""
    p = Path(path).expanduser()
    shown = short_path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist" if not p.exists() else "is not a regular file"
        return None, f"{shown} {what} -> {DEEPSPEED_FIX}"
    try:
        raw = json.loads(read_bytes(p, MAX_DEEPSPEED_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"{shown} is not a readable JSON file ({short(str(exc), 120)}) -> fix it, or use {DEEPSPEED_FIX}"
    if not isinstance(raw, dict):
        return None, f"{shown} holds {type(raw).__name__}, not a JSON object -> a DeepSpeed config like {DEEPSPEED_FIX}"
    return raw, None


def deepspeed_problems(m: MethodConfig) -> list[str]:
    """Why ``m``'s DeepSpeed JSON cannot be used: unreadable, a bad ZeRO section, or explicit values
    that contradict the experiment config (see ``ds_configs/README.md``)."""
    raw, problem = read_deepspeed(m.deepspeed or "")
    if raw is None:
        return [problem or ""]
    shown = short_path(m.deepspeed)
    zero = raw.get("zero_optimization")
    if zero is not None:
        if not isinstance(zero, dict):
            return [f'{shown}: zero_optimization is {short(zero)}, not an object -> e.g. {{"stage": 3}}']
        stage = zero.get("stage", 0)
        if stage not in ("0", "1", "2", "3") and (
            isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage <= 3
        ):
            return [f"{shown}: zero_optimization.stage is {short(stage)} -> 0, 1, 2 or 3"]
        for key in ("offload_optimizer", "offload_param"):
            if zero.get(key) is not None and not isinstance(zero[key], dict):
                return [
                    f'{shown}: zero_optimization.{key} is {short(zero[key])}, not an object -> e.g. {{"device": "cpu"}}'
                ]
    return [f"{shown}: {p}" for p in _value_conflicts(raw, m)]


def _value_conflicts(raw: dict, m: MethodConfig) -> list[str]:
    """Explicit DeepSpeed values that disagree with the config: each must be ``"auto"`` or equal."""
    world = m.resources.nodes * max(1, m.resources.gpus_per_node)
    wanted = {
        "train_micro_batch_size_per_gpu": (m.micro_batch_size, "micro_batch_size"),
        "gradient_accumulation_steps": (m.grad_accum_steps, "grad_accum_steps"),
        "train_batch_size": (
            m.micro_batch_size * m.grad_accum_steps * world,
            "micro_batch_size x grad_accum_steps x nodes x gpus_per_node",
        ),
        "gradient_clipping": (m.max_grad_norm, "max_grad_norm"),
    }
    problems = []
    for key, (value, source) in wanted.items():
        given = raw.get(key, "auto")
        if given != "auto" and (isinstance(given, bool) or not isinstance(given, (int, float)) or given != value):
            problems.append(
                f'{key} is {short(given)} but the config\'s {source} gives {value} -> write "auto" (the '
                "value then comes from the config), or the config's value"
            )
    for key in ("optimizer", "scheduler"):
        if key in raw:
            problems.append(
                f"has an {key!r} section -> remove it: training builds AdamW and its warm-up/decay "
                "schedule from learning_rate, weight_decay and warmup_ratio"
            )
    problems += _precision_conflicts(raw, m.precision)
    return problems


def _precision_conflicts(raw: dict, precision: str) -> list[str]:
    problems = []
    for key in ("bf16", "fp16"):
        section = raw.get(key)
        enabled = section.get("enabled", "auto") if isinstance(section, dict) else section
        if section is None or enabled == "auto":
            continue
        if not isinstance(enabled, bool):
            problems.append(f'{key}.enabled is {short(enabled)} -> true, false or "auto"')
        elif enabled != (precision == key) or precision == "auto":
            said = "auto (decided on the node)" if precision == "auto" else repr(precision)
            problems.append(
                f"{key}.enabled is {str(enabled).lower()} but the config's precision is {said} -> write "
                f'"auto" (it follows precision), or set precision: {key if enabled else "fp32"}'
            )
    return problems
