"""The job objects submitit runs, the same locally and on Slurm.

They are plain, picklable module-level callables holding only the experiment
directory and a name: the compute node reads everything else (the resolved
config, the prepared data) from shared storage. No secret is ever stored here:
tokens are read from the environment on the compute node.
"""

from __future__ import annotations

import importlib
import os
import typing as tp
from pathlib import Path

ENTRYPOINTS = {"full_sft": "train.full_sft", "lora": "train.lora", "qlora": "train.qlora"}


def _compute_env(threads: int | None) -> None:
    """Environment for the compute side, set before torch is imported."""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidiactl").exists():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # silences DeepSpeed's accelerator probe on CPU


class TrainJob:
    """Train one method of an experiment.

    Parameters
    ----------
    exp_dir:
        The experiment directory (holds ``config.yaml``).
    method:
        The method's name in the config.
    threads:
        CPU threads for torch (None: torch's default).
    """

    def __init__(self, exp_dir: str | os.PathLike, method: str, threads: int | None = None) -> None:
        self.exp_dir = str(exp_dir)
        self.method = method
        self.threads = threads

    def __call__(self) -> dict:
        _compute_env(self.threads)
        from launch.experiment import load

        cfg = load(self.exp_dir)
        module = importlib.import_module(ENTRYPOINTS[cfg.method(self.method).kind])
        return module.main(cfg, self.method, self.exp_dir, threads=self.threads)

    def __repr__(self) -> str:
        return f"TrainJob({self.exp_dir!r}, {self.method!r})"


class EvalJob:
    """Score the base model and every trained method, then write the report.

    Parameters
    ----------
    exp_dir:
        The experiment directory.
    threads:
        CPU threads for torch (None: torch's default).
    """

    def __init__(self, exp_dir: str | os.PathLike, threads: int | None = None) -> None:
        self.exp_dir = str(exp_dir)
        self.threads = threads

    def __call__(self) -> list[dict]:
        _compute_env(self.threads)
        from launch.experiment import load
        from train import evaluate

        return evaluate.main(load(self.exp_dir), self.exp_dir, threads=self.threads)

    def __repr__(self) -> str:
        return f"EvalJob({self.exp_dir!r})"
