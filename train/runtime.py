"""The runtime of a training or evaluation process: device, precision and dtypes, seeding, the accelerator.

Training code reads only the standard torch environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) through accelerate, so the same
``main(cfg, ...)`` runs as one process or as one process per GPU (``torchrun`` or the
launcher), with plain DDP or, when the method names a DeepSpeed JSON, ZeRO-2/3.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import resource
import typing as tp

import torch

from launch.config import MethodConfig


def setup_runtime(seed: int, threads: int | None = None) -> None:
    """Seed every RNG; cap CPU threads (several local jobs share the cores)."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for torch
        pass


def on_gpu() -> bool:
    return torch.cuda.is_available()


def bf16_native() -> bool:
    """Whether this GPU computes bf16 in hardware (Ampere, sm80, or newer); False on CPU.

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (V100, T4),
    many times slower than fp16 or even fp32 there.
    """
    if not on_gpu():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the argument
        return torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for a config precision: bf16 on GPUs with native bf16, fp32 on CPU."""
    if precision == "auto":
        return "bf16" if bf16_native() else "no"
    if precision in ("bf16", "fp16") and not on_gpu():
        return "no"  # CPU autocast would only slow the tiny smoke models down
    return {"fp32": "no"}.get(precision, precision)


def resolve_dtype(dtype: str) -> torch.dtype:
    """Weights dtype for ``from_pretrained``: ``auto`` is bf16 on GPUs with native bf16, else fp32."""
    if dtype == "auto":
        return torch.bfloat16 if bf16_native() else torch.float32
    return getattr(torch, dtype)


def check_bf16(model_dtype: str, precision: str) -> None:
    """Refuse an explicit bf16 on a GPU that would only emulate it, before anything is loaded.

    Raises
    ------
    ValueError
        Naming the fields, the GPU and its compute capability, and what to use instead.
    """
    if not on_gpu() or bf16_native():
        return
    fields = (("precision", precision), ("model.dtype", model_dtype))
    asked = [f"{k}: {v}" for k, v in fields if v in ("bf16", "bfloat16")]
    if not asked:
        return
    major, minor = torch.cuda.get_device_capability()
    raise ValueError(
        f"{' and '.join(asked)}, but {torch.cuda.get_device_name()} (compute capability {major}.{minor}) has no "
        "native bf16 (8.0, Ampere, or newer): torch would emulate it, many times slower -> precision: fp16 or fp32 "
        "and model.dtype: float16, float32 or auto (auto is float32 here), or GPUs of compute capability 8.0+"
    )


def weights_dtype(model_dtype: str, method: MethodConfig) -> torch.dtype:
    """The dtype a method's trainable model is loaded in.

    Full SFT without DeepSpeed loads fp32 master weights and trains them under autocast (bf16/fp16
    as ``precision`` says): accelerate keeps no master copy outside DeepSpeed, and AdamW on bf16
    weights rounds a 1e-5 update of most of them away (bf16 has 8 significant bits). DeepSpeed
    keeps fp32 master partitions itself, and peft keeps adapters in fp32, so the others load in
    ``model.dtype``. The saved model is in ``model.dtype`` either way (:func:`save_consolidated`).
    """
    if method.adapts == "full_sft" and not method.deepspeed:
        return torch.float32
    return resolve_dtype(model_dtype)


def enable_checkpointing(model: tp.Any) -> None:
    """Non-reentrant activation checkpointing on a transformers model, under its current name.

    transformers 5 renamed ``gradient_checkpointing_enable`` (now a deprecated alias that warns)
    to ``activation_checkpointing_enable``; both default to ``use_reentrant=False`` only when given
    no kwargs, so it is passed explicitly.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers before the rename
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# Generous on purpose: while rank 0 prepares the data split, tokenises, or writes a
# multi-GB consolidated checkpoint, the other ranks sit in a barrier, and NCCL's
# watchdog (10 min by default in accelerate) would kill them as hung.
PROCESS_GROUP_TIMEOUT = dt.timedelta(minutes=30)


