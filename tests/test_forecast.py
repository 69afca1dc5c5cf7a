"""The cost forecast (launch/cost/forecast.py): FLOPs by hand and against torch's counter, steps, table, warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launch.cost import forecast as fc
from launch.cost.memory import ModelShape
from launch.cost.tokencount import SplitTokens, TokenCounts
from launch.spec import sweep
from launch.spec.config import ExperimentConfig, LoraSettings, MethodConfig, Resources, from_dict

REPO = Path(__file__).resolve().parents[1]

# Llama 3 8B, from its config.json: hidden 4096, 32 layers, vocab 128256, MLP 14336, 32 heads, 8 KV heads.
LLAMA3_8B = ModelShape(
    hidden_size=4096,
    num_layers=32,
    vocab_size=128256,
    intermediate_size=14336,
    num_heads=32,
    num_kv_heads=8,
    tie_embeddings=False,
    source="test",
)
# One layer's projections by hand: q and o 4096 x 4096, k and v 4096 x 1024 (8 KV heads of 128),
# gate, up and down 4096 x 14336.
LAYER = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336
N_8B = 32 * LAYER
ATTN_8B = 4 * 32 * 4096  # forward attention FLOPs per token per unit of context: 4 L d
# LoRA r=16 on all seven projections: r x (in + out) each, per layer.
ADAPTERS_8B = 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)


def test_llama3_8b_sizes_by_hand():
    assert LAYER == 218_103_808
    assert fc.matmul_params(LLAMA3_8B) == N_8B == 6_979_321_856
    assert LLAMA3_8B.n_params == 8_030_261_248  # the published count: layers + 2 x embedding + norms
    assert ADAPTERS_8B == 41_943_040


@pytest.mark.parametrize("checkpointing", [False, True])
def test_train_flops_of_llama3_8b_by_hand(checkpointing):
    T, V, h = 150, 128256, 4096
    full = fc.train_flops(LLAMA3_8B, "full_sft", T, checkpointing=checkpointing)
    recompute = 2 * N_8B + ATTN_8B * T if checkpointing else 0
    assert full.per_token == 6 * 6_979_321_856 + 3 * ATTN_8B * T + recompute
    assert full.per_logit == 6 * V * h
    lora = fc.train_flops(LLAMA3_8B, "lora", T, ADAPTERS_8B, checkpointing)
    recompute = 2 * N_8B + 2 * ADAPTERS_8B + ATTN_8B * T if checkpointing else 0
    assert lora.per_token == 4 * N_8B + 6 * ADAPTERS_8B + 3 * ATTN_8B * T + recompute
    assert lora.per_logit == 4 * V * h
    assert fc.train_flops(LLAMA3_8B, "qlora", T, ADAPTERS_8B, checkpointing) == lora  # same products, dequantised
    # Without checkpointing: full SFT about 42.1 GFLOP per token of a 150-token example, LoRA 28.4.
    if not checkpointing:
        assert full.per_token == 42_111_860_736 and lora.per_token == 28_404_875_264
    with pytest.raises(ValueError, match="kind"):
        fc.train_flops(LLAMA3_8B, "dpo", T)


def test_eval_flops_by_hand():
    split = SplitTokens(examples=10, tokens=1500, squared=10 * 150**2, logit_tokens=10, shared_prefix=20)
    computed = 1500 - 9 * 20  # the shared prefix once, not ten times
    assert fc.eval_flops(LLAMA3_8B, split) == (2 * N_8B + ATTN_8B * 150) * computed + 2 * 128256 * 4096 * 10


# --------------------------------------------------------------------------- against torch's FLOP counter


def _tiny_shape_and_model(torch, transformers):
    from launch.cost.memory import _shape_from_config

    cfg = transformers.LlamaConfig(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.config._attn_implementation = "eager"  # matrix products torch's counter sees, over the full T x T scores
    return _shape_from_config(cfg.to_dict(), "tiny"), model


def _counted(torch, model, T, keep_last, backward=True, checkpointing=False):
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(0, 2048, (1, T))
    keep = torch.zeros(1, T, dtype=torch.bool)
    keep[0, -keep_last:] = True
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train(backward)
    with FlopCounterMode(display=False) as counter:
        if backward:
            model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits.float().sum().backward()
        else:
            with torch.no_grad():
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return counter.get_total_flops()


def test_flops_model_matches_torch_flop_counter_on_a_tiny_llama():
    """Training and scoring as the jobs run them (logits only at the answer / the last position), counted by torch.

    Full SFT and scoring match exactly. Two known differences, both small at 8B scale:
    * LoRA: the frozen embeddings need no gradient, so layer 0's q/k/v skip their input gradient
      (2% of this 4-layer model's backward, 0.2% of Llama 3 8B's); the formula counts it.
    * checkpointing: torch's non-reentrant checkpoint stops recomputing once every saved tensor is back,
      so each layer's down_proj (whose output nothing saves) is not recomputed: the formula's "one more
      forward" is up to 5% high here (Llama 3 8B: about 7%); the calibration absorbs it.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    T, answer = 100, 4
    shape, model = _tiny_shape_and_model(torch, transformers)
    assert _counted(torch, model, T, answer) == fc.train_flops(shape, "full_sft", T).total(T, answer)
    assert _counted(torch, model, T, 1, backward=False) == fc.eval_flops(shape, SplitTokens(1, T, T * T, 1))
    with_ckpt = fc.train_flops(shape, "full_sft", T, checkpointing=True).total(T, answer)
    assert 1.0 < with_ckpt / _counted(torch, model, T, answer, checkpointing=True) < 1.06

    _, base = _tiny_shape_and_model(torch, transformers)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    from launch.cost.memory import lora_params

    adapters = lora_params(shape, LoraSettings(r=8))[0]
    assert adapters == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    ratio = fc.train_flops(shape, "lora", T, adapters).total(T, answer) / _counted(torch, lora, T, answer)
    assert 1.0 <= ratio < 1.03


