"""Training runs compared after the fact: their weights, and the steps their W&B runs hold."""

from __future__ import annotations

import os

import torch

from launch.store.expdir import ExperimentDir
from support.wandb_offline import find_runs, read_run


def weights(exp: str | os.PathLike, method: str) -> dict[str, torch.Tensor]:
    """The saved tensors of ``method``: its full model, or its adapter."""
    from safetensors.torch import load_file

    trained = ExperimentDir(exp).method(method)
    if trained.model_dir.is_dir():
        return load_file(str(trained.model_dir / "model.safetensors"))
    return load_file(str(trained.adapter_dir / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def effective_steps(exp: str | os.PathLike, method: str = "") -> tuple[list[int], list[str]]:
    """The steps the resumed W&B run ends up with, and the run ids of the attempts.

    Attempts are replayed in time order the way W&B applies them to one resumed run (online,
    or at ``wandb sync``): a record whose step is not above the run's last step is dropped.
    """
    steps: list[int] = []
    ids = []
    for path in sorted(find_runs(ExperimentDir(exp).wandb_dir), key=lambda p: str(p)):  # offline-run-<time>-<id>
        if method and not str(path).rstrip("/").endswith(f"-{method}"):
            continue  # another job's run (the evaluation)
        run = read_run(path)
        ids.append(run.run_id)
        for h in run.history:
            if "train/loss" in h and (not steps or h["_step"] > steps[-1]):
                steps.append(h["_step"])
    return steps, ids
