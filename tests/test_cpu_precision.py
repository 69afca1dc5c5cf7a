"""The CPU's precision (issue 27): ``auto`` is bf16 only where the CPU has bf16 matrix units and the model is
large enough, an explicit precision is used as asked or refused, and what was used is recorded and shown.

Both kinds of CPU are tested on any machine by showing ``train.runtime.cpu_bf16_flags`` as one or the other;
the one check that needs real AMX-BF16/AVX512-BF16 (bf16 scores against fp32 ones) skips elsewhere, saying so.
"""

from __future__ import annotations

import importlib
import json
import typing as tp
from pathlib import Path

import pytest
import torch

from launch.cost import calibration as cal
from launch.cost import forecast as fc
from launch.jobs import ENTRYPOINTS
from launch.results.report import build_rows, format_report, precision_line
from launch.spec.config import MethodConfig
from launch.store.expdir import CPU_BF16_MIN_PARAMS, EvalResult, ExperimentDir, TrainMetrics
from support.experiments import new_experiment
from train import evaluate, runtime

NO_UNITS = {"amx_bf16": False, "avx512_bf16": False, "mkldnn_bf16": False}
AMX = {"amx_bf16": True, "avx512_bf16": True, "mkldnn_bf16": True}
QWEN_05B = 494_032_768
TINY = 850_000


@pytest.fixture
def cpu_without_units(monkeypatch):
    monkeypatch.setattr(runtime, "on_gpu", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: dict(NO_UNITS))


@pytest.fixture
def cpu_with_amx(monkeypatch):
    monkeypatch.setattr(runtime, "on_gpu", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: dict(AMX))


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one AcceleratorState per process: a bf16 run's must not reach other tests, nor theirs it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _never() -> int:
    raise AssertionError("the model's size was asked where it cannot change the answer")


def lora(precision: str, **kw: tp.Any) -> MethodConfig:
    return MethodConfig(name="lora", kind="lora", precision=precision, **kw)


# --------------------------------------------------------------------------- detection


def test_this_machines_flags_as_torch_and_cpuinfo_see_them():
    """torch's reading (train) and /proc/cpuinfo's (the launcher's calibration keying) agree on this CPU."""
    flags = runtime.cpu_bf16_flags()
    assert set(flags) == {"amx_bf16", "avx512_bf16", "mkldnn_bf16"} and all(isinstance(v, bool) for v in flags.values())
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo on this system")
    assert runtime.cpu_bf16_native(flags) == cal.cpu_bf16_units()


def test_native_needs_a_bf16_unit_and_onednn():
    assert not runtime.cpu_bf16_native(NO_UNITS)
    assert runtime.cpu_bf16_native(AMX)
    assert runtime.cpu_bf16_native({"amx_bf16": False, "avx512_bf16": True, "mkldnn_bf16": True})
    # oneDNN says bf16 on any AVX512BW CPU, emulating it where neither unit exists: not enough alone.
    assert not runtime.cpu_bf16_native({"amx_bf16": False, "avx512_bf16": False, "mkldnn_bf16": True})


# --------------------------------------------------------------------------- a CPU without bf16 units


def test_auto_is_fp32_without_units_and_names_the_flags(cpu_without_units):
    p = runtime.decide_precision(lora("auto"), _never)
    assert (p.used, p.mixed_precision, p.cpu_flags) == ("fp32", "no", NO_UNITS)
    assert "no bf16 matrix units" in p.reason and "amx_bf16 no, avx512_bf16 no" in p.reason
    assert runtime.decide_precision(lora("fp32"), _never).used == "fp32"


def test_explicit_bf16_without_units_is_refused(cpu_without_units):
    with pytest.raises(ValueError) as err:
        runtime.decide_precision(lora("bf16"), _never)
    text = str(err.value)
    assert text.startswith("methods.lora.precision: bf16, but this CPU has no bf16 matrix units")
    assert "amx_bf16 no, avx512_bf16 no, mkldnn_bf16 no" in text and runtime.EMULATED_BF16_COST in text
    assert "-> precision: auto (fp32 on this CPU) or fp32" in text