# --------------------------------------------------------------------------- steps and examples


def _method(**kw) -> MethodConfig:
    res = kw.pop("resources", {})
    return MethodConfig(name=kw.pop("name", "m"), kind=kw.pop("kind", "lora"), resources=Resources(**res), **kw)


@pytest.mark.parametrize(
    "kw",
    [
        dict(epochs=1, micro_batch_size=8),
        dict(epochs=2, micro_batch_size=8, grad_accum_steps=4),
        dict(epochs=0.5, micro_batch_size=3, grad_accum_steps=2),
        dict(max_steps=25, micro_batch_size=16),
        dict(epochs=2, micro_batch_size=8, grad_accum_steps=2, resources=dict(gpus_per_node=8)),
    ],
)
def test_steps_and_examples_match_the_training_loop(kw):
    """Steps as train.loop counts them; examples as a DataLoader over n examples yields them in that many steps."""
    torch = pytest.importorskip("torch")
    from train.loop import total_steps

    m, n = _method(**kw), 45
    world = fc.world_size(m)
    steps = fc.total_steps(m, n)
    assert steps == total_steps(m, n, world)
    # Each rank takes every world-th micro-batch of the full batch; count all ranks' examples together.
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=m.micro_batch_size * world)
    seen, micro = 0, steps * m.grad_accum_steps
    while micro > 0:
        for batch in loader:
            seen += len(batch)
            micro -= 1
            if micro == 0:
                break
    assert fc.examples_seen(m, n, steps) == seen


# --------------------------------------------------------------------------- the forecast


def _counts(n_train=1000, n_eval=100, length=150.0) -> TokenCounts:
    return TokenCounts(
        train=SplitTokens(n_train, n_train * length, n_train * length**2, 4 * n_train),
        eval=SplitTokens(n_eval, n_eval * length, n_eval * length**2, n_eval, 20),
        source="tokens: counted with the tokenizer",
        counted=True,
    )


