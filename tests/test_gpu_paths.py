"""The training and evaluation code paths a GPU takes, exercised on CPU (issue 13, review items A1, B1, B2,
C1, C2, C4, C5): fp32 master weights, the varlen attention path, bf16 checks, checkpointing, letter scores,
host syncs and progress writes.

Where a path only runs on CUDA, the CUDA-only piece is replaced by a CPU stand-in with the same contract
(torch's ``varlen_attn`` signature, ``torch.cuda``'s capability queries); ``make gpu-check``
(bench/gpu_check.py) runs the real thing on a GPU. About 60 s on 2 cores.
"""

from __future__ import annotations

import importlib
import json
import os
import typing as tp
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from launch.jobs import ENTRYPOINTS
from launch.questions import prompting
from launch.questions.data import load_questions
from launch.spec.config import DataSource
from launch.store.expdir import ExperimentDir, MethodDir, Progress
from support.experiments import new_experiment
from train import loop, packing, runtime, scoring
from train.batches import collate
from train.tiny_model import DEFAULT_DATA

REPO = Path(__file__).resolve().parents[1]


def make_experiment(tmp_path: Path, tiny_model: Path, *extra: str) -> tuple[tp.Any, ExperimentDir]:
    overrides = [
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
        "tracking.backend=none",
        "data.max_train=48",
        "data.max_eval=8",
        *extra,
    ]
    return new_experiment(overrides)


def train_capturing(cfg: tp.Any, exp_dir: ExperimentDir, kind: str) -> tuple[dict, loop.TrainResult]:
    """Run ``kind``'s entrypoint; return its metrics and the loop's result (the trained model in memory)."""
    seen: list[loop.TrainResult] = []
    real = loop.train_loop

    def capturing(*a: tp.Any, **k: tp.Any) -> loop.TrainResult:
        seen.append(real(*a, **k))
        return seen[-1]

    loop.train_loop = capturing
    try:
        metrics = importlib.import_module(ENTRYPOINTS[kind]).main(cfg, kind, exp_dir, threads=1)
    finally:
        loop.train_loop = real
    return metrics, seen[0]


# --------------------------------------------------------------------------- A1: fp32 master weights


