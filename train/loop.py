"""The training loop: AdamW with linear warm-up and decay, through accelerate, resumable.

:func:`train_loop` reads as the optimisation alone; what surrounds it has a named helper each:
resuming from and saving checkpoints, handing over to submitit on SIGUSR2
(:class:`Checkpoints`), writing ``progress.json`` (:class:`ProgressFile`) and logging again the
steps W&B may have lost (:func:`replay_lost_steps`).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import torch

from launch.spec.config import CheckpointSettings, MethodConfig
from launch.store.expdir import MethodDir, Progress, now_iso
from train import checkpoint, packing
from train.batches import Example, collate
from train.task_losses import TaskLosses, step_log

PROGRESS_EVERY_S = 10.0
"""How often the loop rewrites ``progress.json`` (also at the last step and at each checkpoint):
an fsync'd rename on shared storage at every step would cost more than a fast step.
``CYBERFT_PROGRESS_EVERY_S`` in the job's environment overrides it (0: every step)."""

Log = tp.Callable[[dict, int], None]
"""Where each step's loss and learning rate go (``Tracker.log``)."""


def progress_every_s() -> float:
    """:data:`PROGRESS_EVERY_S`, or the job environment's ``CYBERFT_PROGRESS_EVERY_S``."""
    try:
        return max(0.0, float(os.environ.get("CYBERFT_PROGRESS_EVERY_S", PROGRESS_EVERY_S)))
    except ValueError:
        return PROGRESS_EVERY_S


def step_stats(
    accelerator: tp.Any, loss: torch.Tensor, *flags: bool, extra: torch.Tensor | None = None
) -> tuple[tp.Any, ...]:
    """The step's loss averaged over ranks, and each flag true if it is true on any rank.

    One collective and one host sync per optimizer step, whatever the number of flags: the
    loss stays a tensor on the device until here, and the flags (stop requested, checkpoint
    due) ride in the same all-reduce, so every rank takes the same decisions at the same step.
    ``extra`` (sums to add up over ranks: the per-task losses of a multi-task run) rides along too
    and comes back, summed, as a last list.
    """
    parts = [loss.detach().float().reshape(1), torch.tensor(flags, dtype=torch.float32).to(loss.device)]
    if extra is not None:
        parts.append(extra.detach().float().reshape(-1).to(loss.device))
    packed = torch.cat(parts)
    if accelerator.num_processes > 1:
        packed = accelerator.reduce(packed, "sum")
        packed[0] /= accelerator.num_processes
    values = packed.tolist()
    stats = (values[0], *(v > 0 for v in values[1 : 1 + len(flags)]))
    return stats if extra is None else (*stats, values[1 + len(flags) :])


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    final_loss: float | None = None
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    """Loss of each optimizer step, averaged over the global batch (all ranks)."""
    task_losses: dict[str, float] | None = None
    """Multi-task runs: each task's mean loss over its last (up to) 10 steps that had its tokens."""
    model: tp.Any = field(default=None, repr=False)
    """The prepared model (DDP wrapper or DeepSpeed engine): what ``accelerator.get_state_dict`` needs."""


def total_steps(method: MethodConfig, n_examples: int, world_size: int) -> int:
    """Optimizer steps: ``max_steps`` or epochs x batches per epoch / accumulation."""
    if method.max_steps is not None:
        return method.max_steps
    per_epoch = math.ceil(n_examples / (method.micro_batch_size * world_size))
    return max(1, math.ceil(method.epochs * per_epoch / method.grad_accum_steps))


# --------------------------------------------------------------------------- around the loop