def _cfg(methods: list[dict], eval_res: dict | None = None, include_base: bool = True) -> ExperimentConfig:
    raw = {
        "name": "t",
        "model": {"name_or_path": "meta-llama/Meta-Llama-3-8B", "dtype": "bfloat16"},
        "data": {"train": {"path": "x.json"}},
        "methods": methods,
        "eval": {"include_base": include_base, "resources": eval_res or {"gpus_per_node": 1, "time_min": 120}},
    }
    return from_dict(raw)


def test_one_lora_job_by_hand():
    """Tokens, FLOPs, compute time, overhead, GPU-hours and cost of one job, each computed here from the formulas."""
    cfg = _cfg(
        [
            {
                "name": "lora",
                "kind": "lora",
                "epochs": 1,
                "micro_batch_size": 10,
                "precision": "bf16",
                "lora": {"r": 16},
                "resources": {"gpus_per_node": 1, "time_min": 600},
            }
        ]
    )
    out = fc.forecast(cfg, LLAMA3_8B, _counts(), "H100", price_per_gpu_hour=3.0)
    job = out.methods[0]
    assert (job.steps, job.tokens, job.gpus) == (100, 150_000, 1)
    flops = (4 * N_8B + 6 * ADAPTERS_8B + 3 * ATTN_8B * 150) * 150_000 + 4 * 128256 * 4096 * 4000
    assert job.flops == pytest.approx(flops, rel=1e-12)
    assert (job.utilisation, job.source, job.peak_tflops) == (0.33, "default", 989.0)
    compute = flops / (989e12 * 0.33)
    assert job.compute_s == pytest.approx(compute)
    load = 2 * LLAMA3_8B.n_params / 1e9 / fc.READ_GB_PER_S  # bf16 weights
    save = 4 * ADAPTERS_8B / 1e9 / fc.WRITE_GB_PER_S  # the adapters, no intermediate checkpoint in 53 s
    assert job.attempts == 1
    assert job.wall_s == pytest.approx(compute + fc.STARTUP_S + load + save)
    assert job.gpu_hours == pytest.approx(job.wall_s / 3600)
    assert job.cost == pytest.approx(job.gpu_hours * 3.0)
    assert job.tokens_per_s == pytest.approx(150_000 / compute)


