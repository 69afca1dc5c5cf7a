"""Shared fixtures: a tiny local model (built once per session), configs pointing at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CYBERMETRIC = REPO.parent / "shared" / "data" / "cybermetric"

# No test may reach a hub; W&B only writes files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer trained on the bundled sample data (random weights: fast to build)."""
    from train.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0, pretrain_steps=0)


@pytest.fixture
def smoke_overrides(tiny_model: Path, tmp_path: Path) -> list[str]:
    """Overrides that make configs/smoke.yaml run inside tmp_path with the session's tiny model."""
    return [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'runs'}"]
