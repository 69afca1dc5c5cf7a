"""QLoRA: LoRA adapters on a 4-bit NF4 base (bitsandbytes, double quantisation), one GPU.

Run (normally the launcher does this)::

    python -m train.qlora EXP_DIR METHOD

Reads top to bottom: config, setup, data, 4-bit model + adapters, train, save.
Writes ``EXP/methods/<name>/adapter`` and ``metrics.json``. The base stays
quantised; the evaluation job loads the adapter on the same 4-bit base it was
trained with (merging into 4-bit weights loses accuracy).
"""

from __future__ import annotations

import os
import sys

from launch.spec.config import ExperimentConfig
from launch.store.expdir import ExperimentDir
from train import quant, runtime
from train.lora import add_adapters, apply_loftq, check_targets
from train.run import TrainingRun, save_adapter


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train LoRA adapters on a 4-bit ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="qlora", threads=threads) as run:
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: NF4 base (guarded against CPU repacking) + trainable adapters
        from peft import prepare_model_for_kbit_training

        dtype = runtime.resolve_dtype(cfg.model.dtype)
        base = quant.load_4bit(cfg.model.name_or_path, dtype, cfg.model.trust_remote_code)
        check_targets(base, run.method.lora, f"methods.{method_name}")
        # peft would enable checkpointing with empty kwargs, which makes torch fall back to the
        # reentrant implementation (with a warning): enable the non-reentrant one here instead.
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        if run.method.gradient_checkpointing:
            runtime.enable_checkpointing(base)
        model = add_adapters(base, run.method.lora)
        if run.method.lora.init == "loftq":  # the adapters from the quantisation error (the weights on disk)
            apply_loftq(model, cfg.model.name_or_path)

        # --- train
        run.train(model, examples, tokenizer)

        # --- save: the adapter only
        save_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
