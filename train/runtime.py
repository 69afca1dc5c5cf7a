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
from dataclasses import dataclass

import torch

from launch.spec.config import MethodConfig
from launch.store.expdir import CPU_BF16_MIN_PARAMS


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


@dataclass(frozen=True)
class Precision:
    """The precision a job computes in, and why: what ``precision: auto`` became, or the explicit value.

    ``used`` is ``fp32``, ``bf16`` or ``fp16``: an explicit value is used as asked or refused
    (:func:`decide_precision`), never swapped. ``cpu_flags``: the bf16 features torch saw (CPU only).
    """

    asked: str
    used: str
    reason: str
    cpu_flags: dict[str, bool] | None = None

    @property
    def mixed_precision(self) -> str:
        """accelerate's ``mixed_precision``: ``no`` for fp32, else autocast to ``used``."""
        return "no" if self.used == "fp32" else self.used

    def line(self) -> str:
        return f"precision: {self.used} (asked {self.asked}: {self.reason})"

    def record(self) -> dict[str, tp.Any]:
        """What ``metrics.json`` and the W&B config keep of it."""
        out = {"mixed_precision": self.mixed_precision, "precision": self.used, "precision_reason": self.reason}
        return {**out, "cpu_flags": self.cpu_flags} if self.cpu_flags is not None else out


