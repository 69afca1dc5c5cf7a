"""Helpers shared by the training entrypoints: runtime, data, the loop, metrics.

Plain functions, composed by each entrypoint (``full_sft.py``, ``lora.py``,
``qlora.py``); no base class. Training code reads only the standard torch
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) through accelerate, so the same ``main(cfg, ...)`` runs as one
process or as one process per GPU (``torchrun`` or the launcher), with plain
DDP or, when the method names a DeepSpeed JSON, ZeRO-2/3.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import random
import resource
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import torch

from launch.config import ExperimentConfig, MethodConfig
from launch.fsio import atomic_write_json
from launch.gpus import check_gpu_binding
from train import checkpoint, packing, prompting

# --------------------------------------------------------------------------- runtime


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    if method.kind == "full_sft" and not method.deepspeed:
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

    # On CPU accelerate finds no backend by itself and every rank believes it
    # is rank 0 of 1; under DeepSpeed too (the notes, section 5).
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


# --------------------------------------------------------------------------- data


def method_dir(exp_dir: Path, name: str) -> Path:
    return Path(exp_dir) / "methods" / name


def load_split(cfg: ExperimentConfig, exp_dir: Path, split: str, accelerator: tp.Any = None) -> list:
    """The prepared ``train`` or ``eval`` questions; prepares them first when missing.

    With several processes only the main one prepares a missing split (the
    others wait, then read it), so no two ranks write the same files.
    """
    from contextlib import nullcontext

    from launch.data import load_jsonl_questions, prepare_splits

    path = Path(exp_dir) / "data" / f"{split}.jsonl"
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        if not path.exists():  # entrypoint run directly, without the launcher
            prepare_splits(cfg.data, Path(exp_dir) / "data", progress=False)
    return load_jsonl_questions(path)


def load_tokenizer(name_or_path: str) -> tp.Any:
    """The model's tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode_examples(tokenizer: tp.Any, questions: list, max_len: int, progress: bool = True) -> list[Example]:
    """Tokenise every training question once, with a progress bar."""
    from tqdm.auto import tqdm

    codec = prompting.AnswerCodec(tokenizer)
    out = []
    for q in tqdm(questions, desc="tokenize", disable=not progress, mininterval=1.0):
        ids, labels = prompting.encode_training_example(tokenizer, codec, q, max_len)
        out.append(Example(ids, labels))
    return out


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets label -100 and attention 0."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# --------------------------------------------------------------------------- the loop


PROGRESS_EVERY_S = 10.0
"""How often the loop rewrites ``progress.json`` (also at the last step and at each checkpoint):
an fsync'd rename on shared storage at every step would cost more than a fast step.
``CYBERFT_PROGRESS_EVERY_S`` in the job's environment overrides it (0: every step)."""


def progress_every_s() -> float:
    """:data:`PROGRESS_EVERY_S`, or the job environment's ``CYBERFT_PROGRESS_EVERY_S``."""
    try:
        return max(0.0, float(os.environ.get("CYBERFT_PROGRESS_EVERY_S", PROGRESS_EVERY_S)))
    except ValueError:
        return PROGRESS_EVERY_S


def step_stats(accelerator: tp.Any, loss: torch.Tensor, *flags: bool) -> tuple[float, ...]:
    """The step's loss averaged over ranks, and each flag true if it is true on any rank.

    One collective and one host sync per optimizer step, whatever the number of flags: the
    loss stays a tensor on the device until here, and the flags (stop requested, checkpoint
    due) ride in the same all-reduce, so every rank takes the same decisions at the same step.
    """
    packed = torch.cat([loss.detach().float().reshape(1), torch.tensor(flags, dtype=torch.float32).to(loss.device)])
    if accelerator.num_processes > 1:
        packed = accelerator.reduce(packed, "sum")
        packed[0] /= accelerator.num_processes
    values = packed.tolist()
    return (values[0], *(v > 0 for v in values[1:]))


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    final_loss: float | None = None
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    """Loss of each optimizer step, averaged over the global batch (all ranks)."""
    model: tp.Any = field(default=None, repr=False)
    """The prepared model (DDP wrapper or DeepSpeed engine): what ``accelerator.get_state_dict`` needs."""


def total_steps(method: MethodConfig, n_examples: int, world_size: int) -> int:
    """Optimizer steps: ``max_steps`` or epochs x batches per epoch / accumulation."""
    if method.max_steps is not None:
        return method.max_steps
    per_epoch = math.ceil(n_examples / (method.micro_batch_size * world_size))
    return max(1, math.ceil(method.epochs * per_epoch / method.grad_accum_steps))


