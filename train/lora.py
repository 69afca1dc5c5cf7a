"""LoRA: low-rank adapters (peft) on a frozen base model.

Run (normally the launcher does this)::

    python -m train.lora EXP_DIR METHOD

Reads top to bottom: config, setup, data, model + adapters, train, save.
Writes ``EXP/methods/<name>/adapter`` (peft adapter + tokenizer) and
``metrics.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.config import ExperimentConfig
from train import common


def lora_config(settings) -> "peft.LoraConfig":  # noqa: F821 - peft is imported lazily
    """peft's ``LoraConfig`` from the experiment's ``LoraSettings``."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
    )


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | Path, threads: int | None = None) -> dict:
    """Train LoRA adapters on ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    job = common.Job(cfg, method_name, exp_dir, kind="lora", threads=threads)
    try:
        # --- data
        tokenizer, examples = job.load_data()

        # --- model: frozen base + trainable adapters
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(
            cfg.model.name_or_path, dtype=common.resolve_dtype(cfg.model.dtype),
            trust_remote_code=cfg.model.trust_remote_code,
        )
        if job.method.gradient_checkpointing:
            common.enable_checkpointing(base)
        model = get_peft_model(base, lora_config(job.method.lora))

        # --- train
        result = job.train(model, examples, tokenizer)

        # --- save: the adapter only (the evaluation job loads it on the base)
        acc = job.accelerator
        if acc.is_main_process:
            common.save_model_atomic(acc.unwrap_model(model), tokenizer, job.out_dir / "adapter")
        acc.wait_for_everyone()
        return job.finish(result)
    except BaseException as exc:
        job.fail(exc)
        raise


if __name__ == "__main__":
    from launch.config import load_config

    exp = Path(sys.argv[1])
    main(load_config(exp / "config.yaml"), sys.argv[2], exp)