@pytest.fixture
def bf16_accelerator_state():
    """accelerate keeps one AcceleratorState per process: an earlier in-process run's (fp32, e.g.
    test_architectures') would refuse bf16, and the bf16 run's must not reach later tests."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_full_sft_without_deepspeed_keeps_fp32_master_weights(
    tmp_path, tiny_model, monkeypatch, bf16_accelerator_state
):
    """model.dtype bfloat16, precision bf16, lr 1e-5, no DeepSpeed: every update must land in the weights.

    The GPU path is forced on CPU (accelerate's bf16 autocast, the CPU shown as one with AMX-BF16: an
    explicit bf16 is refused on a CPU without bf16 units). The old code loaded bf16 weights and let
    AdamW update them in bf16, where a 1e-5 step is below the rounding of most weights: they stayed as
    they were and the run "completed".
    """
    units = {"amx_bf16": True, "avx512_bf16": True, "mkldnn_bf16": True}
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: units)
    cfg, exp_dir = make_experiment(
        tmp_path,
        tiny_model,
        "model.dtype=bfloat16",
        "methods.full_sft.precision=bf16",
        "methods.full_sft.learning_rate=1e-5",
        "methods.full_sft.max_steps=8",
        "methods.full_sft.micro_batch_size=6",
        "methods.full_sft.warmup_ratio=0",
    )
    metrics, result = train_capturing(cfg, exp_dir, "full_sft")
    from transformers import AutoModelForCausalLM

    before = dict(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).named_parameters())
    trained = dict(result.model.named_parameters())
    layers = [n for n in trained if ".layers." in n and n.endswith("proj.weight")]
    changed = sum(int((trained[n].float() != before[n].to(trained[n].dtype).float()).sum()) for n in layers)
    total = sum(trained[n].numel() for n in layers)
    print(f"changed {changed / total:.4f} of {total} projection weights")
    assert changed / total > 0.95
    assert all(p.dtype == torch.float32 for p in trained.values())
    assert metrics["mixed_precision"] == "bf16" and metrics["trainable_dtype"] == "torch.float32"
    assert metrics["precision"] == "bf16" and metrics["cpu_flags"] == units
    # Saved in model.dtype (what the evaluation loads), not as the fp32 masters.
    from safetensors import safe_open

    with safe_open(str(exp_dir.method("full_sft").model_dir / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    saved = json.loads((exp_dir.method("full_sft").model_dir / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"


def test_weights_dtype_by_method():
    from launch.spec.config import MethodConfig

    assert runtime.weights_dtype("bfloat16", MethodConfig(kind="full_sft")) == torch.float32
    zero2 = MethodConfig(kind="full_sft", deepspeed="ds_configs/zero2.json")
    assert runtime.weights_dtype("bfloat16", zero2) == torch.bfloat16
    assert runtime.weights_dtype("bfloat16", MethodConfig(kind="lora")) == torch.bfloat16


# --------------------------------------------------------------------------- B2, C5: metrics, syncs, progress writes


def test_progress_json_is_throttled_and_metrics_record_the_cpus(tmp_path, tiny_model, monkeypatch):
    cfg, exp_dir = make_experiment(
        tmp_path, tiny_model, "methods.full_sft.max_steps=6", "methods.full_sft.micro_batch_size=4"
    )
    writes: list[dict] = []
    real = MethodDir.write_progress

    def recording(paths: MethodDir, progress: Progress) -> None:
        writes.append(progress.to_dict())
        real(paths, progress)

    monkeypatch.setattr(MethodDir, "write_progress", recording)
    monkeypatch.setenv("CYBERFT_PROGRESS_EVERY_S", "3600")
    metrics, _ = train_capturing(cfg, exp_dir, "full_sft")
    assert [w["step"] for w in writes] == [1, 6]  # the first and the last step (the old loop wrote all 6)
    assert metrics["cpu_affinity"] == len(os.sched_getaffinity(0)) and metrics["mixed_precision"] == "no"

    cfg, exp_dir = make_experiment(
        tmp_path / "again", tiny_model, "methods.full_sft.max_steps=3", "methods.full_sft.micro_batch_size=4"
    )
    writes.clear()
    monkeypatch.setenv("CYBERFT_PROGRESS_EVERY_S", "0")
    train_capturing(cfg, exp_dir, "full_sft")
    assert [w["step"] for w in writes] == [1, 2, 3]


def test_step_stats_packs_loss_and_flags():
    class One:
        num_processes = 1

    assert loop.step_stats(One(), torch.tensor(2.5), False, True) == (2.5, False, True)


# --------------------------------------------------------------------------- C1: bf16 only where it is native


@pytest.fixture
def v100(monkeypatch):
    """torch.cuda as a V100 (compute capability 7.0: bf16 only emulated) shows it."""
    monkeypatch.setattr(runtime, "on_gpu", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")


def test_auto_precision_is_fp32_on_a_gpu_that_only_emulates_bf16(v100):
    assert runtime.resolve_precision("auto") == "no" and runtime.resolve_dtype("auto") == torch.float32
    assert runtime.resolve_precision("fp16") == "fp16"


def test_explicit_bf16_on_a_gpu_that_only_emulates_it_is_refused(v100):
    runtime.check_bf16("auto", "auto")
    runtime.check_bf16("float16", "fp16")
    with pytest.raises(ValueError) as err:
        runtime.check_bf16("bfloat16", "bf16")
    text = str(err.value)
    assert text.startswith(
        "precision: bf16 and model.dtype: bfloat16, but Tesla V100-SXM2-32GB (compute capability 7.0)"
    )
    assert "-> precision: fp16 or fp32" in text


# --------------------------------------------------------------------------- C2: checkpointing


@pytest.mark.parametrize("kind", ["full_sft", "lora", "qlora"])
def test_checkpointing_is_non_reentrant_and_uses_the_current_api(tmp_path, tiny_model, kind):
    """peft's prepare_model_for_kbit_training enabled QLoRA's checkpointing with empty kwargs, so torch fell
    back to the reentrant implementation (with a warning); LoRA and full SFT called the deprecated name."""
    cfg, exp_dir = make_experiment(
        tmp_path,
        tiny_model,
        f"methods.{kind}.max_steps=2",
        f"methods.{kind}.micro_batch_size=4",
        f"methods.{kind}.gradient_checkpointing=true",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, result = train_capturing(cfg, exp_dir, kind)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "use_reentrant" in m or "gradient_checkpointing_enable" in m], messages
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in result.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(m.gradient_checkpointing for m in layers)
    assert {m._gradient_checkpointing_func.keywords.get("use_reentrant") for m in layers} == {False}


# --------------------------------------------------------------------------- B1: varlen attention


def fake_varlen_attn(
    query,
    key,
    value,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """torch's ``varlen_attn`` contract computed on CPU another way: one masked attention over the whole row.

    (tokens, heads, head_dim) in and out; causal only for ``window_size == (-1, 0)``, as torch decides it.
    """
    assert cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k)
    assert max_q == max_k == int(cu_seq_q.diff().max())
    n = query.shape[0]
    segment = torch.searchsorted(cu_seq_q[1:].long(), torch.arange(n), right=True)
    mask = segment[:, None] == segment[None, :]
    if window_size == (-1, 0):
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    q, k, v = (t.transpose(0, 1)[None] for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=enable_gqa)
    return out[0].transpose(0, 1)


def older_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
    """torch 2.10's signature: ``is_causal``; no ``window_size``, ``scale`` or ``enable_gqa`` (K/V heads must match)."""
    assert key.shape[1] == query.shape[1], "older varlen_attn needs repeated K/V heads"
    return fake_varlen_attn(
        query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, window_size=(-1, 0) if is_causal else (-1, -1)
    )


