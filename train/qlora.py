"""QLoRA: LoRA adapters on a 4-bit NF4 base (bitsandbytes, double quantisation), one GPU.

Run (normally the launcher does this)::

    python -m train.qlora EXP_DIR METHOD

Reads top to bottom: config, setup, data, 4-bit model + adapters, train, save.
Writes ``EXP/methods/<name>/adapter`` and ``metrics.json``. The base stays
quantised; the evaluation job loads the adapter on the same 4-bit base it was
trained with (merging into 4-bit weights loses accuracy).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.config import ExperimentConfig
from train import common, quant
from train.lora import check_targets, lora_config


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | Path, threads: int | None = None) -> dict:
    """Train LoRA adapters on a 4-bit ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    job = common.Job(cfg, method_name, exp_dir, kind="qlora", threads=threads)
    try:
        # --- data
        tokenizer, examples = job.load_data()

        # --- model: NF4 base (guarded against CPU repacking) + trainable adapters
        from peft import get_peft_model, prepare_model_for_kbit_training

        base = quant.load_4bit(
            cfg.model.name_or_path, common.resolve_dtype(cfg.model.dtype), cfg.model.trust_remote_code
        )
        check_targets(base, job.method.lora, f"methods.{method_name}")
        # peft would enable checkpointing with empty kwargs, which makes torch fall back to the
        # reentrant implementation (with a warning): enable the non-reentrant one here instead.
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        if job.method.gradient_checkpointing:
            common.enable_checkpointing(base)
        model = get_peft_model(base, lora_config(job.method.lora))

        # --- train
        result = job.train(model, examples, tokenizer)

        # --- save: the adapter only
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
