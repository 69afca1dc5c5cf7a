"""Full supervised fine-tuning: every weight trains, through accelerate.

Run (normally the launcher does this)::

    python -m train.full_sft EXP_DIR METHOD      # EXP_DIR holds config.yaml

Reads top to bottom: config, setup, data, model, train, save. Writes
``EXP/methods/<name>/model`` (safetensors + tokenizer, loadable with
``from_pretrained``) and ``metrics.json``.
"""

from __future__ import annotations

import os
import sys
import typing as tp

from launch.spec.config import ExperimentConfig, MethodConfig
from launch.store.expdir import ExperimentDir, result_dir
from train import runtime
from train.run import TrainingRun, save_consolidated


def full_model(cfg: ExperimentConfig, method: MethodConfig) -> tp.Any:
    """``cfg.model`` (or the earlier model ``method.init_from`` names) with every weight trainable,
    checkpointing as the method asks.

    Under ZeRO-3 each rank loads only its shard (zero.Init), because the Accelerator made by
    TrainingRun already registered the DeepSpeed config. Without DeepSpeed the weights are fp32
    masters trained under autocast (see ``runtime.weights_dtype``).
    """
    from transformers import AutoModelForCausalLM

    # init_from: the earlier full model (continual re-training; launch.spec.preflight checked it is one of this base).
    start = result_dir(method.init_from, "full_sft") if method.init_from else cfg.model.name_or_path
    model = AutoModelForCausalLM.from_pretrained(
        start,
        dtype=runtime.weights_dtype(cfg.model.dtype, method),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if method.gradient_checkpointing:
        runtime.enable_checkpointing(model)
    return model


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Fine-tune every weight of ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="full_sft", threads=threads) as run:
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: every weight trainable (ZeRO-3 shards it as it loads)
        model = full_model(cfg, run.method)

        # --- train
        result = run.train(model, examples, tokenizer)

        # --- save: one consolidated checkpoint (gathered from every rank under ZeRO-3)
        dtype = runtime.resolve_dtype(cfg.model.dtype)
        save_consolidated(run.accelerator, result.model, tokenizer, run.paths.model_dir, dtype=dtype)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