def test_fp16_is_refused_on_any_cpu(cpu_without_units, monkeypatch):
    """accelerate runs no fp16 autocast on a CPU: the job would train in fp32 and say fp16."""
    with pytest.raises(ValueError, match=r"^methods\.lora\.precision: fp16, but on a CPU accelerate runs no fp16"):
        runtime.decide_precision(lora("fp16"), _never)
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: dict(AMX))
    with pytest.raises(ValueError, match=r"or bf16 \(this CPU has bf16 units\)"):
        runtime.decide_precision(lora("fp16"), _never)


def test_a_refused_job_records_why_and_trains_nothing(tmp_path, tiny_model, cpu_without_units):
    cfg, exp_dir = new_experiment(
        [
            f"model.name_or_path={tiny_model}",
            f"output_dir={tmp_path}",
            "tracking.backend=none",
            "methods.lora.precision=bf16",
        ]
    )
    with pytest.raises(ValueError, match="methods.lora.precision: bf16, but this CPU has no bf16 matrix units"):
        importlib.import_module(ENTRYPOINTS["lora"]).main(cfg, "lora", exp_dir, threads=1)
    metrics = ExperimentDir(exp_dir).method("lora").read_metrics()
    assert metrics.status == "failed" and "methods.lora.precision: bf16" in metrics.error
    assert not ExperimentDir(exp_dir).method("lora").adapter_dir.exists()


# --------------------------------------------------------------------------- a CPU with bf16 units


def test_auto_is_bf16_with_units_from_the_size_rule_on(cpu_with_amx):
    big = runtime.decide_precision(lora("auto"), lambda: QWEN_05B)
    assert (big.used, big.mixed_precision) == ("bf16", "bf16") and "494M parameters" in big.reason
    small = runtime.decide_precision(lora("auto"), lambda: TINY)
    assert small.used == "fp32" and "0.8M parameters, under the 100M of the bf16 rule" in small.reason
    assert runtime.decide_precision(lora("auto"), lambda: CPU_BF16_MIN_PARAMS).used == "bf16"
    assert runtime.decide_precision(lora("auto"), lambda: None).used == "fp32"  # size unknown: the safe side
    zero = MethodConfig(name="sft", kind="full_sft", precision="auto", deepspeed="ds_configs/zero2.json")
    assert runtime.decide_precision(zero, _never).used == "fp32"


def test_explicit_precisions_are_kept_with_units(cpu_with_amx):
    for asked in ("bf16", "fp32"):
        p = runtime.decide_precision(lora(asked), _never)
        assert p.used == asked and p.reason.startswith("as asked")


def test_the_record_and_the_line(cpu_with_amx):
    p = runtime.decide_precision(lora("auto"), lambda: QWEN_05B)
    assert p.record() == {
        "mixed_precision": "bf16",
        "precision": "bf16",
        "precision_reason": p.reason,
        "cpu_flags": AMX,
    }
    assert p.line().startswith("precision: bf16 (asked auto: bf16 units and 494M parameters; CPU flags seen")
    keys = list(TrainMetrics("m", "lora", "completed", **p.record()).to_dict())
    assert keys[7:11] == ["mixed_precision", "precision", "precision_reason", "cpu_flags"]
    assert "cpu_flags" not in TrainMetrics("m", "lora", "completed").to_dict()  # a GPU's record