def cpu_bf16_flags() -> dict[str, bool]:
    """The CPU's bf16 features as torch sees them.

    ``amx_bf16`` and ``avx512_bf16`` from ``torch.cpu.get_capabilities()`` (cpuinfo, torch 2.9+; older:
    ``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported``), and ``mkldnn_bf16``:
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, whether oneDNN runs bf16 at all (it says yes on any
    AVX512BW CPU, emulating the products where neither unit exists, so it is not enough alone).
    """
    if hasattr(torch.cpu, "get_capabilities"):
        flags = {f: bool(torch.cpu.get_capabilities().get(f, False)) for f in ("amx_bf16", "avx512_bf16")}
    else:  # torch before get_capabilities
        flags = {"amx_bf16": torch.cpu._is_amx_tile_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}
    try:
        flags["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        flags["mkldnn_bf16"] = False
    return flags


def cpu_bf16_native(flags: tp.Mapping[str, bool] | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: AMX-BF16 or AVX512-BF16, through oneDNN."""
    flags = cpu_bf16_flags() if flags is None else flags
    return bool(flags.get("mkldnn_bf16") and (flags.get("amx_bf16") or flags.get("avx512_bf16")))


def _flags_text(flags: tp.Mapping[str, bool]) -> str:
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())


EMULATED_BF16_COST = (
    "1.9x slower than fp32 for a LoRA step and 2.3-2.5x for scoring on a 2-core AVX2 EPYC at 64 tokens a row, "
    "a 2 x 128-token LoRA step 20-30x slower (bench/bench_cpu_precision.py)"
)
"""What emulated bf16 cost where it was measured (bench/bench_cpu_precision.py): why it is refused."""


def decide_precision(
    method: MethodConfig, n_params: tp.Callable[[], int | None] = lambda: None, field: str = ""
) -> Precision:
    """The precision ``method`` trains in here: ``auto`` resolved, an explicit value kept or refused.

    GPU: ``auto`` is bf16 where it is native (:func:`bf16_native`), else fp32; an explicit value is kept
    (:func:`check_bf16` refuses emulated bf16 first). CPU: ``auto`` is bf16 when the CPU has bf16 matrix
    units (:func:`cpu_bf16_native`), the job runs without DeepSpeed (its CPU bf16 path is untested) and the
    model has :data:`CPU_BF16_MIN_PARAMS` parameters or more (``n_params``, asked only then), else fp32.
    fp32 weights train under autocast as on GPUs (full SFT's masters, LoRA's base and fp32 adapters).

    Raises
    ------
    ValueError
        ``bf16`` on a CPU without the units (torch would emulate it) and ``fp16`` on any CPU (accelerate
        runs no fp16 autocast there: it would train in fp32), naming the field, the flags seen and the fix.
    """
    asked, field = method.precision, field or f"methods.{method.name or method.kind}.precision"
    if on_gpu():
        if asked == "auto":
            native = bf16_native()
            return Precision(asked, "bf16" if native else "fp32", f"native bf16 on this GPU: {native}")
        return Precision(asked, asked, "as asked")
    flags = cpu_bf16_flags()
    native = cpu_bf16_native(flags)
    units = f"CPU flags seen by torch: {_flags_text(flags)}"
    if asked == "fp32":
        return Precision(asked, "fp32", "as asked", flags)
    if asked == "fp16":
        raise ValueError(
            f"{field}: fp16, but on a CPU accelerate runs no fp16 autocast: the job would train in fp32 while "
            f"its config says fp16 ({units}) -> precision: auto or fp32"
            + (", or bf16 (this CPU has bf16 units)" if native else ", or a GPU")
        )
    if asked == "bf16":
        if native:
            return Precision(asked, "bf16", f"as asked; {units}", flags)
        raise ValueError(
            f"{field}: bf16, but this CPU has no bf16 matrix units ({units}; AMX-BF16 or AVX512-BF16 "
            f"needed): torch would emulate bf16, {EMULATED_BF16_COST} -> precision: auto (fp32 on this CPU) "
            "or fp32, or run on a CPU with amx_bf16/avx512_bf16 (Xeon Sapphire Rapids, EPYC Zen 4 or newer) or a GPU"
        )
    if not native:
        return Precision(asked, "fp32", f"no bf16 matrix units; {units}", flags)
    if method.deepspeed:
        return Precision(asked, "fp32", f"DeepSpeed on CPU trains in fp32 under auto; {units}", flags)
    n = n_params()
    if n is None or n < CPU_BF16_MIN_PARAMS:
        size = "model size unknown" if n is None else f"{n / 1e6:.1f}M parameters"
        return Precision(
            asked, "fp32", f"{size}, under the {CPU_BF16_MIN_PARAMS / 1e6:.0f}M of the bf16 rule; {units}", flags
        )
    return Precision(asked, "bf16", f"bf16 units and {n / 1e6:.0f}M parameters; {units}", flags)


def resolve_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for a config precision, the model's size unknown (:func:`decide_precision`)."""
    return decide_precision(MethodConfig(precision=precision)).mixed_precision


def model_params(name_or_path: str, trust_remote_code: bool = False) -> int | None:
    """Parameters of a model, from its config alone (built on the meta device: nothing is allocated); None
    when it cannot be built so."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError):
        return None
    return sum(p.numel() for p in model.parameters())


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


def make_accelerator(method: MethodConfig, precision: Precision | None = None) -> tp.Any:
    """An accelerate ``Accelerator`` for this method: one process, DDP, or DeepSpeed ZeRO.

    Under DeepSpeed it must exist before ``from_pretrained``: it registers
    the DeepSpeed config with transformers (``is_deepspeed_zero3_enabled``),
    so that under ZeRO-3 each rank builds only its shard inside
    ``deepspeed.zero.Init`` instead of the whole model. ``precision``: :func:`decide_precision`'s (by
    default decided here, the model's size unknown).
    """
    from accelerate import Accelerator

    precision = precision or decide_precision(method)

    plugin = deepspeed_plugin(method)
    if plugin is not None:
        ensure_single_process_env()
        skip_deepspeed_shm_build()
    handlers = [process_group_kwargs()] if world_size() > 1 or plugin is not None else []
    return Accelerator(
        # accelerate only turns DeepSpeed on when cpu=False; on a CPU machine
        # DS_ACCELERATOR=cpu (launch/jobs.py) keeps DeepSpeed's tensors on the CPU.
        cpu=not on_gpu() and plugin is None,
        mixed_precision=precision.mixed_precision,
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


def runtime_info(precision: Precision) -> dict[str, tp.Any]:
    """What this process ran with: usable CPUs (a Slurm task bound to one core shows 1), precision, GPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    info: dict[str, tp.Any] = {"cpu_affinity": cpus, **precision.record()}
    if on_gpu():
        major, minor = torch.cuda.get_device_capability()
        info.update(gpu_name=torch.cuda.get_device_name(), gpu_capability=f"{major}.{minor}", bf16_native=bf16_native())
    return info
