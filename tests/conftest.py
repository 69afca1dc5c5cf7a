"""Shared fixtures: a tiny local model (built once per session), configs pointing at it."""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import pytest

from launch.site.gpus import cuda_hidden

REPO = Path(__file__).resolve().parents[1]
SHARED_CYBERMETRIC = REPO.parent / "shared" / "data" / "cybermetric"

# No test may reach a hub; W&B only writes files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# W&B gives its service 30 s to start and a run 90 s to initialise, then fails the run: on a shared 2-core
# machine under load (several suites at once, `nice`), that is a flaky test, not a finding.
os.environ.setdefault("WANDB__SERVICE_WAIT", "600")
os.environ.setdefault("WANDB_INIT_TIMEOUT", "600")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed on its CPU accelerator only where torch sees no GPU either (`make test` hides CUDA:
# CUDA_VISIBLE_DEVICES= runs this suite on the CPU of a GPU machine too); forcing it while
# accelerate picks CUDA would put the two on different devices.
if cuda_hidden():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session", autouse=True)
def _calibration_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs made by the suite (module fixtures included) never append to a calibration file of the checkout."""
    from launch.cost.calibration import DIR_ENV

    os.environ[DIR_ENV] = str(tmp_path_factory.mktemp("calibration"))


@pytest.fixture(autouse=True)
def _calibration_of_this_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no calibration runs: a forecast never depends on what an earlier test ran."""
    from launch.cost.calibration import DIR_ENV

    monkeypatch.setenv(DIR_ENV, str(tmp_path_factory.mktemp("calibration", numbered=True)))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer trained on the bundled sample data (random weights: fast to build)."""
    from train.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0, pretrain_steps=0)


@pytest.fixture(scope="session")
def tok(tiny_model: Path) -> tp.Any:
    """The tiny model's tokenizer (with a pad token)."""
    from train import batches

    return batches.load_tokenizer(str(tiny_model))


@pytest.fixture(scope="session")
def examples(tok: tp.Any) -> list:
    """The first 40 bundled sample questions, encoded as training examples."""
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource
    from train import batches
    from train.tiny_model import DEFAULT_DATA

    questions = load_questions(DataSource(path=str(DEFAULT_DATA)))[:40]
    return batches.encode_examples(tok, questions, max_len=256, progress=False)


@pytest.fixture
def smoke_overrides(tiny_model: Path, tmp_path: Path) -> list[str]:
    """Overrides that make configs/smoke.yaml run inside tmp_path with the session's tiny model."""
    return [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'runs'}"]