def test_lora_under_auto_trains_fp32_adapters_under_bf16_autocast_and_records_it(
    tmp_path, tiny_model, cpu_with_amx, monkeypatch, fresh_accelerator_state, capsys
):
    """The bf16 path end to end (emulated where the CPU has no units: the logic, not the speed, is tested)."""
    monkeypatch.setattr(runtime, "CPU_BF16_MIN_PARAMS", 0)  # the tiny model counts as large here
    cfg, exp_dir = new_experiment(
        [
            f"model.name_or_path={tiny_model}",
            f"output_dir={tmp_path}",
            "tracking.backend=none",
            "data.max_train=16",
            "methods.lora.max_steps=2",
            "methods.lora.precision=auto",
        ]
    )
    autocast_dtypes: list[torch.dtype | None] = []
    from transformers import LlamaForCausalLM

    real = LlamaForCausalLM.forward

    def spy(self: tp.Any, *a: tp.Any, **k: tp.Any) -> tp.Any:
        on = torch.is_autocast_enabled("cpu")
        autocast_dtypes.append(torch.get_autocast_dtype("cpu") if on else None)
        return real(self, *a, **k)

    monkeypatch.setattr(LlamaForCausalLM, "forward", spy)
    metrics = importlib.import_module(ENTRYPOINTS["lora"]).main(cfg, "lora", exp_dir, threads=1)
    assert (metrics["precision"], metrics["mixed_precision"], metrics["cpu_flags"]) == ("bf16", "bf16", AMX)
    assert metrics["trainable_dtype"] == "torch.float32"  # the adapters
    assert autocast_dtypes and set(autocast_dtypes) == {torch.bfloat16}
    assert "[lora] precision: bf16 (asked auto: bf16 units and" in capsys.readouterr().out


# --------------------------------------------------------------------------- the evaluation


def test_evaluation_scores_in_bf16_only_with_units_auto_and_size(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    monkeypatch.setattr(runtime, "on_gpu", lambda: False)
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: dict(NO_UNITS))
    assert evaluate.eval_dtype("auto", model) is None
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: dict(AMX))
    assert evaluate.eval_dtype("auto", model) is None  # the tiny model: under the size rule
    monkeypatch.setattr(runtime, "CPU_BF16_MIN_PARAMS", 0)
    assert evaluate.eval_dtype("auto", model) == torch.bfloat16
    assert evaluate.eval_dtype("float32", model) is None  # an explicit model.dtype is what it scores in
    assert evaluate.precision_of(model) == "fp32" and evaluate.precision_of(model.to(torch.bfloat16)) == "bf16"


def test_an_eval_result_keeps_its_precision_only_when_known():
    assert "precision" not in EvalResult.from_counts("a", 1, 2, "loglik").to_dict()
    assert EvalResult.from_counts("a", 1, 2, "loglik", precision="bf16").to_dict()["precision"] == "bf16"


@pytest.mark.skipif(
    not runtime.cpu_bf16_native(),
    reason=f"this CPU has no AMX-BF16/AVX512-BF16 (torch sees {runtime.cpu_bf16_flags()}): bf16 here is emulated, "
    "its scores say nothing about the bf16 path a CPU with the units runs",
)
def test_bf16_letter_scores_follow_fp32_ones_on_a_cpu_with_units(tiny_model, tok):
    from transformers import AutoModelForCausalLM

    from launch.questions.data import load_questions
    from train.scoring import score_loglik
    from train.tiny_model import DEFAULT_DATA

    questions = load_questions(DEFAULT_DATA)[:32]
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).to(torch.bfloat16).eval()
    ref = score_loglik(fp32, tok, questions, 8, 512, "fp32", progress=False)
    got = score_loglik(bf16, tok, questions, 8, 512, "bf16", progress=False)
    same = sum(a["pred"] == b["pred"] for a, b in zip(ref, got))
    assert same >= 0.9 * len(questions), f"{same}/{len(questions)} predictions agree"


# --------------------------------------------------------------------------- the report


