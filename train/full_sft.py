"""Full supervised fine-tuning: every weight trains, through accelerate.

Run (normally the launcher does this)::

    python -m train.full_sft EXP_DIR METHOD      # EXP_DIR holds config.yaml

Reads top to bottom: config, setup, data, model, train, save. Writes
``EXP/methods/<name>/model`` (safetensors + tokenizer, loadable with
``from_pretrained``) and ``metrics.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.config import ExperimentConfig
from train import common


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | Path, threads: int | None = None) -> dict:
    """Fine-tune every weight of ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    job = common.Job(cfg, method_name, exp_dir, kind="full_sft", threads=threads)
    try:
        # --- data
        tokenizer, examples = job.load_data()

        # --- model: under ZeRO-3 each rank loads only its shard (zero.Init), because
        # the Accelerator made in Job already registered the DeepSpeed config. Without
        # DeepSpeed the weights are fp32 masters trained under autocast (see weights_dtype).
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.name_or_path,
            dtype=common.weights_dtype(cfg.model.dtype, job.method),
            trust_remote_code=cfg.model.trust_remote_code,
        )
        if job.method.gradient_checkpointing:
            common.enable_checkpointing(model)

        # --- train
        result = job.train(model, examples, tokenizer)

        # --- save: one consolidated checkpoint (gathered from every rank under ZeRO-3)
        common.save_consolidated(
            job.accelerator, result.model, tokenizer, job.out_dir / "model", dtype=common.resolve_dtype(cfg.model.dtype)
        )
        return job.finish(result)
    except BaseException as exc:
        job.fail(exc)
        raise


if __name__ == "__main__":
    from launch.config import load_config

    exp = Path(sys.argv[1])
    main(load_config(exp / "config.yaml"), sys.argv[2], exp)
