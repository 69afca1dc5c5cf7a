"""The feature head: the model frozen, a linear 4-way head over A-D on one layer's hidden state.

Run (normally the launcher does this)::

    python -m train.feature_head EXP_DIR METHOD

Reads top to bottom: config, setup, data, features (extracted once, cached), head, save. The
training questions' features (:mod:`train.features`) are written to
``EXP/methods/<name>/features/train.safetensors``; a restarted job reads them back instead of running
the model again. The head is then fitted in seconds: AdamW on the cached features, ``micro_batch_size``
a step, for ``epochs`` or ``max_steps``, with the method's learning rate, warm-up and weight decay.
Writes ``EXP/methods/<name>/head.safetensors`` and ``metrics.json`` (the tokens are those the model
read to extract the features; the trainable parameters are the head's).
"""

from __future__ import annotations

import math
import os
import sys
import typing as tp
from pathlib import Path

import torch

from launch.questions import prompting
from launch.spec.config import LETTERS, ExperimentConfig, MethodConfig
from launch.store.expdir import ExperimentDir, MethodDir
from launch.store.fsio import atomic_write_bytes
from train import loop, runtime
from train.features import LetterHead, extract, hidden_index, num_layers
from train.run import TrainingRun


def cached_features(
    path: Path, compute: tp.Callable[[], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` from ``path`` when it holds them, else computed and saved there (atomically)."""
    from safetensors.torch import load_file, save

    if path.is_file():
        try:
            saved = load_file(str(path))
            return saved["features"], saved["labels"]
        except (OSError, KeyError, RuntimeError):  # unreadable: computed again
            pass
    features, labels = compute()
    atomic_write_bytes(path, save({"features": features.contiguous(), "labels": labels.contiguous()}))
    return features, labels


def fit_head(
    head: LetterHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    method: MethodConfig,
    seed: int,
    log: loop.Log,
    paths: MethodDir | None = None,
) -> loop.TrainResult:
    """AdamW with linear warm-up and decay over shuffled mini-batches of the features; the loss of each step.

    ``paths``: where ``progress.json`` goes (the launcher shows it), at the rate the training loop writes it.
    """
    from transformers import get_linear_schedule_with_warmup

    n_steps = loop.total_steps(method, len(features), 1)
    params = list(head.linear.parameters())
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate, weight_decay=method.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(method.warmup_ratio * n_steps), n_steps)
    order = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(features) / method.micro_batch_size)
    result = loop.TrainResult()
    progress = loop.ProgressFile(paths, n_steps)
    batches: list[torch.Tensor] = []
    for step in range(1, n_steps + 1):
        if not batches:  # a new epoch: a new order
            batches = list(torch.randperm(len(features), generator=order).split(method.micro_batch_size))[:per_epoch]
        idx = batches.pop(0)
        loss = torch.nn.functional.cross_entropy(head(features[idx]), labels[idx])
        loss.backward()
        if method.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, method.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(float(loss))
        log({"train/loss": result.losses[-1], "train/lr": scheduler.get_last_lr()[0]}, step)
        progress.update(step, result.losses[-1], force=step == n_steps)
    result.steps = n_steps
    result.final_loss = sum(result.losses[-10:]) / max(1, len(result.losses[-10:]))
    return result


def main(cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, threads: int | None = None) -> dict:
    """Fit a linear head on a frozen layer of ``cfg.model`` with method ``method_name``; return the metrics."""
    # --- config & setup: seeds, accelerator, W&B run
    with TrainingRun(cfg, method_name, exp_dir, kind="feature_head", threads=threads) as run:
        cfg = run.cfg  # a sweep cell's view of the config: its seed and its grid point
        settings = run.method.feature_head

        # --- data
        from train import batches

        tokenizer = batches.load_tokenizer(cfg.model.name_or_path)
        questions = batches.load_split(cfg, run.exp, "train", run.accelerator)

        # --- model: frozen; the layer checked against it
        from transformers import AutoModelForCausalLM

        run.baseline()  # libraries and data in, the model not yet: what its memory estimate is checked above

        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.name_or_path,
            dtype=runtime.resolve_dtype(cfg.model.dtype),
            trust_remote_code=cfg.model.trust_remote_code,
        ).to(run.accelerator.device)
        model.requires_grad_(False)
        index = hidden_index(settings.layer, num_layers(model), f"methods.{method_name}")
        run.mark("load")

        # --- features: extracted once, cached in the method's directory
        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            feats = extract(model, tokenizer, questions, index, settings.extract_batch_size, cfg.model.max_seq_len)
            return feats, torch.tensor([LETTERS.index(q.solution) for q in questions])

        features, labels = cached_features(run.paths.features_file("train"), compute)
        model = None  # the head alone trains

        # --- head
        torch.manual_seed(cfg.seed)
        head = LetterHead.for_features(features, index, settings)
        result = fit_head(head, features, labels, run.method, cfg.seed, run.tracker.log, run.paths)
        codec = prompting.AnswerCodec(tokenizer)
        result.tokens = sum(
            len(prompting.scoring_context(tokenizer, codec, q, cfg.model.max_seq_len)) for q in questions
        )
        run.record(result, head.linear)
        result.train_s = run.phases["train"]  # extraction and fitting: what tokens/s divides by

        # --- save
        head.save(run.paths.head_file)
    return run.metrics.to_dict()


if __name__ == "__main__":
    main(ExperimentDir(sys.argv[1]).load_config(), sys.argv[2], sys.argv[1])
