"""The per-GPU memory estimate: shapes, bytes per parameter, DeepSpeed's formula, the fit check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.cost.memory import (
    BUILTIN_SHAPES,
    GB,
    ModelShape,
    estimate,
    fit_problems,
    fitting_alternatives,
    model_shape,
    read_zero,
    shape_summary,
    usable_gb,
)
from launch.spec.config import LoraSettings, MethodConfig, Resources, load_config

REPO = Path(__file__).resolve().parents[1]
LLAMA3_8B = "meta-llama/Meta-Llama-3-8B-Instruct"


@pytest.fixture
def no_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so the user's real cache never decides a test."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))


@pytest.fixture
def shape8b(no_hf_cache) -> ModelShape:
    shape = model_shape(LLAMA3_8B)
    assert shape is not None and shape.source == f"builtin:{LLAMA3_8B}"
    return shape


@pytest.fixture
def seed_config(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return load_config(repo / "configs" / "llama3-8b-cybermetric.yaml", ["data.train.path=data/sample/cyber_mcq.json"])


def full_sft(deepspeed: str | None = None, nodes: int = 1, gpus: int = 1, **kw) -> MethodConfig:
    kw.setdefault("precision", "bf16")
    kw.setdefault("gradient_checkpointing", True)
    return MethodConfig(
        name="full_sft",
        kind="full_sft",
        deepspeed=deepspeed,
        resources=Resources(nodes=nodes, gpus_per_node=gpus),
        **kw,
    )


# --------------------------------------------------------------------------- shapes and parameter counts


def test_llama3_8b_params_from_the_builtin_table(shape8b):
    assert abs(shape8b.n_params - 8.03e9) / 8.03e9 < 0.01
    assert shape8b.n_params == 8_030_261_248  # the published parameter count
    assert shape8b.largest_layer_params == 128256 * 4096  # embedding / lm_head
    assert "8.03B params" in shape_summary(shape8b)


@pytest.mark.parametrize(
    "name,n",
    [
        ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
        ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
        ("meta-llama/Meta-Llama-3-70B", 70_553_706_496),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", 8_030_261_248),
        ("meta-llama/Llama-3.2-1B", 1_235_814_400),
    ],
)
def test_builtin_param_counts_match_the_published_ones(name, n, no_hf_cache):
    assert model_shape(name).n_params == n


def test_every_builtin_is_consistent():
    for name, (h, layers, vocab, inter, heads, kv, _tie) in BUILTIN_SHAPES.items():
        assert h % heads == 0 and heads % kv == 0 and layers > 0 and vocab > 0 and inter > h, name


def test_tiny_model_params_equal_torch_count(tiny_model):
    """The shape read from the tiny model's config.json counts exactly what torch counts (tied: once)."""
    from transformers import AutoModelForCausalLM

    shape = model_shape(str(tiny_model))
    assert shape is not None and shape.source == str(tiny_model / "config.json")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert shape.tie_embeddings
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert shape.largest_layer_params == largest  # as DeepSpeed's *_all_live estimators compute it


# --------------------------------------------------------------------------- model_shape lookup


def _config(**kw) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "vocab_size": 1000,
        "intermediate_size": 512,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
    }
    cfg.update(kw)
    return cfg


def test_model_shape_reads_a_local_config(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(_config()))
    shape = model_shape(str(d))
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size, shape.intermediate_size) == (256, 3, 1000, 512)
    assert (shape.num_heads, shape.num_kv_heads, shape.tie_embeddings) == (8, 2, False)
    assert shape.source == str(d / "config.json")
    layer = 256 * 256 * 2 + 2 * 256 * 64 + 3 * 256 * 512 + 2 * 256
    assert shape.n_params == 2 * 1000 * 256 + 3 * layer + 256
    # A directory without a Llama-style config, and a local path that does not exist: unknown.
    (d / "config.json").write_text(json.dumps({"n_embd": 768}))
    assert model_shape(str(d)) is None
    (d / "config.json").write_text(json.dumps(_config(num_local_experts=8)))  # MoE: not Llama-dense
    assert model_shape(str(d)) is None
    assert model_shape(str(tmp_path / "missing" / "model")) is None


def test_model_shape_reads_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(_config(num_hidden_layers=5)))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    shape = model_shape("acme/tiny-llama")
    assert shape.num_layers == 5 and shape.source.endswith("snapshots/abc123/config.json")
    # The cache wins over the built-in table (it is what from_pretrained would load).
    ll = tmp_path / "hub" / "models--meta-llama--Meta-Llama-3-8B" / "snapshots" / "x"
    ll.mkdir(parents=True)
    (ll / "config.json").write_text(json.dumps(_config(hidden_size=512)))
    assert model_shape("meta-llama/Meta-Llama-3-8B").hidden_size == 512