class Checkpoints:
    """Resumable training (see :mod:`train.checkpoint`): the newest complete checkpoint at the start,
    a save every ``every_steps`` steps or ``every_min`` minutes, and on SIGUSR2 a save at the next
    step boundary, then the hand-over to submitit's requeue. Without a ``directory`` (a loop run
    outside an experiment: tests, benchmarks) it never resumes and never saves."""

    def __init__(self, directory: Path | None, settings: CheckpointSettings, accelerator: tp.Any) -> None:
        self.directory, self.settings, self.accelerator = directory, settings, accelerator
        self.signal = checkpoint.StopSignal()
        self.last_save = time.monotonic()

    def resume(self, model: tp.Any, n_steps: int) -> checkpoint.TrainerState:
        """The state of the newest complete checkpoint (restored into the accelerator), or a fresh one."""
        found = checkpoint.latest(self.directory) if self.directory is not None else None
        if found is None:
            return checkpoint.TrainerState()
        partly_frozen = any(not p.requires_grad for p in model.parameters())
        state = checkpoint.load(self.accelerator, found, partly_frozen=partly_frozen)
        if not self.accelerator.is_main_process:
            state.tokens = 0  # the saved count is the sum over ranks; rank 0 carries it
        if self.accelerator.is_main_process:
            print(f"[train] resumed from {found} (step {state.step}/{n_steps})", flush=True)
        return state

    def arm(self) -> None:
        """Catch SIGUSR2 from now on, and count ``every_min`` from now."""
        if self.directory is not None:
            self.signal.install()
        self.last_save = time.monotonic()

    @property
    def stop_requested(self) -> bool:
        return self.signal.received

    def clock_due(self) -> bool:
        """Whether ``every_min`` has passed since the last save (rank 0's clock decides, see step_stats)."""
        every_min = self.settings.every_min
        elapsed = time.monotonic() - self.last_save
        return (
            self.directory is not None
            and bool(every_min)
            and elapsed >= every_min * 60
            and (self.accelerator.is_main_process)
        )

    def due(self, step: int, stopping: bool, clock_due: bool) -> bool:
        every = self.settings.every_steps
        return self.directory is not None and (stopping or clock_due or bool(every and step % every == 0))

    def save(self, state: checkpoint.TrainerState) -> None:
        """A complete checkpoint of ``state``: every rank calls it (tokens summed over ranks)."""
        saved = copy.deepcopy(state)
        if self.accelerator.num_processes > 1:
            saved.tokens = _sum_over_ranks(self.accelerator, state.tokens)
        checkpoint.save(self.accelerator, self.directory, saved, self.settings.keep)
        self.last_save = time.monotonic()

    def hand_over(self) -> tp.NoReturn:
        """After the save on SIGUSR2: submitit requeues the job (rank 0); the others wait to be stopped."""
        self.signal.hand_over(self.accelerator)

    def close(self) -> None:
        self.signal.uninstall()


class ProgressFile:
    """``progress.json`` of the main process, so the launcher can show a job it does not run.

    Written atomically at most every :func:`progress_every_s` seconds, and whenever forced (the
    last step, each checkpoint). ``flushed`` is what the previous attempt's W&B run holds for sure.
    """

    def __init__(self, paths: MethodDir | None, n_steps: int) -> None:
        self.paths, self.n_steps = paths, n_steps
        earlier = paths.read_progress() if paths is not None else None
        self.flushed = earlier.flushed_step if earlier is not None else 0
        self.every_s, self.last = progress_every_s(), -math.inf

    def update(self, step: int, loss: float, force: bool, task_losses: dict[str, float] | None = None) -> None:
        if self.paths is None or not (force or time.monotonic() - self.last >= self.every_s):
            return
        self.paths.write_progress(Progress(step, self.n_steps, loss, self.flushed, now_iso(), task_losses))
        self.last = time.monotonic()


def replay_lost_steps(log: Log | None, state: checkpoint.TrainerState, flushed: int) -> None:
    """Log again the steps after ``flushed`` that the checkpoint has but W&B may have lost.

    A SIGKILL loses the offline writer's buffer. W&B keeps one record per step of a resumed
    run (a step not above the run's last is dropped), so a step that did survive is not duplicated.
    """
    if log is None:
        return
    for s in range(flushed + 1, state.step + 1):
        log(step_log(state, s), s)


class _Meter:
    """Training tokens (summed on the device: no host sync per micro-batch) and seconds since the last fold."""

    def __init__(self) -> None:
        self.tokens: tp.Any = 0
        self.t0 = time.perf_counter()

    def add(self, batch: dict) -> None:
        self.tokens = self.tokens + packing.batch_tokens(batch)

    def fold(self, state: checkpoint.TrainerState) -> None:
        """Move the count and the time into ``state`` (before a checkpoint, and at the end)."""
        now = time.perf_counter()
        state.tokens, state.train_s = state.tokens + int(self.tokens), state.train_s + now - self.t0
        self.tokens, self.t0 = 0, now


def _sum_over_ranks(accelerator: tp.Any, n: int) -> int:
    return int(accelerator.reduce(torch.tensor(n, device=accelerator.device), "sum"))


# --------------------------------------------------------------------------- the loop


def train_loop(
    model: torch.nn.Module,
    examples: list[Example],
    method: MethodConfig,
    accelerator: tp.Any,
    pad_id: int,
    seed: int,
    paths: MethodDir | None = None,
    log: Log | None = None,
    progress: bool = True,
    tasks: tp.Sequence[str] = (),
) -> TrainResult:
    """AdamW + linear warm-up/decay over ``examples``; returns steps, tokens, losses.

    A micro-batch is ``method.micro_batch_size`` examples whatever ``method.batching``:
    ``padded`` right-pads them into a (examples x longest) tensor, ``packed`` lays them end
    to end in one row (see :mod:`train.packing`; the model runs per-example attention for the
    duration of the loop, restored when it returns). The loss is the mean over the answer
    tokens of the micro-batch either way.

    With ``paths`` (the method's directory) the loop writes its progress there and is
    resumable: it starts from the latest complete checkpoint, saves one every
    ``method.checkpoint.every_steps`` steps or ``every_min`` minutes, and on SIGUSR2 saves at
    the next step boundary and hands over to submitit's requeue. The data order of epoch ``e``
    depends only on ``seed`` and ``e``, and a resumed epoch skips the batches already consumed,
    so a resumed run takes the same steps as one that was never interrupted.

    ``tasks`` (a multi-task run): the names of the tasks ``Example.task`` indexes; each task's loss
    (the mean over its answer tokens in the step) is logged as ``train/loss/<task>``, written to the
    progress file and returned, next to the loss over all of them.
    """
    with packing.padding_free_attention(model, enabled=method.batching == "packed"):
        prepared = _prepare(model, examples, method, accelerator, pad_id)
        return _optimise(prepared, method, accelerator, seed, paths, log, progress, tasks)


