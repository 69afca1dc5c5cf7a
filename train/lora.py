"""LoRA: low-rank adapters (peft) on a frozen base model.

Run (normally the launcher does this)::

    python -m train.lora EXP_DIR METHOD

Reads top to bottom: config, setup, data, model + adapters, train, save.
Writes ``EXP/methods/<name>/adapter`` (peft adapter + tokenizer) and
``metrics.json``.
"""

from __future__ import annotations

import os
import sys
import typing as tp

import torch

from launch.config import ExperimentConfig, MethodConfig
from launch.expdir import ExperimentDir
from train import runtime
from train.run import TrainingRun, save_adapter


def lora_config(settings) -> peft.LoraConfig:  # noqa: F821 - peft is imported lazily
    """peft's ``LoraConfig`` from the experiment's ``LoraSettings`` (``all-linear`` passes through)."""
    from peft import LoraConfig

    targets = settings.target_modules
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Full names of the linear layers LoRA can adapt (4-bit ones included), without the output layer."""
    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:  # no bitsandbytes: no quantised layers either
        pass
    output = model.get_output_embeddings()
    return [name for name, module in model.named_modules() if isinstance(module, linear_types) and module is not output]


def check_targets(model: torch.nn.Module, settings: tp.Any, where: str) -> None:
    """Fail before training when a ``target_modules`` entry matches no linear layer of ``model``.

    peft adapts the modules a list names and ignores an entry that matches nothing (it fails only
    when nothing at all matches): a list written for Llama would silently adapt a fraction of a
    Phi-3 or no layer of a GPT-NeoX. Entries are matched as peft matches them, by the whole name or
    its last dotted parts.
    """
    targets = settings.target_modules
    if isinstance(targets, str):  # all-linear: peft finds the layers itself
        return
    names = linear_module_names(model)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        kinds = ", ".join(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
        raise ValueError(
            f"{where}.lora.target_modules: {unmatched} match(es) no linear layer of this "
            f"{type(model).__name__} -> use all-linear, or names from its linear layers: {kinds}"
        )


def lora_model(cfg: ExperimentConfig, method: MethodConfig) -> tp.Any:
    """``cfg.model`` frozen, with ``method.lora``'s trainable adapters (peft), checkpointing as the method asks."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        cfg.model.name_or_path,
        dtype=runtime.resolve_dtype(cfg.model.dtype),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if method.gradient_checkpointing:
        runtime.enable_checkpointing(base)
    check_targets(base, method.lora, f"methods.{method.name}")
    return get_peft_model(base, lora_config(method.lora))


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train LoRA adapters on ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="lora", threads=threads) as run:
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: frozen base + trainable adapters
        model = lora_model(cfg, run.method)

        # --- train
        run.train(model, examples, tokenizer)

        # --- save: the adapter only (the evaluation job loads it on the base)
        save_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