def test_model_shape_builtin_and_unknown(no_hf_cache):
    shape = model_shape("meta-llama/Meta-Llama-3-8B-Instruct")
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size, shape.intermediate_size) == (4096, 32, 128256, 14336)
    assert (shape.num_heads, shape.num_kv_heads, shape.tie_embeddings) == (32, 8, False)
    assert model_shape("meta-llama/meta-llama-3-8b-instruct") == shape  # hub names are case-insensitive
    assert model_shape("acme/not-a-known-model") is None
    assert model_shape("not-a-known-model") is None


# --------------------------------------------------------------------------- DeepSpeed's own formula


def _deepspeed_estimators(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # for this test only: DeepSpeed reads it when imported
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    from deepspeed.runtime.zero import stage_1_and_2

    return stage3.estimate_zero3_model_states_mem_needs, getattr(
        stage_1_and_2, "estimate_zero2_model_states_mem_needs", None
    )


def test_acceptance_8b_zero3_on_16_gpus_matches_deepspeed(shape8b, seed_config, monkeypatch):
    """Model states of full SFT with ZeRO-3 on 2 nodes x 8 (the seed study's first plan) within 15% of DeepSpeed's."""
    method = full_sft("ds_configs/zero3.json", nodes=2, gpus=8, micro_batch_size=4)
    est = estimate(shape8b, method, seed_config.model.max_seq_len, REPO)
    assert (est.zero_stage, est.offload_optimizer, est.offload_params, est.world_size) == (3, False, False, 16)

    zero3, _ = _deepspeed_estimators(monkeypatch)
    _, gpu_bytes, _ = zero3(
        total_params=shape8b.n_params,
        largest_layer_params=shape8b.largest_layer_params,
        num_gpus_per_node=8,
        num_nodes=2,
        cpu_offload=False,
        cpu_offload_params=False,
        zero_init=True,
    )
    theirs = gpu_bytes / GB
    print(
        f"\n8B ZeRO-3 on 16 GPUs, model states per GPU: ours {est.model_states_gb:.2f} GB, DeepSpeed {theirs:.2f} GB "
        f"(ratio {est.model_states_gb / theirs:.3f}); total with activations and overhead {est.total_gb:.2f} GB"
    )
    assert abs(est.model_states_gb - theirs) / theirs < 0.15


def test_8b_zero2_on_16_gpus_matches_deepspeed(shape8b, monkeypatch):
    _, zero2 = _deepspeed_estimators(monkeypatch)
    if zero2 is None:
        pytest.skip("this DeepSpeed has no estimate_zero2_model_states_mem_needs")
    est = estimate(shape8b, full_sft("ds_configs/zero2.json", nodes=2, gpus=8), 512, REPO)
    assert est.zero_stage == 2
    _, gpu_bytes = zero2(total_params=shape8b.n_params, num_gpus_per_node=8, num_nodes=2, cpu_offload=False)
    theirs = gpu_bytes / GB
    print(
        f"\n8B ZeRO-2 on 16 GPUs, model states per GPU: ours {est.model_states_gb:.2f} GB, DeepSpeed {theirs:.2f} GB "
        f"(ratio {est.model_states_gb / theirs:.3f})"
    )
    assert abs(est.model_states_gb - theirs) / theirs < 0.15


# --------------------------------------------------------------------------- orderings


def _ds_json(tmp_path: Path, stage: int) -> str:
    p = tmp_path / f"zero{stage}.json"
    p.write_text(json.dumps({"zero_optimization": {"stage": stage}}))
    return str(p)


def test_zero_stages_order_and_partition(shape8b, tmp_path):
    totals = {}
    for stage in (0, 1, 2, 3):
        est = estimate(shape8b, full_sft(_ds_json(tmp_path, stage), nodes=2, gpus=8), 512)
        assert est.zero_stage == stage
        totals[stage] = est
    assert totals[3].total_gb < totals[2].total_gb < totals[1].total_gb < totals[0].total_gb
    P, n = shape8b.n_params, 16
    assert totals[0].model_states_gb == pytest.approx(16 * P / GB)  # 2 + 2 + 12 B, nothing partitioned
    assert totals[1].optimizer_gb == pytest.approx(12 * P / n / GB)
    assert totals[2].grads_gb == pytest.approx(2 * P / n / GB)
    assert totals[3].weights_gb == pytest.approx((2 * P / n + 2 * shape8b.largest_layer_params) / GB)
    no_ds = estimate(shape8b, full_sft(None, nodes=2, gpus=8), 512)
    # fp32 master weights under autocast (4 + a 2-byte cast copy), fp32 grads and their DDP bucket copy, Adam m and v
    assert no_ds.zero_stage is None
    assert (no_ds.weights_gb, no_ds.grads_gb, no_ds.optimizer_gb) == pytest.approx((6 * P / GB, 8 * P / GB, 8 * P / GB))


def test_fp32_doubles_weights_and_grads(shape8b):
    mixed = estimate(shape8b, full_sft("ds_configs/zero2.json"), 512, REPO)
    fp32 = estimate(shape8b, full_sft("ds_configs/zero2.json", precision="fp32"), 512, REPO)
    assert fp32.weights_gb == pytest.approx(2 * mixed.weights_gb)
    assert fp32.grads_gb == pytest.approx(2 * mixed.grads_gb)
    assert fp32.optimizer_gb == pytest.approx(mixed.optimizer_gb * 8 / 12)  # m, v; no separate master copy


def test_offload_reduces_gpu_memory(shape8b):
    on = estimate(shape8b, full_sft("ds_configs/zero3_offload.json", nodes=2, gpus=8), 512, REPO)
    off = estimate(shape8b, full_sft("ds_configs/zero3.json", nodes=2, gpus=8), 512, REPO)
    assert on.offload_optimizer and on.offload_params and not off.offload_optimizer
    assert on.total_gb < off.total_gb and on.optimizer_gb == 0
    assert on.weights_gb == pytest.approx(2 * shape8b.largest_layer_params / GB)  # only the gathered module
    assert on.offloaded_gb > 0 == off.offloaded_gb
    assert "ZeRO-3 with CPU offload (optimizer, params)" in on.line()


def test_qlora_below_lora_below_full_sft(shape8b):
    lora = LoraSettings(r=16, dropout=0.0)
    common = dict(precision="bf16", micro_batch_size=4, gradient_checkpointing=True, lora=lora, resources=Resources())
    est = {k: estimate(shape8b, MethodConfig(name=k, kind=k, **common), 512) for k in ("full_sft", "lora", "qlora")}
    assert est["qlora"].total_gb < est["lora"].total_gb < est["full_sft"].total_gb
    # Adapters on all 7 projections, r=16: 41.9M parameters, at 16 B each.
    assert est["lora"].trainable_params == 41_943_040
    assert est["lora"].grads_gb + est["lora"].optimizer_gb == pytest.approx(12 * 41_943_040 / GB)
    assert est["full_sft"].trainable_params == shape8b.n_params
    assert est["qlora"].weights_gb < est["lora"].weights_gb / 2 + 4.0  # 4-bit linears, fp32 embeddings


def test_gradient_checkpointing_reduces_activations(shape8b):
    with_ckpt = estimate(shape8b, full_sft(gradient_checkpointing=True), 512)
    without = estimate(shape8b, full_sft(gradient_checkpointing=False), 512)
    assert with_ckpt.activations_gb < without.activations_gb / 3
    assert with_ckpt.model_states_gb == without.model_states_gb
    bigger = estimate(shape8b, full_sft(gradient_checkpointing=False, micro_batch_size=8), 512)
    assert bigger.activations_gb == pytest.approx(2 * without.activations_gb)


def test_read_zero_of_shipped_configs():
    assert (read_zero("ds_configs/zero2.json", REPO).stage, read_zero("ds_configs/zero3.json", REPO).stage) == (2, 3)
    z = read_zero("ds_configs/zero3_offload.json", REPO)
    assert (z.stage, z.offload_optimizer, z.offload_params) == (3, True, True)
    with pytest.raises(ValueError, match="cannot be read"):
        read_zero("ds_configs/nope.json", REPO)


def test_line_names_the_parts(shape8b, seed_config):
    est = estimate(shape8b, seed_config.method("full_sft"), 512, REPO)
    line = est.line()
    assert line.startswith("full_sft: ") and "GB/GPU (weights " in line and line.endswith("on 8 GPUs, ZeRO-2")


# --------------------------------------------------------------------------- fit check


def test_seed_study_plans_fit_on_80gb(shape8b, seed_config):
    for m in seed_config.methods:
        est = estimate(shape8b, m, seed_config.model.max_seq_len, REPO)
        assert fit_problems(est, 80, m) == [], est.line()


def test_8b_full_sft_without_deepspeed_on_one_80gb_gpu_is_refused(shape8b):
    method = full_sft(None, micro_batch_size=4)
    est = estimate(shape8b, method, 512, REPO)
    problems = fit_problems(est, 80, method)
    assert len(problems) == 1
    msg = problems[0]
    print("\n" + msg)
    assert msg.startswith("methods.full_sft.resources: does not fit in GPU memory (needs ")
    assert f"needs {est.total_gb:.1f} GB per GPU of 80 GB" in msg
    assert f"optimizer {est.optimizer_gb:.1f}" in msg and "on 1 GPU" in msg
    found = fitting_alternatives(est, 80, method)
    assert found, msg
    texts = [t for t, _ in found]
    assert any("zero3_offload.json" in t for t in texts)
    assert any(t.startswith("kind: qlora") for t in texts) and any(t.startswith("kind: lora") for t in texts)
    for text, alt in found:
        assert text in msg
        assert alt.total_gb <= usable_gb(80), text
        assert f"{alt.total_gb:.1f} GB" in text


def test_more_gpus_fix_uses_the_site_node_size(shape8b):
    method = full_sft(None)
    est = estimate(shape8b, method, 512, REPO)
    texts = [t for t, _ in fitting_alternatives(est, 40, method, gpus_per_node_max=8)]
    more = [t for t in texts if "more GPUs" in t]
    assert more and "deepspeed: ds_configs/zero3.json and more GPUs: 1 node x " in more[0]


def test_more_gpus_fixes_stay_within_the_site_node_limit(shape8b):
    """A site whose jobs may use at most 2 nodes is never told to use 3."""
    import re

    method = full_sft("ds_configs/zero3.json", nodes=1, gpus=2, micro_batch_size=8)
    est = estimate(shape8b, method, 512, REPO)
    unlimited = [t for t, _ in fitting_alternatives(est, 24, method, gpus_per_node_max=2)]
    limited = [t for t, _ in fitting_alternatives(est, 24, method, gpus_per_node_max=2, max_nodes=2)]

    def nodes(texts: list[str]) -> list[int]:
        return [int(m.group(1)) for t in texts for m in [re.search(r"more GPUs: (\d+) node", t)] if m]

    assert nodes(unlimited) and max(nodes(unlimited)) > 2, unlimited
    assert nodes(limited) == [n for n in nodes(unlimited) if n <= 2]
    assert all(n <= 2 for n in nodes(limited))


def test_70b_full_sft_on_one_16gb_gpu_lists_only_fixes_that_fit(no_hf_cache):
    shape = model_shape("meta-llama/Meta-Llama-3-70B-Instruct")
    for gpus_max in (None, 8):
        method = full_sft("ds_configs/zero3.json")
        est = estimate(shape, method, 512, REPO)
        problems = fit_problems(est, 16, method, gpus_per_node_max=gpus_max)
        assert len(problems) == 1
        print("\n" + problems[0])
        found = fitting_alternatives(est, 16, method, gpus_per_node_max=gpus_max)
        for text, alt in found:
            assert alt.total_gb <= usable_gb(16), text
            assert alt.offloaded_gb <= 256, text
        if not found:
            assert "nothing tried fits on 16 GB GPUs" in problems[0]
    assert (
        "nothing tried fits"
        in fit_problems(
            estimate(shape, full_sft("ds_configs/zero3.json"), 512, REPO), 16, full_sft("ds_configs/zero3.json")
        )[0]
    )


def test_cpu_runs_are_not_checked(shape8b):
    method = full_sft(None, gpus=0)
    assert fit_problems(estimate(shape8b, method, 512), 16, method) == []


# --------------------------------------------------------------------------- login node


def test_importing_launch_memory_loads_no_torch():
    code = (
        "import sys\n"
        "from launch.spec.config import MethodConfig\n"
        "from launch.cost.memory import model_shape, estimate, fit_problems\n"
        "s = model_shape('meta-llama/Meta-Llama-3-8B')\n"
        "m = MethodConfig(name='x', kind='full_sft')\n"
        "fit_problems(estimate(s, m, 512), 16, m)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "               {'torch', 'transformers', 'peft', 'deepspeed', 'bitsandbytes', 'accelerate'})\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, HF_HOME=str(REPO / "nonexistent-hf-home"))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stdout.strip().endswith("[]")
