"""The memory estimate sized by the data and calibrated by the site: the largest micro-batch from the split's
example lengths, logits at the labelled positions only, the precision the job will run in, and the site's
measured peaks scaling the next estimate (issue 23, item 4)."""

from __future__ import annotations

import dataclasses

import pytest

from launch.cost import calibration, costcheck, memory, tokencount
from launch.cost.memory import RowLengths, estimate, peak_rows
from launch.spec.config import LoraSettings, MethodConfig, MultiTaskSettings, Resources, load_config

LLAMA3_8B = "meta-llama/Meta-Llama-3-8B-Instruct"
SHORT = RowLengths(examples=300, mean=110.0, sd=18.0, longest=175.0, answer_tokens=5.0)
"""CyberMetric-500's training split with Qwen's tokenizer, roughly: short questions under a long max_seq_len."""


@pytest.fixture
def shape8b(tmp_path, monkeypatch) -> memory.ModelShape:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))  # the built-in table, never a real cache
    shape = memory.model_shape(LLAMA3_8B)
    assert shape is not None
    return shape


def _lora(**kw) -> MethodConfig:
    base = dict(
        name="lora",
        kind="lora",
        precision="bf16",
        micro_batch_size=8,
        lora=LoraSettings(r=16, dropout=0.0),
        resources=Resources(gpus_per_node=1),
    )
    return MethodConfig(**{**base, **kw})


# --------------------------------------------------------------------------- the largest micro-batch


def test_packed_micro_batches_plan_for_the_largest_sum_not_max_seq_len():
    tokens, labelled = peak_rows(SHORT, 8, 1024, packed=True)
    assert 8 * SHORT.mean < tokens < 8 * SHORT.longest  # above the average batch, below 8 of the longest
    assert labelled == 40  # 8 examples x 5 answer tokens
    # A split of identical examples has no spread: every micro-batch is the same.
    flat = dataclasses.replace(SHORT, sd=0.0, longest=SHORT.mean)
    assert peak_rows(flat, 8, 1024, packed=True)[0] == pytest.approx(8 * SHORT.mean, abs=1)
    # More micro-batches, a larger largest one (the expected maximum grows with their number).
    more = dataclasses.replace(SHORT, examples=30_000, longest=400.0)
    assert peak_rows(more, 8, 1024, packed=True)[0] > tokens


def test_padded_micro_batches_plan_for_the_one_that_holds_the_longest_example():
    assert peak_rows(SHORT, 8, 1024, packed=False) == (8 * 175, 40)
    assert peak_rows(SHORT, 8, 100, packed=False)[0] == 8 * 100  # cut at max_seq_len as the jobs cut them
    assert peak_rows(SHORT, 8, 1024, packed=False, extra_per_row=16)[0] == 8 * (175 + 16)  # virtual tokens


def test_without_lengths_every_example_is_taken_at_max_seq_len():
    assert peak_rows(None, 4, 512, packed=True) == (4 * 512, 4 * memory.ANSWER_TOKENS)


def test_real_lengths_cut_the_estimate_of_short_questions(shape8b):
    lora = _lora()
    blind, sized = estimate(shape8b, lora, 1024), estimate(shape8b, lora, 1024, lengths=SHORT)
    assert sized.activations_gb < blind.activations_gb / 5  # ~1k tokens per micro-batch instead of 8k
    assert sized.weights_gb == blind.weights_gb and sized.optimizer_gb == blind.optimizer_gb  # states: same
    # Padded rows plan for the longest example in every row: more than packed, still far below max_seq_len.
    padded = estimate(shape8b, _lora(batching="padded"), 1024, lengths=SHORT)
    assert sized.activations_gb < padded.activations_gb < blind.activations_gb


def test_logits_are_counted_at_the_labelled_positions_only(shape8b):
    """The trainer asks for logits at the answer tokens (logits_to_keep): 128k-entry rows for 5, not 1,000."""
    tokens = 1000
    every = memory.activation_bytes(shape8b, tokens, False, logit_tokens=None)
    answers = memory.activation_bytes(shape8b, tokens, False, logit_tokens=40)
    per_logit = memory.LOGITS_BYTES * shape8b.vocab_size
    assert every - answers == (tokens - 40) * per_logit


# --------------------------------------------------------------------------- the site's scale