def fresh_model(tiny_model: Path) -> tp.Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").train()


def packed_loss_and_grads(model: tp.Any, batch: dict) -> tuple[float, torch.Tensor]:
    with packing.padding_free_attention(model) as active:
        assert active
        loss = packing.answer_loss(model, batch)
        loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return float(loss.detach()), grads


@pytest.mark.parametrize(
    "kernel", [fake_varlen_attn, older_varlen_attn], ids=["torch-2.13-signature", "torch-2.10-signature"]
)
def test_packed_attention_through_the_varlen_kernel_equals_the_per_example_loop(
    tiny_model, examples, tok, monkeypatch, kernel
):
    batch = packing.collate_packed(examples[:8], tok.pad_token_id)
    loop_loss, loop_grads = packed_loss_and_grads(fresh_model(tiny_model), batch)

    calls = []
    monkeypatch.setattr(packing, "varlen_kernel", lambda device, dtype: calls.append(dtype) or kernel)
    # The kernel path takes the example boundaries from the batch: no per-forward host sync on position ids.
    monkeypatch.setattr(packing, "segment_bounds", lambda *a: pytest.fail("segment_bounds called on the varlen path"))
    model = fresh_model(tiny_model)
    varlen_loss, varlen_grads = packed_loss_and_grads(model, batch)
    assert len(calls) == model.config.num_hidden_layers  # once per layer, one call per packed row
    assert abs(varlen_loss - loop_loss) <= 1e-5, (varlen_loss, loop_loss)
    scale = float(loop_grads.abs().max())
    assert float((varlen_grads - loop_grads).abs().max()) <= 1e-5 * max(scale, 1.0)
    # And both are the per-example reference: each example alone, token-weighted.
    reference_model = fresh_model(tiny_model).eval()
    total, n = 0.0, 0
    for e in examples[:8]:
        k = sum(label != -100 for label in e.labels[1:])
        with torch.no_grad():
            total += float(reference_model(**collate([e], tok.pad_token_id)).loss) * k
        n += k
    assert abs(varlen_loss - total / n) <= 1e-5


