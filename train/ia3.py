"""(IA)^3: learned vectors rescaling some layers' activations (peft ``IA3Config``) on a frozen base model.

Run (normally the launcher does this)::

    python -m train.ia3 EXP_DIR METHOD

Reads top to bottom: config, setup, data, model + vectors, train, save. Trained by LoRA's loop, on as
many processes as LoRA; writes ``EXP/methods/<name>/adapter`` (peft adapter + tokenizer), which the
evaluation merges into the base like a LoRA adapter, and ``metrics.json``.
"""

from __future__ import annotations

import os
import sys
import typing as tp

import torch

from launch.spec.config import ExperimentConfig, IA3Settings, MethodConfig
from launch.store.expdir import ExperimentDir
from train.lora import base_model, linear_module_names
from train.run import TrainingRun, save_adapter


def ia3_config(settings: IA3Settings, model: torch.nn.Module, where: str) -> tp.Any:
    """peft's ``IA3Config`` for ``model``: ``auto`` is peft's choice for its architecture (refused with the
    fix when peft has none); listed names must each match a linear layer (peft ignores those that do not)."""
    from peft import IA3Config
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    names = linear_module_names(model)
    layers = ", ".join(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
    if settings.target_modules == "auto":
        model_type = getattr(model.config, "model_type", None)
        if model_type not in TARGETS or model_type not in FEEDFORWARD:
            raise ValueError(
                f"{where}.ia3.target_modules: auto, but peft has no (IA)^3 modules for model_type {model_type!r} "
                f"-> list target_modules and feedforward_modules from its linear layers: {layers}"
            )
        targets, feedforward = list(TARGETS[model_type]), list(FEEDFORWARD[model_type])
    else:
        targets, feedforward = list(settings.target_modules), list(settings.feedforward_modules)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ValueError(
            f"{where}.ia3.target_modules: {unmatched} match(es) no linear layer of this {type(model).__name__} "
            f"-> use auto, or names from its linear layers: {layers}"
        )
    return IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")


def ia3_model(cfg: ExperimentConfig, method: MethodConfig) -> tp.Any:
    """``cfg.model`` frozen, with ``method.ia3``'s trainable vectors (peft), checkpointing as the method asks."""
    from peft import get_peft_model

    base = base_model(cfg, method)
    return get_peft_model(base, ia3_config(method.ia3, base, f"methods.{method.name}"))


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train (IA)^3 vectors on ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="ia3", threads=threads) as run:
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: frozen base + trainable vectors
        model = ia3_model(cfg, run.method)

        # --- train
        run.train(model, examples, tokenizer)

        # --- save: the adapter only (the evaluation job merges it into the base)
        save_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