def world_size() -> int:
    """Processes in this job, from the torch environment (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def ensure_single_process_env() -> None:
    """Give a lone process the torch environment of a 1-process group.

    DeepSpeed always needs a process group. Without ``RANK``/``MASTER_ADDR``
    its own initialisation falls back to MPI discovery; a 1-process group on
    a free local port is what ``torchrun --nproc_per_node 1`` would set up.
    Existing values (from the launcher or torchrun) are kept.
    """
    if "RANK" in os.environ:
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        os.environ.setdefault(key, value)


def deepspeed_plugin(method: MethodConfig) -> tp.Any:
    """accelerate's ``DeepSpeedPlugin`` for ``method.deepspeed`` (a JSON path), or None.

    The JSON holds DeepSpeed settings only; its ``"auto"`` values come from the
    experiment config: accumulation and clipping here, bf16/fp16 from the
    Accelerator's mixed precision, the micro batch from the DataLoader and the
    bucket sizes from the model's hidden size in ``accelerator.prepare``.
    """
    if not method.deepspeed:
        return None
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin(
        hf_ds_config=str(method.deepspeed),
        gradient_accumulation_steps=method.grad_accum_steps,
        gradient_clipping=float(method.max_grad_norm),  # 0 disables clipping, as in train_loop
    )


def skip_deepspeed_shm_build() -> None:
    """Keep DeepSpeed on CPU from JIT-compiling its shared-memory all-reduce op.

    On the CPU accelerator every process-group start builds that op with g++
    (about 45 s on 2 cores, then cached in ~/.cache/torch_extensions) although
    only tensor-parallel inference uses it; training collectives go through
    gloo. DeepSpeed keeps its table of buildable ops in one module-level dict
    whose edits persist, so marking the op unavailable skips the build.
    """
    if on_gpu():
        return
    try:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    except (ImportError, AttributeError, TypeError):  # another DeepSpeed layout: it just builds the op
        pass


def process_group_kwargs() -> tp.Any:
    """Backend and timeout of the process group (gloo on CPU, accelerate's choice on GPU)."""
    from accelerate.utils import InitProcessGroupKwargs

    # On CPU accelerate finds no backend by itself (1.15's _prepare_backend leaves it None), and
    # every rank then believes it is rank 0 of 1, under DeepSpeed too: the backend is named here.
    return InitProcessGroupKwargs(backend="nccl" if on_gpu() else "gloo", timeout=PROCESS_GROUP_TIMEOUT)


def make_accelerator(method: MethodConfig) -> tp.Any:
    """An accelerate ``Accelerator`` for this method: one process, DDP, or DeepSpeed ZeRO.

    Under DeepSpeed it must exist before ``from_pretrained``: it registers
    the DeepSpeed config with transformers (``is_deepspeed_zero3_enabled``),
    so that under ZeRO-3 each rank builds only its shard inside
    ``deepspeed.zero.Init`` instead of the whole model.
    """
    from accelerate import Accelerator

    plugin = deepspeed_plugin(method)
    if plugin is not None:
        ensure_single_process_env()
        skip_deepspeed_shm_build()
    handlers = [process_group_kwargs()] if world_size() > 1 or plugin is not None else []
    return Accelerator(
        # accelerate only turns DeepSpeed on when cpu=False; on a CPU machine
        # DS_ACCELERATOR=cpu (launch/jobs.py) keeps DeepSpeed's tensors on the CPU.
        cpu=not on_gpu() and plugin is None,
        mixed_precision=resolve_precision(method.precision),
        gradient_accumulation_steps=method.grad_accum_steps,
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
    )


def peak_memory() -> tuple[int, str]:
    """Peak memory in bytes: CUDA allocator peak on GPU, else the process's max RSS."""
    if on_gpu():
        return int(torch.cuda.max_memory_allocated()), "cuda"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "rss"


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()  # ZeRO-3 leaves a rank an empty tensor and the size in ds_numel
        if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def runtime_info(method: MethodConfig) -> dict[str, tp.Any]:
    """What this process ran with: usable CPUs (a Slurm task bound to one core shows 1), precision, GPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    info: dict[str, tp.Any] = {"cpu_affinity": cpus, "mixed_precision": resolve_precision(method.precision)}
    if on_gpu():
        major, minor = torch.cuda.get_device_capability()
        info.update(gpu_name=torch.cuda.get_device_name(), gpu_capability=f"{major}.{minor}", bf16_native=bf16_native())
    return info