def test_a_scale_multiplies_what_the_method_holds_not_the_fixed_overhead(shape8b):
    plain = estimate(shape8b, _lora(), 1024, lengths=SHORT)
    scaled = estimate(shape8b, _lora(), 1024, lengths=SHORT, scales={"lora": 1.3, "qlora": 9.0})
    assert scaled.scale == 1.3 and plain.scale == 1.0
    assert scaled.own_gb == pytest.approx(1.3 * plain.own_gb)
    assert scaled.overhead_gb == plain.overhead_gb
    assert scaled.total_gb == pytest.approx(scaled.own_gb + scaled.overhead_gb)


def test_multi_task_takes_its_own_scale_else_the_one_of_what_it_adapts(shape8b):
    multi = _lora(name="mt", kind="multi_task", multi_task=MultiTaskSettings())  # adapts: lora
    plain = estimate(shape8b, multi, 1024, lengths=SHORT)
    adapts = estimate(shape8b, multi, 1024, lengths=SHORT, scales={"lora": 1.2})
    own = estimate(shape8b, multi, 1024, lengths=SHORT, scales={"lora": 1.2, "multi_task": 1.5})
    assert adapts.own_gb == pytest.approx(1.2 * plain.own_gb)
    assert own.own_gb == pytest.approx(1.5 * plain.own_gb)


def _record(job: str, kind: str, estimate_gb: float | None, peak_gb: float | None) -> dict:
    fc = {"kind": kind, "name": job, "n_params": 494_000_000, "gpus": 1, "peak_tflops": 0.085}
    rec = calibration.measure_job({**fc, "flops_per_token": 3e9}, 30_000, 600.0, 650.0, "exp", "cpu")
    assert rec is not None
    rec.update({"mem_estimate_gb": estimate_gb, "mem_peak_gb": peak_gb})
    return rec


def test_the_site_scale_is_the_largest_ratio_its_runs_measured():
    cal = calibration.Calibration(
        None,
        [
            _record("lora[0]", "lora", 5.0, 6.5),
            _record("lora[1]", "lora", 5.0, 7.2),
            _record("lora[2]", "lora", None, None),  # measured nothing: counts for time, not memory
            _record("full_sft", "full_sft", 10.0, 11.0),
        ],
    )
    scale, runs = cal.memory_scale("lora", "cpu", 494_000_000)
    assert scale == pytest.approx(7.2 / 5.0) and runs == 2  # the largest: no peak already seen is planned under
    assert cal.memory_scale("full_sft", "cpu", 494_000_000) == (pytest.approx(1.1), 1)
    assert cal.memory_scale("qlora", "cpu", 494_000_000) is None  # no runs of it
    assert cal.memory_scale("lora", "cpu", 8_000_000_000) is None  # another size of model


def test_memory_fields_of_a_record_are_checked_and_may_be_absent():
    rec = _record("lora", "lora", 5.0, 6.0)
    assert calibration.record_problem(rec) is None
    for bad in (0, -1.0, "6", float("nan"), True):
        assert "mem_peak_gb" in calibration.record_problem({**rec, "mem_peak_gb": bad})
    older = {k: v for k, v in rec.items() if not k.startswith("mem_")}
    assert calibration.record_problem(older) is None  # a record written before memory was measured


def test_a_job_measures_its_own_memory_above_what_it_held_before_loading():
    job = {"memory_own_raw_gb": 4.0}
    metrics = {"peak_mem_bytes": 7 * 2**30, "base_mem_bytes": 2**30}
    assert calibration.memory_measured(job, metrics) == {"mem_estimate_gb": 4.0, "mem_peak_gb": 6.0}
    assert calibration.memory_measured(job, {"peak_mem_bytes": 7 * 2**30}) == {}  # no baseline recorded
    assert calibration.memory_measured({}, metrics) == {}  # no estimate saved with the forecast


# --------------------------------------------------------------------------- before and after the run


def test_check_compares_the_methods_own_memory_and_leaves_few_shot_to_the_evaluation():
    saved = {
        "device": "CPU thread",
        "methods": {"lora": {"gpu_hours": 0.1}, "few_shot": {"gpu_hours": 0.0}},
        "evaluation": {},
        "memory_gb": {
            "lora": {"gpu": 6.5, "own": 5.0, "cpu": 5.65, "own_raw": 4.0, "scale": 1.25, "scale_runs": 1},
            "few_shot": {"gpu": 3.0, "scored_in_eval": True},
        },
    }
    rows = [{"method": "lora", "cpu_hours": 0.1}, {"method": "few_shot", "cpu_hours": 0.0}]
    metrics = {
        "lora": {"peak_mem_bytes": 6 * 2**30, "base_mem_bytes": 2**30, "peak_mem_kind": "rss"},
        "few_shot": {"peak_mem_bytes": 2**29, "base_mem_bytes": 2**28, "peak_mem_kind": "rss"},
    }
    out = costcheck.check(saved, rows, metrics, {}, {}, None)
    assert out["methods"]["lora"]["peak_mem_gb"] == {"forecast": 5.0, "actual": 5.0, "error_pct": 0.0}
    assert out["methods"]["few_shot"]["peak_mem_gb"]["forecast"] is None
    assert out["methods"]["few_shot"]["peak_mem_gb"]["error_pct"] is None


