"""QLoRA on CPU: an eval-mode forward must not break training afterwards.

On CPUs with AVX512_BF16, bitsandbytes repacks 4-bit weights on the first
no-grad eval forward and later backward passes go through a kernel without
autograd: adapters below the top layer get wrong gradients and training stalls
silently. After our loader's guard, LoRA gradients must match a reference
model that holds the dequantised weights in plain float Linear layers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from launch.questions import prompting  # noqa: E402
from launch.spec.config import LoraSettings  # noqa: E402
from train import batches, quant  # noqa: E402
from train.lora import lora_config  # noqa: E402


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _batch(tokenizer) -> dict:
    from launch.questions.data import Question

    qs = [
        Question("Which port does HTTPS use by default?", {"A": "80", "B": "443", "C": "22", "D": "25"}, "B"),
        Question(
            "What is the digest size of SHA-256?",
            {"A": "128 bits", "B": "160 bits", "C": "256 bits", "D": "512 bits"},
            "C",
        ),
    ]
    codec = prompting.AnswerCodec(tokenizer)
    examples = [batches.Example(*prompting.encode_training_example(tokenizer, codec, q, 256)) for q in qs]
    return batches.collate(examples, tokenizer.pad_token_id)


def _qlora_model(path: Path, guard: bool):
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = quant.load_4bit(str(path), torch.float32)
    if not guard:  # undo the guard to show what it prevents
        for m in model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_config(LoraSettings(r=4, alpha=8)))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B so that every adapter gets gradient
            p.data.normal_(0.0, 0.05)
    return model


def _reference(path: Path, qmodel) -> torch.nn.Module:
    """A float model with the dequantised 4-bit weights and the same adapter weights."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    ref_modules = dict(ref.named_modules())
    n = 0
    for name, m in qmodel.base_model.model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).to(torch.float32)
            ref_modules[name.removesuffix(".base_layer")].weight.data.copy_(
                w.reshape(ref_modules[name.removesuffix(".base_layer")].weight.shape)
            )
            n += 1
    assert n > 0
    ref = get_peft_model(ref, lora_config(LoraSettings(r=4, alpha=8)))
    ref.load_state_dict({k: v for k, v in qmodel.state_dict().items() if "lora_" in k}, strict=False)
    return ref


def _lora_grads_after_eval_forward(model, batch) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        model(**batch)  # the trigger: an evaluation before training
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _lora_grads(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _mismatches(got: dict, want: dict) -> list[str]:
    assert got.keys() == want.keys() and len(got) > 0
    return [n for n in got if not torch.allclose(got[n], want[n], rtol=1e-3, atol=1e-6)]


def test_guarded_qlora_gets_correct_gradients_after_an_eval_forward(tiny_model):
    from train.batches import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    batch = _batch(tokenizer)
    model = _qlora_model(tiny_model, guard=True)
    got = _lora_grads_after_eval_forward(model, batch)
    want = _lora_grads(_reference(tiny_model, model), batch)
    zero = [n for n, g in got.items() if float(g.abs().sum()) == 0.0]
    assert not zero, f"adapters without gradient: {zero[:5]}"
    bad = _mismatches(got, want)
    assert not bad, f"{len(bad)} of {len(got)} adapter gradients differ from the dequantised reference, e.g. {bad[:3]}"


@pytest.mark.skipif(not _has_avx512_bf16(), reason="the repacking trap exists only on CPUs with AVX512_BF16")
def test_without_the_guard_the_gradients_are_wrong(tiny_model):
    """The check above can fail: on this CPU, the unguarded model gets wrong adapter gradients."""
    from train.batches import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    batch = _batch(tokenizer)
    model = _qlora_model(tiny_model, guard=False)
    want = _lora_grads(_reference(tiny_model, model), batch)
    got = _lora_grads_after_eval_forward(model, batch)
    assert _mismatches(got, want), "expected the unguarded 4-bit model to get wrong gradients on this CPU"