def test_a_wrong_causal_flag_would_be_caught(tiny_model, examples, tok, monkeypatch):
    """The stand-in honours window_size: a kernel called without causality changes the loss (so the test above
    would see a layout that lost it)."""
    batch = packing.collate_packed(examples[:4], tok.pad_token_id)

    def non_causal(
        query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False
    ):
        return fake_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale, enable_gqa=enable_gqa)

    monkeypatch.setattr(packing, "varlen_kernel", lambda device, dtype: non_causal)
    model = fresh_model(tiny_model)
    with torch.no_grad(), packing.padding_free_attention(model):
        wrong = float(packing.answer_loss(model, batch))
    monkeypatch.setattr(packing, "varlen_kernel", lambda device, dtype: None)
    with torch.no_grad(), packing.padding_free_attention(model):
        right = float(packing.answer_loss(model, batch))
    assert abs(wrong - right) > 1e-3


def test_varlen_kernel_is_used_only_on_cuda_in_16_bit():
    assert packing.varlen_kernel(torch.device("cpu"), torch.bfloat16) is None
    assert packing.varlen_kernel(torch.device("cpu"), torch.float32) is None
    assert packing.varlen_kernel(torch.device("cuda", 0), torch.float32) is None  # no fp32 flash kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert packing.compute_dtype(torch.zeros(1)) == torch.bfloat16  # what the kernel would be given
    assert packing.compute_dtype(torch.zeros(1)) == torch.float32


# --------------------------------------------------------------------------- C4: letter scores in fp32


@pytest.fixture
def bf16_model_and_questions(tiny_model, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(60)  # logits of tens, like a trained model's: bf16 steps of 0.125-0.25 there
    questions = load_questions(DataSource(path=str(DEFAULT_DATA)))[::40][:8]
    return model, questions


def test_letter_scores_are_projected_in_fp32(bf16_model_and_questions, tok):
    model, questions = bf16_model_and_questions
    codec = prompting.AnswerCodec(tok)
    cols = [codec.letter_ids[k][0] for k in "ABCD"]
    got = scoring.score_loglik(model, tok, questions, batch_size=1, max_len=256, progress=False, share_prefix=False)
    for q, g in zip(questions, got):
        context = prompting.scoring_context(tok, codec, q, 256)
        batch = scoring.left_pad([context], tok.pad_token_id, torch.device("cpu"))
        with torch.no_grad():
            hidden = model.model(**batch, use_cache=False).last_hidden_state[:, -1]
            lse = torch.logsumexp(model.lm_head(hidden).float(), dim=-1)
        want = (hidden.float() @ model.lm_head.weight[cols].float().T - lse[:, None])[0]
        assert [g["logprobs"][k] for k in "ABCD"] == pytest.approx(want.tolist(), abs=1e-4)
        assert float(lse.abs().max()) > 8  # large logits: the bf16 ones would be off by up to 0.06 here


def test_tied_letters_are_counted(bf16_model_and_questions, tok):
    model, questions = bf16_model_and_questions
    codec = prompting.AnswerCodec(tok)
    rows_of = [codec.letter_ids[k][0] for k in "ABCD"]
    before = scoring.score_loglik(model, tok, questions, batch_size=4, max_len=256, progress=False)
    with torch.no_grad():
        for r in rows_of[1:]:
            model.lm_head.weight[r] = model.lm_head.weight[rows_of[0]]  # the 4 letters score the same everywhere
    rows = scoring.score_loglik(model, tok, questions, batch_size=4, max_len=256, progress=False)
    assert not any(r["tie"] for r in before)
    assert all(r["tie"] and r["pred"] == "A" for r in rows), rows
    assert scoring.count_ties([0.5, 0.5, 0.1, 0.5]) == 3 and scoring.count_ties([1.0, 0.5, 0.1, 0.2]) == 1