@dataclass
class _Prepared:
    """What the loop optimises, prepared by accelerate (DDP wrapper or DeepSpeed engine, sharded loader)."""

    model: tp.Any
    optimizer: tp.Any
    loader: tp.Any
    scheduler: tp.Any
    params: list
    """The trainable parameters (what gradient clipping sees)."""
    order: torch.Generator
    """The loader's shuffling generator, seeded per epoch by the loop."""
    n_steps: int


def _prepare(
    model: torch.nn.Module, examples: list[Example], method: MethodConfig, accelerator: tp.Any, pad_id: int
) -> _Prepared:
    """The loader, AdamW and the linear schedule over ``examples``, prepared by accelerate."""
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    n_steps = total_steps(method, len(examples), accelerator.num_processes)
    order = torch.Generator()

    # Every rank builds the same shuffled loader; accelerate shards its batches
    # across ranks, so the global batch is micro_batch x grad_accum x world size.
    # Packing happens in collate_fn, after sampling: the order, the sharding across ranks and
    # skip_first_batches act on the same micro-batches of examples in both layouts.
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
    return _Prepared(model, optimizer, loader, scheduler, params, order, n_steps)


def _optimise(
    prepared: _Prepared,
    method: MethodConfig,
    accelerator: tp.Any,
    seed: int,
    paths: MethodDir | None,
    log: Log | None,
    progress: bool,
    task_names: tp.Sequence[str] = (),
) -> TrainResult:
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    model, optimizer, loader, scheduler = prepared.model, prepared.optimizer, prepared.loader, prepared.scheduler
    params, order, n_steps = prepared.params, prepared.order, prepared.n_steps
    model.train()
    saver = Checkpoints(paths.checkpoints_dir if paths else None, method.checkpoint, accelerator)
    state = saver.resume(model, n_steps)
    progress_file = ProgressFile(paths if accelerator.is_main_process else None, n_steps)
    replay_lost_steps(log, state, progress_file.flushed)
    saver.arm()
    main = progress and accelerator.is_main_process
    bar = tqdm(total=n_steps, initial=state.step, desc=f"train {method.name}", disable=not main)
    # DeepSpeed clips by itself (gradient_clipping in its config); accelerate's call there only syncs.
    clip = method.max_grad_norm > 0 and accelerator.distributed_type != DistributedType.DEEPSPEED
    meter = _Meter()
    window_loss: tp.Any = 0.0  # summed on the device: no host sync per micro-batch
    window_n = 0
    tasks = TaskLosses(task_names) if task_names else None
    while state.step < n_steps:
        order.manual_seed(seed + state.epoch)  # the epoch's order, whatever happened before
        skip = state.batches_in_epoch
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            state.batches_in_epoch += 1
            with accelerator.accumulate(model):
                if tasks is None:
                    loss = packing.answer_loss(model, batch)
                else:
                    token_losses, token_tasks = packing.answer_token_losses(model, batch)
                    loss = token_losses.mean()
                    tasks.add(token_losses, token_tasks)
                accelerator.backward(loss)
                if clip and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, method.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            meter.add(batch)
            window_loss, window_n = window_loss + loss.detach(), window_n + 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            mean = window_loss / window_n
            extra = tasks.packed(mean.device) if tasks is not None else None
            loss, stopping, clock_due, *summed = step_stats(
                accelerator, mean, saver.stop_requested, saver.clock_due(), extra=extra
            )
            window_loss, window_n = 0.0, 0
            state.losses.append(loss)
            state.lrs.append(scheduler.get_last_lr()[0])
            by_task = tasks.record(summed[0], state) if tasks is not None else None
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if log is not None:
                log(step_log(state, state.step), state.step)
            final = state.step >= n_steps
            saving = not final and saver.due(state.step, stopping, clock_due)
            progress_file.update(state.step, loss, force=final or saving, task_losses=by_task)
            if final:
                break
            if saving:
                meter.fold(state)
                saver.save(state)
                if stopping:
                    bar.close()
                    saver.hand_over()
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    bar.close()
    saver.close()
    meter.fold(state)
    return TrainResult(
        steps=state.step,
        tokens=_sum_over_ranks(accelerator, state.tokens),
        final_loss=sum(state.losses[-10:]) / max(1, len(state.losses[-10:])),
        train_s=state.train_s,
        losses=state.losses,
        task_losses=TaskLosses.final(state) if tasks is not None else None,
        model=model,
    )