def test_full_sft_counts_every_gpu_and_its_checkpoints():
    cfg = _cfg(
        [
            {
                "name": "full",
                "kind": "full_sft",
                "epochs": 3,
                "micro_batch_size": 8,
                "precision": "bf16",
                "checkpoint": {"every_min": 1},
                "resources": {"nodes": 2, "gpus_per_node": 8, "time_min": 600},
            }
        ]
    )
    counts = _counts(n_train=200_000)
    job = fc.forecast(cfg, LLAMA3_8B, counts, "a100").methods[0]
    assert job.gpus == 16 and job.utilisation == 0.45 and job.peak_tflops == 312.0
    assert job.compute_s == pytest.approx(job.flops / (312e12 * 0.45 * 16))
    saves = int(job.compute_s // 60)  # one every minute of compute
    assert saves > 10
    tail = (saves * 14 + 2) * LLAMA3_8B.n_params / 1e9 / fc.WRITE_GB_PER_S  # 14 B/param states, 2 B/param model
    per_attempt = fc.STARTUP_S + 2 * LLAMA3_8B.n_params / 1e9 / fc.READ_GB_PER_S
    assert job.modelled_overhead_s == pytest.approx(job.attempts * per_attempt + tail)
    assert job.gpu_hours == pytest.approx(job.wall_s * 16 / 3600)


def test_evaluation_scores_the_base_model_and_every_method():
    methods = [{"name": n, "kind": k, "resources": {"gpus_per_node": 1}} for n, k in (("a", "lora"), ("b", "qlora"))]
    with_base = fc.forecast(_cfg(methods), LLAMA3_8B, _counts(), "h100").evaluation
    without = fc.forecast(_cfg(methods, include_base=False), LLAMA3_8B, _counts(), "h100").evaluation
    one = fc.eval_flops(LLAMA3_8B, _counts().eval)
    assert (with_base.models, without.models) == (3, 2)
    assert with_base.flops == pytest.approx(3 * one) and without.flops == pytest.approx(2 * one)


def test_peak_by_gpu_type_and_precision():
    assert fc.peak_tflops("A100-SXM4-80GB", "bf16") == 312.0
    assert fc.peak_tflops("h100", "auto") == 989.0
    assert fc.peak_tflops("h100", "fp32") == 67.0
    assert fc.peak_tflops("v100", "auto") == 15.7  # no native bf16: "auto" trains in fp32
    assert fc.peak_tflops("v100", "fp16") == 125.0
    assert fc.peak_tflops("l40s", "bf16") == 362.0
    assert fc.peak_tflops("fake", "bf16") is None
    assert fc.peak_tflops("fake", "fp32", override=0.17) == 0.17  # the profile's gpu_tflops wins
    assert fc.default_utilisation("qlora", "a100-80gb") == 0.32 and fc.default_utilisation("qlora", "h200") == 0.23


def test_unknown_gpu_leaves_times_unknown_and_says_how_to_fix_it():
    cfg = _cfg([{"name": "lora", "kind": "lora"}])
    out = fc.forecast(cfg, LLAMA3_8B, _counts(), "fake", price_per_gpu_hour=2.0)
    assert all(j.wall_s is None and j.gpu_hours is None and j.cost is None for j in out.jobs)
    assert out.jobs[0].flops > 0  # tokens and FLOPs are still known
    assert len(out.warnings) == 1
    assert out.warnings[0].startswith("gpu_tflops: no peak TFLOP/s known for GPU type 'fake'")
    assert "-> set gpu_tflops in the profile" in out.warnings[0]
    row = out.table().splitlines()[3].split()
    assert row[:3] == ["lora", "lora", "1"] and row[-4:] == ["default", "?", "?", "?"]


def test_forecast_table_text():
    cfg = _cfg(
        [
            {
                "name": "full_sft",
                "kind": "full_sft",
                "epochs": 1,
                "micro_batch_size": 8,
                "precision": "bf16",
                "resources": {"gpus_per_node": 8, "time_min": 240},
            },
            {
                "name": "qlora",
                "kind": "qlora",
                "epochs": 1,
                "micro_batch_size": 8,
                "precision": "bf16",
                "gradient_checkpointing": True,
                "lora": {"r": 16},
                "resources": {"gpus_per_node": 1},
            },
        ]
    )
    text = fc.forecast(cfg, LLAMA3_8B, _counts(n_train=10_000), "h100", price_per_gpu_hour=2.5).table()
    assert text == "\n".join(
        [
            "cost forecast: h100, peak 989 TFLOP/s per GPU, 2.5 per GPU-hour; tokens: counted with the tokenizer",
            "job       kind      GPUs  steps  tokens  FLOPs  util  util source     wall   GPU-h  cost",
            "--------  --------  ----  -----  ------  -----  ----  -----------  -------  ------  ----",
            "full_sft  full_sft     8    157    1.5M  63.3P  0.33  default      2.2 min   0.294  0.74",
            "qlora     qlora        1  1,250    1.5M  63.9P  0.23  default      6.0 min  0.0992  0.25",
            "eval      eval         1      -     45k   549T  0.33  default      1.8 min  0.0305  0.08",
            "total                                                                        0.424  1.06",
        ]
    )
    # By hand: full SFT, 10,000 examples / (8 per GPU x 8 GPUs) = 157 steps; 1.5M tokens x 42.1 GFLOP + logits
    # = 63.3 PFLOP; / (8 x 989 TFLOP/s x 0.33) = 24.2 s + 60 s start-up + 16.1 s load + 32.1 s save of 16 GB
    # = 132 s; x 8 GPUs = 0.294 GPU-h; x 2.5 = 0.74. The evaluation scores 3 models (base, full_sft, qlora).


def test_time_limit_warning_names_fixes_that_work():
    method = {
        "name": "lora",
        "kind": "lora",
        "epochs": 6,
        "micro_batch_size": 8,
        "precision": "bf16",
        "lora": {"r": 16},
        "resources": {"gpus_per_node": 1, "time_min": 60, "max_timeouts": 1},
    }
    counts = _counts(n_train=150_000)
    out = fc.forecast(_cfg([method]), LLAMA3_8B, counts, "h100", max_time_min=2880)
    job = out.methods[0]
    assert job.wall_s > 2 * 3600
    [note] = out.warnings
    assert note.startswith(
        f"methods.lora.resources: forecast wall time {fc.duration(job.wall_s)} exceeds "
        "time_min x (max_timeouts + 1) = 60 min x 2 = 2.0 h; the job would stop unfinished -> "
    )
    assert f"methods.lora.resources.max_timeouts: {job.attempts - 1} ({job.attempts} attempts of 60 min)" in note
    needed = int(note.split("methods.lora.resources.time_min: ")[1].split(";")[0])
    gpus = int(note.split("; or about ")[1].split(" GPUs")[0])
    # Each proposed fix, applied alone, gives a forecast without the warning.
    for res in ({"max_timeouts": job.attempts - 1}, {"time_min": needed}, {"gpus_per_node": gpus}):
        fixed = dict(method, resources={**method["resources"], **res})
        assert fc.forecast(_cfg([fixed]), LLAMA3_8B, counts, "h100", max_time_min=2880).warnings == [], res
    # A time_min above the partition's limit is not proposed; QLoRA gets no "more GPUs".
    capped = fc.forecast(_cfg([dict(method, kind="qlora")]), LLAMA3_8B, counts, "h100", max_time_min=60)
    [note] = capped.warnings
    assert "time_min:" not in note and "GPUs" not in note and "max_timeouts:" in note


def test_a_time_limit_too_short_to_start_is_named():
    method = {"name": "full", "kind": "full_sft", "max_steps": 10, "resources": {"gpus_per_node": 8, "time_min": 2}}
    out = fc.forecast(_cfg([method]), LLAMA3_8B, _counts(), "h100")
    job = out.methods[0]
    assert job.attempts is None and job.wall_s is not None
    [note] = out.warnings
    needed = -(-(job.wall_s + 120) // 60)
    assert note == (
        "methods.full.resources.time_min: 2 min leaves no time to train after start-up and loading and "
        f"the checkpoint signal 120 s before the limit -> methods.full.resources.time_min: {needed:.0f} "
        "(the whole job in one attempt)"
    )
    fixed = dict(method, resources={**method["resources"], "time_min": int(needed)})
    assert fc.forecast(_cfg([fixed]), LLAMA3_8B, _counts(), "h100").warnings == []


def test_calibrated_utilisation_replaces_the_default():
    class Cal:
        def lookup(self, kind, gpu_type, n_params):
            return fc.Calibrated(0.5, 2.0, 3) if kind == "lora" else None

    cfg = _cfg([{"name": "lora", "kind": "lora", "precision": "bf16"}, {"name": "q", "kind": "qlora"}])
    plain = fc.forecast(cfg, LLAMA3_8B, _counts(), "h100")
    cal = fc.forecast(cfg, LLAMA3_8B, _counts(), "h100", calibration=Cal())
    lora, qlora = cal.methods
    assert (lora.utilisation, lora.source) == (0.5, "calibrated from 3 runs")
    assert (qlora.utilisation, qlora.source) == (0.23, "default")
    assert lora.compute_s == pytest.approx(plain.methods[0].compute_s * 0.33 / 0.5)
    assert lora.overhead_s == pytest.approx(2 * plain.methods[0].overhead_s)
    assert "calibrated from 3 runs" in cal.table()


def test_to_json_round_trips_through_json():
    import json

    out = fc.forecast(_cfg([{"name": "lora", "kind": "lora"}]), LLAMA3_8B, _counts(), "h100", 2.0)
    data = json.loads(json.dumps(out.to_json()))
    job = data["methods"]["lora"]
    assert job["flops_per_token"] == pytest.approx(out.methods[0].flops / out.methods[0].tokens)
    assert data["total"]["gpu_hours"] == pytest.approx(out.total("gpu_hours"))
    assert data["evaluation"]["models"] == 2


# --------------------------------------------------------------------------- forecast against actual


def test_compare_gives_each_error_in_percent():
    job = {"gpu_hours": 1.2, "wall_s": 900.0, "tokens_per_s": 5000.0}
    row = {"gpu_hours": 1.0, "elapsed_s": 1000, "wall_s": 800.0, "tokens_per_s": 4000.0, "peak_mem_gb": 40.0}
    out = fc.compare(job, row, memory_gb=50.0)
    assert out["gpu_hours"] == {"forecast": 1.2, "actual": 1.0, "error_pct": pytest.approx(20.0)}
    assert out["wall_s"] == {"forecast": 900.0, "actual": 1000, "error_pct": pytest.approx(-10.0)}  # sacct's elapsed
    assert out["tokens_per_s"]["error_pct"] == pytest.approx(25.0)
    assert out["peak_mem_gb"] == {"forecast": 50.0, "actual": 40.0, "error_pct": pytest.approx(25.0)}
    local = fc.compare({"gpu_hours": None, "wall_s": 900.0}, {"wall_s": 800.0})
    assert local["wall_s"]["actual"] == 800.0 and local["wall_s"]["error_pct"] == pytest.approx(12.5)
    assert local["gpu_hours"]["error_pct"] is None and local["peak_mem_gb"] == {
        "forecast": None,
        "actual": None,
        "error_pct": None,
    }


def test_format_comparison_text():
    cmp = {
        "lora": fc.compare(
            {"gpu_hours": 1.2, "wall_s": 900.0, "tokens_per_s": 5000.0},
            {"gpu_hours": 1.0, "elapsed_s": 1000, "tokens_per_s": 4000.0, "peak_mem_gb": 40.0},
            50.0,
        ),
        "qlora": fc.compare({"gpu_hours": None}, {}),
    }
    assert fc.format_comparison(cmp).splitlines() == [
        "forecast against actual (err = (forecast - actual) / actual; peak GiB fc = the memory estimate)",
        "method  GPU-h fc  GPU-h   err  wall s fc  wall s   err  tok/s fc  tok/s   err  peak GiB fc  peak GiB   err",
        "------  --------  -----  ----  ---------  ------  ----  --------  -----  ----  -----------  --------  ----",
        "lora         1.2      1  +20%        900   1,000  -10%     5,000  4,000  +25%           50        40  +25%",
        "qlora          -      -     -          -       -     -         -      -     -            -         -     -",
    ]


# --------------------------------------------------------------------------- login node


def test_forecast_modules_work_with_torch_unimportable(tmp_path):
    """launch.cost.forecast, .calibration and .tokencount import, count and forecast without torch."""
    (tmp_path / "torch.py").write_text("raise ImportError('torch must not be imported on the login node')\n")
    code = (
        "import sys\n"
        "from launch.cost import calibration, forecast, tokencount, memory\n"
        "from launch.spec.config import DataSource, load_config\n"
        "from launch.questions.data import load_questions\n"
        "cfg = load_config('configs/llama3-8b-cybermetric.yaml', ['data.train.path=data/sample/cyber_mcq.json'])\n"
        "qs = load_questions(DataSource(path='data/sample/cyber_mcq.json'))\n"
        "counts = tokencount.count_tokens(qs[:500], qs[500:], cfg.model.name_or_path, 512)\n"
        "out = forecast.forecast(cfg, memory.model_shape(cfg.model.name_or_path), counts, 'h100', 2.5)\n"
        "print(out.table())\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(tmp_path / "hub")}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "full_sft  full_sft     8" in res.stdout


def test_a_sweep_forecasts_each_cell_and_totals_them_all():
    """Each cell is one job as the method forecasts it; the totals count every cell and the evaluation
    scores each cell as a model of its own."""
    methods = [{"name": "sft", "kind": "full_sft", "max_steps": 50}, {"name": "lora", "kind": "lora", "max_steps": 50}]
    plain = fc.forecast(_cfg(methods), LLAMA3_8B, _counts(), "h100", price_per_gpu_hour=2.0)
    swept_cfg = _cfg(methods)
    swept_cfg.sweep = sweep.parse({"seeds": [0, 1, 2], "grid": {"methods.lora.learning_rate": [1e-4, 2e-4]}}, [])
    swept = fc.forecast(swept_cfg, LLAMA3_8B, _counts(), "h100", price_per_gpu_hour=2.0)
    assert [j.runs for j in swept.methods] == [3, 6] and [j.runs for j in plain.methods] == [1, 1]
    for one, many in zip(plain.methods, swept.methods):  # a learning rate or a seed changes no FLOPs
        assert (many.flops, many.wall_s, many.gpu_hours) == (one.flops, one.wall_s, one.gpu_hours)
    assert (plain.evaluation.models, swept.evaluation.models) == (3, 10)
    assert swept.evaluation.flops == pytest.approx(plain.evaluation.flops * 10 / 3)
    by_hand = 3 * swept.methods[0].gpu_hours + 6 * swept.methods[1].gpu_hours + swept.evaluation.gpu_hours
    assert swept.total("gpu_hours") == pytest.approx(by_hand) and swept.total("cost") == pytest.approx(2 * by_hand)
    text = swept.table()
    assert "\nsft x3 " in text and "\nlora x6 " in text and "\nsweep: a job 'x N' runs as N cells" in text
    assert "sweep:" not in plain.table() and "sft x" not in plain.table()


# ---- a forecast before the data is on this machine (issue 22): the split planned from the config's record count


def _data(**kw):
    from launch.spec.config import DataConfig, DataSource

    return DataConfig(train=DataSource(path="nowhere.json", examples=kw.pop("examples", 10000)), **kw)


def test_the_declared_record_count_plans_the_split_as_the_data_would_be_split():
    from launch.questions.data import declared_sizes, eval_size
    from launch.spec.config import DataSource

    assert declared_sizes(_data(eval_fraction=0.1)) == ((9000, 1000), "data.train.examples: 10,000, eval_fraction 0.1")
    assert eval_size(10000, 0.1) == 1000 and eval_size(3, 0.01) == 1 and eval_size(3, 0.99) == 2
    sizes, planned = declared_sizes(_data(eval_fraction=0.2, max_train=500, max_eval=50))
    assert sizes == (500, 50) and planned.endswith(", max_train 500, max_eval 50")
    sizes, why = declared_sizes(_data(examples=None))
    assert sizes is None and why.startswith("data.train.examples: not given -> ") and "=10000" in why
    sizes, why = declared_sizes(_data(eval=DataSource(path="e.json")))
    assert sizes is None and why.startswith("data.eval.examples: not given -> ")
    assert declared_sizes(_data(eval=DataSource(path="e.json", examples=300)))[0] == (10000, 300)


def test_stand_in_tokens_are_the_samples_scaled_to_the_declared_count_and_say_so():
    from launch import SAMPLE_DATA
    from launch.cost.tokencount import StandIn, count_tokens, stand_in_split
    from launch.questions.data import load_questions
    from launch.spec.config import DataSource

    split, why = stand_in_split(_data(eval_fraction=0.1))
    assert why == "" and (len(split.train), len(split.eval)) == (9000, 1000)
    assert all(isinstance(s, StandIn) for s in (split.train, split.eval))
    sample = load_questions(DataSource(path=str(SAMPLE_DATA)))
    assert split.train[len(sample)] is split.train[0] and len(split.train[:3]) == 3
    counts = count_tokens(split.train, split.eval, "no/such-model", 512)
    alone = count_tokens(sample, sample, "no/such-model", 512)
    assert counts.train.examples == 9000 and counts.eval.examples == 1000 and not counts.counted
    assert counts.train.tokens == pytest.approx(alone.train.tokens / len(sample) * 9000)
    assert counts.eval.tokens == pytest.approx(alone.eval.tokens / len(sample) * 1000)
    assert counts.train.mean_context == pytest.approx(alone.train.mean_context)
    assert counts.eval.shared_prefix == alone.eval.shared_prefix
    assert counts.source.startswith(
        "tokens: estimated without the data: 9,000 training and 1,000 evaluation examples from data.train.examples: "
        f"10,000, eval_fraction 0.1 (no duplicates assumed), each as long as the {len(sample)} bundled sample "
        "questions on average (their tokens estimated from characters"
    ), counts.source
    assert stand_in_split(_data(examples=None))[0] is None


def test_a_declared_count_that_differs_from_the_data_is_noted():
    from launch import SAMPLE_DATA
    from launch.questions.data import declared_size_notes, plan_splits
    from launch.spec.config import DataConfig, DataSource

    cfg = DataConfig(train=DataSource(path=str(SAMPLE_DATA), examples=10000), eval_fraction=0.1)
    split = plan_splits(cfg)
    n = split.n_train_all + split.overlap + split.repeats + split.n_eval_all
    assert declared_size_notes(cfg, split) == [
        f"data.train.examples: 10,000, but {str(SAMPLE_DATA)!r} holds {n:,} records; the forecast counted the data "
        f"-> set data.train.examples: {n} (or null)"
    ]
    cfg.train.examples = n
    assert declared_size_notes(cfg, split) == []


def _seed_study_dry_run(tmp_path, capsys, *overrides: str) -> tuple[int, str]:
    from launch import cli

    missing = tmp_path / "CyberMetric-10000-v1.json"  # certainly not here, whatever data/cybermetric holds
    argv = ["submit", str(REPO / "configs" / "llama3-8b-cybermetric.yaml"), "--profile", "example-a100", "--dry-run"]
    rc = cli.main([*argv, f"data.train.path={missing}", *overrides])
    return rc, capsys.readouterr().out


def test_the_seed_study_is_priced_before_its_data_is_fetched(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rc, out = _seed_study_dry_run(tmp_path, capsys)
    assert rc == 2  # the missing file is still a problem: submit would refuse
    assert "data.train.path:" in out and "does not exist" in out
    section = out.split("# ---- cost forecast\n", 1)[1].split("\n# ---- ", 1)[0].splitlines()
    assert section[0].startswith(
        "  cost forecast: a100, peak 312 TFLOP/s per GPU, 2.5 per GPU-hour; tokens: estimated without the data: "
        "9,000 training and 1,000 evaluation examples from data.train.examples: 10,000, eval_fraction 0.1"
    ), section
    rows = {line.split()[0]: line.split() for line in section[3:] if line.strip()}
    assert set(rows) >= {"full_sft", "lora", "qlora", "eval", "total"}
    # The steps of 9,000 training examples, as the training loop counts them (tested above).
    from launch.spec.config import load_config

    cfg = load_config(REPO / "configs" / "llama3-8b-cybermetric.yaml")
    for name in ("full_sft", "lora", "qlora"):
        assert rows[name][3] == f"{fc.total_steps(cfg.method(name), 9000):,}", rows[name]
    assert rows["total"][-1] not in ("?", "-")  # money: every job priced
    assert "not made" not in "\n".join(section)


def test_without_a_declared_count_the_dry_run_says_how_to_forecast_without_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rc, out = _seed_study_dry_run(tmp_path, capsys, "data.train.examples=null")
    assert rc == 2
    section = out.split("# ---- cost forecast\n", 1)[1].split("\n# ---- ", 1)[0]
    assert section.splitlines() == [
        "  cost forecast: not made: the data could not be read (see the problems)",
        "  cost forecast: data.train.examples: not given -> to forecast without the data, give the file's record "
        "count, e.g. data.train.examples=10000",
    ]
