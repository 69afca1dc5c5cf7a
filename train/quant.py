"""4-bit (NF4, double quantisation) loading for QLoRA, with the CPU guard.

The guard: on CPUs with AVX512_BF16, bitsandbytes repacks a ``Linear4bit``
weight into a CPU-specific layout the first time it runs a no-grad forward in
eval mode (an evaluation before training, say). Later training goes through
``gemv_4bit``, which has no autograd kernel: gradients stop flowing through the
frozen base layers and the adapters silently stop learning (only a UserWarning
is printed). Turning ``support_avx512bf16_for_cpu`` off on every ``Linear4bit``
before any forward keeps the autograd-capable path. On GPUs the attribute is
unused, so the guard is harmless there.
"""

from __future__ import annotations

import typing as tp

import torch


def bnb_config(compute_dtype: torch.dtype) -> tp.Any:
    """NF4 with double quantisation, computing in ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def guard_cpu_repacking(model: torch.nn.Module) -> int:
    """Disable bitsandbytes' CPU repacking on every ``Linear4bit``; return how many were guarded."""
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_4bit(name_or_path: str, compute_dtype: torch.dtype, trust_remote_code: bool = False) -> torch.nn.Module:
    """The base model with its linear layers in NF4, guarded, on the GPU if there is one."""
    from transformers import AutoModelForCausalLM

    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        quantization_config=bnb_config(compute_dtype),
        dtype=compute_dtype,
        device_map={"": device},
        trust_remote_code=trust_remote_code,
    )
    if guard_cpu_repacking(model) == 0:
        raise RuntimeError(f"{name_or_path}: no Linear4bit layer after 4-bit loading; is bitsandbytes working?")
    return model