def test_report_rows_and_line_show_the_precision_used():
    metrics = {
        "lora": {"status": "completed", "precision": "bf16"},
        "full": {"status": "completed", "precision": "fp32"},
    }
    results = {
        "base": {"accuracy": 0.3, "n": 10, "correct": 3, "precision": "bf16"},
        "lora": {"accuracy": 0.5, "n": 10, "correct": 5, "precision": "bf16"},
        "full": {"accuracy": 0.4, "n": 10, "correct": 4},  # written before results kept it
    }
    rows = build_rows([("full", "full_sft"), ("lora", "lora")], results, metrics)
    by = {r["method"]: r for r in rows}
    assert (by["lora"]["precision"], by["lora"]["eval_precision"]) == ("bf16", "bf16")
    assert "precision" not in by["base"] and "eval_precision" not in by["full"]
    line = "Precision: training fp32 (full), bf16 (lora); scoring bf16 (base, lora)."
    assert precision_line(rows) == line
    assert line in format_report({"rows": rows}).splitlines()
    assert precision_line(build_rows([("x", "lora")], {}, {})) == ""


# --------------------------------------------------------------------------- the calibration


def _cpu_record(name: str, precision: str | None, utilisation_tokens: float) -> dict:
    job = {
        "name": name,
        "kind": "lora",
        "gpus": 2,
        "peak_tflops": 0.05,
        "flops_per_token": 1e9,
        "modelled_overhead_s": 10.0,
        "n_params": QWEN_05B,
    }
    rec = cal.measure_job(job, utilisation_tokens, 100.0, 120.0, name, "cpu", recorded_at="t", precision=precision)
    if precision is None:  # a record written before records kept the precision
        rec.pop("precision")
    return rec


def test_calibration_never_mixes_bf16_runs_with_fp32_ones(tmp_path, monkeypatch):
    path = tmp_path / "local.calibration.jsonl"
    for rec in (_cpu_record("old", None, 1000), _cpu_record("f", "fp32", 1200), _cpu_record("b", "bf16", 2200)):
        assert cal.append(path, rec)
    loaded = cal.load(path)
    assert loaded.skipped == [] and [r.get("precision") for r in loaded.records] == [None, "fp32", "bf16"]
    assert loaded.lookup("lora", "cpu", QWEN_05B).runs == 3  # not keyed: every run
    assert loaded.keyed("bf16").lookup("lora", "cpu", QWEN_05B).runs == 1
    assert loaded.keyed("fp32").lookup("lora", "cpu", QWEN_05B).runs == 2  # the old CPU record was fp32
    monkeypatch.setattr(cal, "cpu_bf16_units", lambda cpuinfo=None: False)
    assert loaded.keyed("auto").lookup("lora", "cpu", QWEN_05B).runs == 2
    monkeypatch.setattr(cal, "cpu_bf16_units", lambda cpuinfo=None: True)
    assert loaded.keyed("auto").lookup("lora", "cpu", QWEN_05B).runs == 1
    assert loaded.keyed("auto", deepspeed=True).lookup("lora", "cpu", QWEN_05B).runs == 2


