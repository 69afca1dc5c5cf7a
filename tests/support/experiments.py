"""Experiment directories for tests: made as ``cyberft run`` makes them, without running a job."""

from __future__ import annotations

import typing as tp
from pathlib import Path

from launch import REPO_ROOT, experiment
from launch.config import ExperimentConfig, load_config
from launch.data import prepare_splits
from launch.expdir import ExperimentDir

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"


def new_experiment(overrides: tp.Sequence[str], config: Path = SMOKE) -> tuple[ExperimentConfig, ExperimentDir]:
    """``config`` with ``overrides``, resolved; a new experiment directory holding it and its data split."""
    cfg = experiment.resolve_paths(load_config(config, list(overrides)))
    exp = experiment.create(cfg, str(config), list(overrides))
    prepare_splits(cfg.data, exp.data.root, progress=False)
    return cfg, exp