def train_loop(
    model: torch.nn.Module,
    examples: list[Example],
    method: MethodConfig,
    accelerator: tp.Any,
    pad_id: int,
    seed: int,
    progress_path: Path | None = None,
    log: tp.Callable[[dict, int], None] | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """AdamW + linear warm-up/decay over ``examples``; returns steps, tokens, losses.

    A micro-batch is ``method.micro_batch_size`` examples whatever ``method.batching``:
    ``padded`` right-pads them into a (examples x longest) tensor, ``packed`` lays them end
    to end in one row (see :mod:`train.packing`; the model runs per-example attention for the
    duration of the loop, restored when it returns). The loss is the mean over the answer
    tokens of the micro-batch either way.

    ``progress_path`` gets ``{"step", "total_steps", "loss", "flushed_step"}``
    atomically at every step, so the launcher can show progress of a job it does
    not run, and a restarted job knows what the tracker already has.

    With ``checkpoint_dir`` the loop is resumable (see :mod:`train.checkpoint`): it
    starts from the latest complete checkpoint there, saves one every
    ``method.checkpoint.every_steps`` steps or ``every_min`` minutes, and on SIGUSR2
    saves at the next step boundary and hands over to submitit's requeue. The data
    order of epoch ``e`` depends only on ``seed`` and ``e``, and a resumed epoch skips
    the batches already consumed, so a resumed run takes the same steps as one that
    was never interrupted.
    """
    with packing.padding_free_attention(model, enabled=method.batching == "packed"):
        return _train_loop(
            model, examples, method, accelerator, pad_id, seed, progress_path, log, progress, checkpoint_dir
        )


def _train_loop(
    model: torch.nn.Module,
    examples: list[Example],
    method: MethodConfig,
    accelerator: tp.Any,
    pad_id: int,
    seed: int,
    progress_path: Path | None,
    log: tp.Callable[[dict, int], None] | None,
    progress: bool,
    checkpoint_dir: Path | None,
) -> TrainResult:
    from accelerate.utils import DistributedType
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    n_steps = total_steps(method, len(examples), accelerator.num_processes)
    # Every rank builds the same shuffled loader; accelerate shards its batches
    # across ranks, so the global batch is micro_batch x grad_accum x world size.
    # Packing happens in collate_fn, after sampling: the order, the sharding across ranks and
    # skip_first_batches act on the same micro-batches of examples in both layouts.
    order = torch.Generator()
    loader = DataLoader(
        examples,
        batch_size=method.micro_batch_size,
        shuffle=True,
        generator=order,
        collate_fn=functools.partial(packing.collate_packed if method.batching == "packed" else collate, pad_id=pad_id),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    # torch AdamW also under ZeRO (the JSONs allow an "untested" optimizer): DeepSpeed's
    # fused Adam would be JIT-compiled on first use. With offload_optimizer accelerate
    # swaps in DeepSpeedCPUAdam (compiled once per machine); it shares the param
    # groups, so the scheduler below still drives its learning rate.
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate, weight_decay=method.weight_decay)
    # A prepared scheduler steps once per process at every optimizer step (accelerate
    # sizes schedules by one process's batches), so count its steps in those units.
    per_step = accelerator.num_processes
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(method.warmup_ratio * n_steps) * per_step, n_steps * per_step
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()

    state = checkpoint.TrainerState()
    settings = method.checkpoint
    found = checkpoint.latest(checkpoint_dir) if checkpoint_dir is not None else None
    if found is not None:
        partly_frozen = any(not p.requires_grad for p in model.parameters())
        state = checkpoint.load(accelerator, found, partly_frozen=partly_frozen)
        if not accelerator.is_main_process:
            state.tokens = 0  # the saved count is the sum over ranks; rank 0 carries it
        if accelerator.is_main_process:
            print(f"[train] resumed from {found} (step {state.step}/{n_steps})", flush=True)
    # W&B may have lost what an earlier attempt logged after its last clean flush (a SIGKILL
    # loses the offline writer's buffer): log those steps again from the checkpoint's history.
    # W&B keeps one record per step of a resumed run (a step not above the run's last is
    # dropped), so a step that did survive is not duplicated.
    flushed = _flushed_step(progress_path)
    if log is not None:
        for s in range(flushed + 1, state.step + 1):
            log({"train/loss": state.losses[s - 1], "train/lr": state.lrs[s - 1]}, s)
    stop = checkpoint.StopSignal().install() if checkpoint_dir is not None else None
    last_save = time.monotonic()

    result = TrainResult(model=model, steps=state.step, losses=list(state.losses))
    bar = tqdm(
        total=n_steps,
        initial=state.step,
        desc=f"train {method.name}",
        disable=not (progress and accelerator.is_main_process),
    )
    # DeepSpeed clips by itself (gradient_clipping in its config); accelerate's call there only syncs.
    clip = method.max_grad_norm > 0 and accelerator.distributed_type != DistributedType.DEEPSPEED
    every_s, last_progress = progress_every_s(), -math.inf
    t0 = time.perf_counter()
    window_loss: tp.Any = 0.0  # summed on the device: no host sync per micro-batch
    window_n = 0
    tokens: tp.Any = 0
    while state.step < n_steps:
        order.manual_seed(seed + state.epoch)  # the epoch's order, whatever happened before
        epoch_loader = (
            accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        )
        for batch in epoch_loader:
            state.batches_in_epoch += 1
            with accelerator.accumulate(model):
                loss = packing.answer_loss(model, batch)
                accelerator.backward(loss)
                if clip and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, method.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            tokens = tokens + packing.batch_tokens(batch)
            window_loss, window_n = window_loss + loss.detach(), window_n + 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            clock_due = checkpoint_dir is not None and _clock_due(settings, last_save) and accelerator.is_main_process
            loss, stopping, clock_due = step_stats(
                accelerator, window_loss / window_n, stop is not None and stop.received, clock_due
            )
            window_loss, window_n = 0.0, 0
            state.losses.append(loss)
            state.lrs.append(scheduler.get_last_lr()[0])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if log is not None:
                log({"train/loss": loss, "train/lr": state.lrs[-1]}, state.step)
            final = state.step >= n_steps
            saving = (
                checkpoint_dir is not None
                and not final
                and (stopping or clock_due or bool(settings.every_steps and state.step % settings.every_steps == 0))
            )
            if progress_path is not None and (final or saving or time.monotonic() - last_progress >= every_s):
                atomic_write_json(
                    progress_path,
                    {
                        "step": state.step,
                        "total_steps": n_steps,
                        "loss": loss,
                        "flushed_step": flushed,
                        "updated_at": now_iso(),
                    },
                )
                last_progress = time.monotonic()
            if final:
                break
            if saving:
                state.tokens, tokens = state.tokens + int(tokens), 0
                state.train_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint.save(accelerator, checkpoint_dir, _for_checkpoint(state, accelerator), settings.keep)
                last_save = time.monotonic()
                if stopping:
                    bar.close()
                    stop.hand_over(accelerator)
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    bar.close()
    if stop is not None:
        stop.uninstall()
    state.tokens += int(tokens)
    result.steps, result.losses = state.step, state.losses
    result.train_s = state.train_s + time.perf_counter() - t0
    result.tokens = int(accelerator.reduce(torch.tensor(state.tokens, device=accelerator.device), "sum"))
    result.final_loss = sum(result.losses[-10:]) / max(1, len(result.losses[-10:]))
    return result


def _flushed_step(progress_path: Path | None) -> int:
    """The last step an earlier attempt's tracker run closed cleanly with (0 when none did)."""
    if progress_path is None or not progress_path.is_file():
        return 0
    try:
        return int(json.loads(progress_path.read_text(encoding="utf-8")).get("flushed_step", 0))
    except (OSError, ValueError, TypeError):
        return 0


def _clock_due(settings: tp.Any, last_save: float) -> bool:
    """Whether ``checkpoint.every_min`` has passed since the last save (rank 0's clock decides, see step_stats)."""
    return bool(settings.every_min) and time.monotonic() - last_save >= settings.every_min * 60


def _for_checkpoint(state: tp.Any, accelerator: tp.Any) -> tp.Any:
    """The state to save: tokens summed over ranks (the main process writes the file)."""
    import copy

    saved = copy.deepcopy(state)
    if accelerator.num_processes > 1:
        saved.tokens = int(accelerator.reduce(torch.tensor(state.tokens, device=accelerator.device), "sum"))
    return saved


# --------------------------------------------------------------------------- metrics


def build_metrics(
    method: MethodConfig,
    phases: dict[str, float],
    result: TrainResult,
    trainable: int,
    total: int,
    n_devices: int,
    threads: int,
    started_at: str,
) -> dict:
    """The ``metrics.json`` record of one training job."""
    peak, kind = peak_memory()
    wall = sum(phases.values())
    return {
        "method": method.name,
        "kind": method.kind,
        "status": "completed",
        "device": "cuda" if on_gpu() else "cpu",
        "n_devices": n_devices,
        "threads": threads,
        **runtime_info(method),
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "wall_s": round(wall, 3),
        "train_tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.train_s, 1) if result.train_s else None,
        "peak_mem_bytes": peak,
        "peak_mem_kind": kind,
        "trainable_params": trainable,
        "total_params": total,
        "final_loss": result.final_loss,
        "steps": result.steps,
        # Local estimate; on Slurm the report replaces it with sacct's figures.
        "gpu_hours": round(wall * n_devices / 3600, 6) if on_gpu() else None,
        "cpu_hours": round(wall * threads / 3600, 6),
        "cost_source": "local",
        "started_at": started_at,
        "ended_at": now_iso(),
    }


def runtime_info(method: MethodConfig) -> dict:
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


def write_failure(exp_dir: Path, method: MethodConfig, error: BaseException, started_at: str) -> None:
    """Record a failed job so the report still has its row."""
    atomic_write_json(
        method_dir(exp_dir, method.name) / "metrics.json",
        {
            "method": method.name,
            "kind": method.kind,
            "status": "failed",
            "error": f"{type(error).__name__}: {error}"[:2000],
            "started_at": started_at,
            "ended_at": now_iso(),
        },
    )


# --------------------------------------------------------------------------- one training job


def to_plain(obj: tp.Any) -> tp.Any:
    """A dataclass config as plain data (for W&B config and JSON)."""
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _usual_permissions(directory: Path) -> None:
    """Give ``directory`` and its files the umask's usual modes, as ``launch.fsio`` does.

    ``mkdtemp`` makes the directory 0700 and safetensors writes 0600: the
    evaluation job, on another node or as another user of the shared storage,
    could not read the model.
    """
    mask = os.umask(0)
    os.umask(mask)
    directory.chmod(0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


def save_model_atomic(
    model: tp.Any,
    tokenizer: tp.Any,
    out: Path,
    config_dtype: torch.dtype | None = None,
    verify: tp.Callable[[Path], None] | None = None,
    **save_kwargs: tp.Any,
) -> Path:
    """``save_pretrained`` model (or adapter) and tokenizer into ``out`` via a temp dir + rename.

    ``config_dtype``: the dtype of the tensors in ``save_kwargs["state_dict"]`` when it is not the
    model's own (``save_pretrained`` records the model's in config.json, which ``dtype="auto"`` loads).
    ``verify(tmp_dir)``, when given, checks the written directory before it replaces ``out`` (and may
    add files to it); if it raises, ``out`` is left as it was.
    """
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True, **save_kwargs)
        if config_dtype is not None:
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            atomic_write_json(tmp / "config.json", dict(config, dtype=str(config_dtype).removeprefix("torch.")))
        tokenizer.save_pretrained(tmp)
        if verify is not None:
            verify(tmp)
        _usual_permissions(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_consolidated(
    accelerator: tp.Any, model: tp.Any, tokenizer: tp.Any, out: Path, dtype: torch.dtype | None = None
) -> None:
    """Save one full model + tokenizer into ``out``, however it was trained; every rank calls it.

    ``model`` is the prepared model. ``get_state_dict`` is collective: under
    ZeRO-3 it gathers every rank's shard into a full state dict in the
    training dtype on the main process (``stage3_gather_16bit_weights_on_model_save``
    in the JSON); only the main process writes. ``save_pretrained`` then drops
    the tied ``lm_head`` copy of the embeddings, which safetensors refuses.
    ``dtype``: floating-point tensors are saved in it (``model.dtype``: the fp32 master
    weights of a run without DeepSpeed are not what the evaluation loads).
    """
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_model_atomic(accelerator.unwrap_model(model), tokenizer, out, config_dtype=dtype, state_dict=state)
    accelerator.wait_for_everyone()  # nobody reports success before the model is on disk


class Job:
    """State of one training job: config, accelerator, tracker, phase timers.

    The entrypoints use it so that each of them reads top to bottom and only
    spells out what differs between methods: how the model is built and saved.
    """

    def __init__(
        self, cfg: ExperimentConfig, method_name: str, exp_dir: str | Path, kind: str, threads: int | None
    ) -> None:
        from launch.config import TrackingConfig
        from train.tracking import Tracker

        self.cfg = cfg
        self.exp_dir = Path(exp_dir)
        self.method = cfg.method(method_name)
        if self.method.kind != kind:
            raise ValueError(f"method {method_name!r} is kind {self.method.kind!r}, this entrypoint runs {kind!r}")
        self.out_dir = method_dir(self.exp_dir, self.method.name)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.threads = threads or torch.get_num_threads()
        self.started_at = now_iso()
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()
        setup_runtime(cfg.seed, threads)
        try:
            check_gpu_binding()  # every rank sees its node's GPUs, or all stop here, before any CUDA call
            check_bf16(cfg.model.dtype, self.method.precision)
            self.accelerator = make_accelerator(self.method)
        except (ValueError, RuntimeError) as exc:  # bf16 on an old GPU, GPUs bound per task: say why in the report
            if os.environ.get("RANK", "0") == "0":  # no accelerator to ask yet; the environment's rank 0 writes
                write_failure(self.exp_dir, self.method, exc, self.started_at)
            raise
        tracking = cfg.tracking if self.accelerator.is_main_process else TrackingConfig(backend="none")
        self.tracker = Tracker.start(
            tracking,
            run_dir=self.exp_dir,
            name=self.method.name,
            group=self.exp_dir.name,
            job_type="train",
            config={"experiment": self.exp_dir.name, "model": cfg.model.name_or_path, "method": to_plain(self.method)},
            run_id=f"{self.exp_dir.name}-{self.method.name}",
        )

    def mark(self, phase: str) -> None:
        """Close the current phase under ``phase`` and start timing the next."""
        t = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + t - self._t
        self._t = t

    def load_data(self) -> tuple[tp.Any, list[Example]]:
        """Tokenizer and tokenised training examples."""
        tokenizer = load_tokenizer(self.cfg.model.name_or_path)
        questions = load_split(self.cfg, self.exp_dir, "train", self.accelerator)
        return tokenizer, encode_examples(
            tokenizer, questions, self.cfg.model.max_seq_len, self.accelerator.is_main_process
        )

    def train(self, model: torch.nn.Module, examples: list[Example], tokenizer: tp.Any) -> TrainResult:
        """Run the loop; its time becomes the ``train`` phase."""
        self.mark("load")
        result = train_loop(
            model,
            examples,
            self.method,
            self.accelerator,
            tokenizer.pad_token_id,
            self.cfg.seed,
            progress_path=self.out_dir / "progress.json" if self.accelerator.is_main_process else None,
            log=self.tracker.log,
            checkpoint_dir=self.checkpoint_dir,
        )
        unwrapped = self.accelerator.unwrap_model(model)
        self.params = param_counts(unwrapped)
        self.trainable_dtype = next((str(p.dtype) for p in unwrapped.parameters() if p.requires_grad), None)
        self.mark("train")
        return result

    def finish(self, result: TrainResult) -> dict:
        """Write ``metrics.json``, close the W&B run, return the metrics."""
        self.mark("save")
        metrics = build_metrics(
            self.method,
            self.phases,
            result,
            *self.params,
            self.accelerator.num_processes,
            self.threads,
            self.started_at,
        )
        metrics["trainable_dtype"] = self.trainable_dtype  # fp32 masters for full SFT without DeepSpeed
        if self.accelerator.is_main_process:
            atomic_write_json(self.out_dir / "metrics.json", metrics)
            # The final model is saved and recorded: the resumable states (for a full SFT of a
            # large model, several times its size) have done their job.
            import shutil

            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        self.tracker.summary(metrics)
        self.tracker.finish()
        return metrics

    def fail(self, exc: BaseException) -> None:
        """Record the failure (metrics.json status failed) and close the W&B run.

        Stopping to be requeued (SIGUSR2 after a checkpoint: submitit exits with
        ``SystemExit``) is not a failure: nothing is recorded, and the W&B run is
        left to be resumed by the next attempt.
        """
        from train.checkpoint import Preempted

        if isinstance(exc, (SystemExit, Preempted, KeyboardInterrupt)):
            self.tracker.finish(exit_code=0)
            progress = self.out_dir / "progress.json"
            if self.accelerator.is_main_process and progress.is_file():
                # Every step logged so far is now on disk: the next attempt need not log it again.
                data = json.loads(progress.read_text(encoding="utf-8"))
                atomic_write_json(progress, dict(data, flushed_step=data.get("step", 0)))
            return
        if self.accelerator.is_main_process:
            write_failure(self.exp_dir, self.method, exc, self.started_at)
        self.tracker.finish(exit_code=1)
