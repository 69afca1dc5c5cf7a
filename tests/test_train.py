"""Training entrypoints: each main(cfg) trains, saves a loadable model or adapter, writes metrics.json."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from launch.jobs import ENTRYPOINTS
from support.experiments import new_experiment

METRIC_KEYS = {
    "method",
    "kind",
    "status",
    "device",
    "phases_s",
    "wall_s",
    "train_tokens",
    "tokens_per_s",
    "peak_mem_bytes",
    "peak_mem_kind",
    "base_mem_bytes",
    "phase_peak_mem_bytes",
    "cpu_share",
    "trainable_params",
    "total_params",
    "final_loss",
    "steps",
    "cpu_hours",
    "gpu_hours",
    "cost_source",
}


def make_experiment(repo: Path, overrides: list[str], extra: list[str]) -> tuple:
    return new_experiment(overrides + ["tracking.backend=none", "data.max_train=64", "data.max_eval=16"] + extra)


@pytest.mark.parametrize("kind", ["full_sft", "lora", "qlora"])
def test_entrypoint_trains_saves_and_writes_metrics(kind, repo, smoke_overrides, tiny_model):
    cfg, exp_dir = make_experiment(
        repo, smoke_overrides, [f"methods.{kind}.max_steps=4", f"methods.{kind}.micro_batch_size=8"]
    )
    metrics = importlib.import_module(ENTRYPOINTS[kind]).main(cfg, kind, exp_dir, threads=1)

    on_disk = json.loads(exp_dir.method(kind).metrics_file.read_text())
    assert on_disk == metrics
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["status"] == "completed" and metrics["steps"] == 4
    assert set(metrics["phases_s"]) == {"load", "train", "save"} and all(v >= 0 for v in metrics["phases_s"].values())
    assert metrics["train_tokens"] > 4 * 8 * 20  # 4 steps of 8 sequences, each well over 20 tokens
    assert metrics["tokens_per_s"] > 0 and metrics["peak_mem_bytes"] > 10 * 2**20
    # The memory before loading (what the estimate is checked above) and the peak at the end of each phase.
    peaks = metrics["phase_peak_mem_bytes"]
    assert 0 < metrics["base_mem_bytes"] < metrics["peak_mem_bytes"]
    assert list(peaks) == ["load", "train", "save"] and peaks["load"] <= peaks["train"] <= peaks["save"]
    assert peaks["save"] == metrics["peak_mem_bytes"]
    assert metrics["final_loss"] > 0 and metrics["cpu_hours"] > 0 and metrics["gpu_hours"] is None
    # Its share of its one thread: CPU seconds over wall seconds (above 1 only by the libraries' own threads).
    assert 0 < metrics["cpu_share"] < 4
    progress = json.loads(exp_dir.method(kind).progress_file.read_text())
    assert progress["step"] == progress["total_steps"] == 4

    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    n_base = sum(p.numel() for p in base.parameters())
    if kind == "full_sft":
        assert metrics["trainable_params"] == metrics["total_params"] == n_base
        tuned = AutoModelForCausalLM.from_pretrained(exp_dir.method(kind).model_dir)
        changed = [n for (n, p), q in zip(base.named_parameters(), tuned.parameters()) if not torch.equal(p, q)]
        assert changed, "full SFT saved the base weights unchanged"
    else:
        from peft import PeftModel

        assert 0 < metrics["trainable_params"] < metrics["total_params"]
        assert (exp_dir.method(kind).adapter_dir / "adapter_model.safetensors").is_file()
        lora = PeftModel.from_pretrained(base, exp_dir.method(kind).adapter_dir)
        b = [p for n, p in lora.named_parameters() if "lora_B" in n]
        assert b and any(float(p.abs().sum()) > 0 for p in b), "adapter B matrices still zero: nothing trained"


def test_loss_goes_down(repo, smoke_overrides):
    """40 full-SFT steps on 32 questions: the answer loss falls well below its start (~ln(vocab) = 7.6)."""
    cfg, exp_dir = make_experiment(
        repo,
        smoke_overrides,
        ["methods.full_sft.max_steps=40", "methods.full_sft.micro_batch_size=8", "data.max_train=32"],
    )
    from train import full_sft, loop

    seen = []
    real_loop = loop.train_loop
    loop.train_loop = lambda *a, **k: seen.append(real_loop(*a, **k)) or seen[-1]
    try:
        full_sft.main(cfg, "full_sft", exp_dir, threads=1)
    finally:
        loop.train_loop = real_loop
    losses = seen[0].losses
    assert len(losses) == 40
    assert losses[0] > 6.0 and losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_failure_is_recorded(repo, smoke_overrides, tmp_path):
    cfg, exp_dir = make_experiment(repo, smoke_overrides, [])
    cfg.model.name_or_path = str(tmp_path / "gone")  # the model disappeared after submission
    from train import full_sft

    with pytest.raises(Exception):  # noqa: B017 - whatever the failure, it must be recorded
        full_sft.main(cfg, "full_sft", exp_dir, threads=1)
    metrics = json.loads(exp_dir.method("full_sft").metrics_file.read_text())
    assert metrics["status"] == "failed" and "gone" in metrics["error"]


def test_wrong_entrypoint_for_kind(repo, smoke_overrides):
    cfg, exp_dir = make_experiment(repo, smoke_overrides, [])
    from train import lora

    with pytest.raises(ValueError, match="is kind 'full_sft'"):
        lora.main(cfg, "full_sft", exp_dir)