def test_expected_precision_and_cpuinfo_flags():
    assert cal.expected_precision("bf16", "cpu", TINY) == "bf16"  # explicit: used as asked, or refused
    assert cal.expected_precision("auto", "h100", TINY) == "bf16"
    assert cal.expected_precision("auto", "v100", TINY) == "fp32"
    assert cal.expected_precision("auto", "nosuchgpu", TINY) is None
    assert cal.cpu_bf16_units("flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cal.cpu_bf16_units("flags\t\t: fpu avx512f avx512_bf16\n")
    assert not cal.cpu_bf16_units("flags\t\t: fpu avx2 avx512f\nmodel name : amx_bf16 in a name\n")


def test_a_bad_precision_in_a_record_is_skipped():
    rec = _cpu_record("x", "fp32", 1000)
    assert cal.record_problem({**rec, "precision": "fp8"}) == "precision: 'fp8' -> one of fp32, bf16, fp16 or null"


def test_measure_method_keeps_the_precision_the_job_recorded():
    job = {"name": "lora", "kind": "lora", "gpus": 1, "peak_tflops": 0.1, "flops_per_token": 1e9, "n_params": TINY}
    metrics = {"status": "completed", "train_tokens": 1000, "phases_s": {"train": 10.0}, "wall_s": 12.0}
    assert cal.measure_method(job, {**metrics, "precision": "bf16"}, None, "e", "cpu")["precision"] == "bf16"
    assert cal.measure_method(job, metrics, None, "e", "cpu")["precision"] is None


def test_the_forecast_keys_its_calibration_on_the_methods_precision(tmp_path):
    from launch.cost.memory import ModelShape
    from launch.cost.tokencount import SplitTokens, TokenCounts
    from launch.spec.config import from_dict

    path = tmp_path / "c.jsonl"
    cal.append(path, _cpu_record("b", "bf16", 2200))
    methods = [{"name": n, "kind": "lora", "precision": n, "max_steps": 10} for n in ("fp32", "bf16")]
    cfg = from_dict({"model": {"name_or_path": "x"}, "data": {"train": {"path": "d.json"}}, "methods": methods})
    shape = ModelShape(576, 30, 49152, 1536, 9, 3, tie_embeddings=True, source="smollm2-like")
    counts = TokenCounts(SplitTokens(300, 34_500, 4e6, 1200), SplitTokens(200, 22_000, 2.4e6, 200, 19), "counted", True)
    out = fc.forecast(cfg, shape, counts, "cpu", gpu_tflops=0.05, calibration=cal.load(path))
    assert {m.name: m.source for m in out.methods} == {"fp32": "default", "bf16": "calibrated from 1 run"}


def test_a_completed_record_round_trips_its_precision(tmp_path):
    exp = ExperimentDir(tmp_path)
    rec = TrainMetrics("lora", "lora", "completed", precision="bf16", precision_reason="why", cpu_flags=AMX)
    exp.method("lora").write_metrics(rec)
    raw = json.loads(exp.method("lora").metrics_file.read_text())
    assert (raw["precision"], raw["cpu_flags"]) == ("bf16", AMX)
    assert exp.method("lora").read_metrics() == rec


def test_a_local_run_refuses_a_precision_this_cpu_cannot_run_before_creating_anything(tmp_path, tiny_model):
    """``cyberft run`` reads /proc/cpuinfo (no torch) and refuses what its jobs would refuse at their start."""
    from launch.run import local
    from support.cli import cyberft

    cfg, _ = new_experiment([f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'x'}"])
    lora = cfg.method("lora")
    lora.precision = "bf16"
    avx2 = "flags\t\t: fpu sse2 avx2 fma\n"
    amx = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n"
    (problem,) = local.precision_problems(cfg, gpu=False, cpuinfo=avx2)
    assert problem.startswith("methods.lora.precision: bf16, but this run has no GPU and this CPU has no bf16")
    assert "-> precision: auto (fp32 on this CPU) or fp32" in problem
    assert local.precision_problems(cfg, gpu=False, cpuinfo=amx) == []
    assert local.precision_problems(cfg, gpu=True, cpuinfo=avx2) == []  # a local GPU runs it
    lora.precision = "fp16"
    (problem,) = local.precision_problems(cfg, gpu=False, cpuinfo=amx)
    assert "methods.lora.precision: fp16" in problem and "or bf16 (this CPU has bf16 units)" in problem

    # The command: fp16 is refused on any CPU, so this holds on every machine without a GPU.
    if local.has_gpu():
        pytest.skip("this machine has a GPU: a local run would use it, and fp16 is valid there")
    out = tmp_path / "runs"
    res = cyberft(
        "run", "configs/smoke.yaml", f"model.name_or_path={tiny_model}", f"output_dir={out}",
        "methods.lora.precision=fp16", "tracking.backend=none",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "methods.lora.precision: fp16, but this run has no GPU" in res.stderr
    assert not out.exists()  # nothing created: no experiment directory, no job