def test_calibrate_records_both_sides_of_the_memory_estimate(tmp_path):
    path = tmp_path / "site.calibration.jsonl"
    job = {"kind": "lora", "n_params": 494_000_000, "gpus": 1, "peak_tflops": 0.085, "flops_per_token": 3e9}
    saved = {
        "calibration_file": str(path),
        "gpu_type": "cpu",
        "methods": {"lora": job},
        "memory_gb": {"lora": {"gpu": 6.5, "own": 5.0, "own_raw": 4.0, "scale": 1.25}},
    }
    metrics = {
        "lora[0]": {
            "status": "completed",
            "train_tokens": 30_000,
            "phases_s": {"train": 600.0},
            "wall_s": 650.0,
            "peak_mem_bytes": 6 * 2**30,
            "base_mem_bytes": 2**30,
        }
    }
    done = costcheck.calibrate(saved, "exp-1", metrics, None, {}, None)
    assert done["recorded"] == ["exp-1/lora[0]"]
    (rec,) = calibration.load(path).records
    # The estimate before the site's scale (a scale is never compounded), against the peak above the baseline.
    assert rec["mem_estimate_gb"] == 4.0 and rec["mem_peak_gb"] == 5.0


def test_the_plan_sizes_memory_by_the_data_and_scales_it_by_the_sites_runs(tiny_model, tmp_path, monkeypatch):
    cfg = load_config(
        "configs/smoke.yaml", [f"model.name_or_path={tiny_model}", "tracking.backend=none", f"output_dir={tmp_path}"]
    )
    from launch.questions import data

    split = data.plan_splits(cfg.data)
    site = dataclasses.replace(costcheck.Site.local(cfg), calibration_file=tmp_path / "local.calibration.jsonl")
    monkeypatch.setattr(calibration, "cpu_bf16_units", lambda cpuinfo=None: False)  # auto: fp32 on this CPU
    first = costcheck.plan(cfg, split, site)
    counts = tokencount.count_tokens(split.train, split.eval, cfg.model.name_or_path, cfg.model.max_seq_len)
    assert first.lengths == costcheck.row_lengths(counts.train) and first.lengths.longest <= cfg.model.max_seq_len
    lora = first.memory_gb["lora"]
    assert lora["scale"] == 1.0 and lora["own"] == lora["own_raw"] and lora["scale_runs"] == 0
    shape = memory.model_shape(cfg.model.name_or_path)
    blind = memory.estimate(shape, dataclasses.replace(cfg.method("lora"), precision="fp32"), cfg.model.max_seq_len)
    # On the CPU the plan adds the runtime's share; the model's own part is below the blind estimate's, the
    # smoke questions being far shorter than max_seq_len.
    assert lora["own_raw"] - costcheck.CPU_RUNTIME_GB < blind.own_gb
    assert lora["gpu"] == pytest.approx(lora["own_raw"] - costcheck.CPU_RUNTIME_GB + blind.overhead_gb)
    # A finished run on this site measured 1.5x the estimate: the next plan of LoRA says so, the others do not.
    rec = _record("lora", "lora", lora["own_raw"], 1.5 * lora["own_raw"])
    rec.update(n_params=shape.n_params, size=calibration.size_bucket(shape.n_params), precision="fp32")
    assert calibration.append(site.calibration_file, rec)
    second = costcheck.plan(cfg, split, site)
    assert second.memory_gb["lora"]["scale"] == pytest.approx(1.5) and second.memory_gb["lora"]["scale_runs"] == 1
    assert second.memory_gb["lora"]["own"] == pytest.approx(1.5 * lora["own_raw"])
    assert second.memory_gb["full_sft"]["scale"] == 1.0
    # A run on a model of another size (the same "<1B" bucket, 100x the parameters) does not scale this one.
    other = _record("lora-big", "lora", 1.0, 3.0)
    other.update(n_params=100 * shape.n_params, size=calibration.size_bucket(shape.n_params), precision="fp32")
    other["id"] = "exp/lora-big"
    calibration.append(site.calibration_file, other)
    assert costcheck.plan(cfg, split, site).memory_gb["lora"]["scale"] == pytest.approx(1.5)
