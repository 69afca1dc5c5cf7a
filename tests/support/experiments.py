"""Experiment directories for tests: made as ``cyberft run`` makes them, without running a job."""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

from launch import REPO_ROOT
from launch.questions.data import prepare_splits
from launch.spec import yamlio
from launch.spec.config import ExperimentConfig, load_config
from launch.store import experiment
from launch.store.expdir import ExperimentDir

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
SMOKE_METHODS = tuple(m["name"] for m in yamlio.parse(SMOKE.read_text(encoding="utf-8"))["methods"])
"""The smoke study's methods: one of each kind but ``ia3`` (configs/peft-variants.yaml shows it with LoRA's
variants), each named as its kind."""
CLASSIC = ("full_sft", "lora", "qlora")
"""The smoke study's first three methods: what tests written around full SFT, LoRA and QLoRA submit."""


def classic_smoke(folder: Path) -> Path:
    """``configs/smoke.yaml`` with only its :data:`CLASSIC` methods, written into ``folder`` (JSON is YAML);
    its paths stay relative to the checkout, where the tests run."""
    raw = yamlio.parse(SMOKE.read_text(encoding="utf-8"))
    raw["methods"] = [m for m in raw["methods"] if m["kind"] in CLASSIC]
    path = Path(folder) / "smoke-classic.yaml"
    path.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return path


def new_experiment(overrides: tp.Sequence[str], config: Path = SMOKE) -> tuple[ExperimentConfig, ExperimentDir]:
    """``config`` with ``overrides``, resolved; a new experiment directory holding it and its data split."""
    cfg = experiment.resolve_paths(load_config(config, list(overrides)))
    exp = experiment.create(cfg, str(config), list(overrides))
    prepare_splits(cfg.data, exp.data.root, progress=False)
    return cfg, exp
