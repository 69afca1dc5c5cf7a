"""Prompt tuning: trained virtual tokens (peft soft prompts) before every prompt, the model frozen.

Run (normally the launcher does this)::

    python -m train.prompt_tuning EXP_DIR METHOD

Reads top to bottom: config, setup, data, model + soft prompt, train, save. Trained by the same
loop as LoRA on right-padded rows (``batching: padded``, checked with the config: the virtual tokens
are prepended to every row). Writes ``EXP/methods/<name>/adapter`` (the peft adapter: the virtual
tokens' embeddings, + tokenizer) and ``metrics.json``. The evaluation job loads the adapter on the
base and scores through :class:`train.soft_prompt.SoftPrompted`.
"""

from __future__ import annotations

import os
import sys

from launch.spec.config import ExperimentConfig
from launch.store.expdir import ExperimentDir
from train import runtime
from train.run import TrainingRun, save_adapter
from train.soft_prompt import SoftPrompted, peft_config


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Train a soft prompt for ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="prompt_tuning", threads=threads) as run:
        cfg = run.cfg  # a sweep cell's view of the config: its seed and its grid point
        # --- data
        tokenizer, examples = run.load_data()

        # --- model: frozen base + the virtual tokens' embeddings (or P-tuning's encoder)
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(
            cfg.model.name_or_path,
            dtype=runtime.resolve_dtype(cfg.model.dtype),
            trust_remote_code=cfg.model.trust_remote_code,
        )
        if run.method.gradient_checkpointing:
            runtime.enable_checkpointing(base)
        model = get_peft_model(base, peft_config(run.method.prompt_tuning, cfg.model.name_or_path))

        # --- train: positions kept right (train/soft_prompt.py)
        run.train(SoftPrompted(model), examples, tokenizer)

        # --- save: the adapter only
        save_adapter(run.accelerator, model, tokenizer, run.paths.adapter_dir)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
