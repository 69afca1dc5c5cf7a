"""Resumable training: complete checkpoints only, and a clean stop on Slurm's warning signal.

Layout under ``EXP/methods/<name>/checkpoints/``::

    step-00000040/            one complete checkpoint
        accelerate/           accelerator.save_state: model (or ZeRO shards), optimizer,
                              scheduler, RNG states of every rank
        trainer_state.json    step, epoch, batch position in the epoch, losses, tokens
        COMPLETE              written last: a directory without it is never loaded
    .tmp-step-00000050/       being written (a kill here leaves it; it is ignored and removed)

A checkpoint is written into a temporary directory, marked COMPLETE, then renamed,
so a job killed while saving resumes from the previous complete one. The last
``keep`` complete checkpoints are kept.

Preemption and time limits: Slurm sends SIGUSR2 ahead of the end (``--signal``).
Saving inside a signal handler would catch the optimizer half-way through a step,
so :class:`StopSignal` only raises a flag; the training loop checks it at every
optimizer-step boundary (agreeing across ranks), saves a checkpoint there, and then
hands the signal to the previous handler, submitit's, which calls
``TrainJob.checkpoint`` and requeues the job. A restart by ``scontrol requeue`` or
after a node failure (no signal reaches the job) resumes from the latest periodic
checkpoint instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import typing as tp
from dataclasses import asdict, dataclass, field
from pathlib import Path

from launch.store.fsio import atomic_write_json, atomic_write_text

MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where the loop stands: enough, with accelerate's state, to continue bit for bit."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (the data order of epoch ``e`` is a function of the seed and ``e``)."""
    batches_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed."""
    tokens: int = 0
    """Training tokens seen by this rank."""
    losses: list[float] = field(default_factory=list)
    """Loss of every optimizer step so far."""
    lrs: list[float] = field(default_factory=list)
    """Learning rate of every optimizer step so far (to log lost steps again)."""
    train_s: float = 0.0
    """Training time of the earlier attempts."""
    task_losses: dict[str, list[float | None]] = field(default_factory=dict)
    """``multi_task``: each task's loss at every step (None at a step without its tokens)."""


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("step-") and (d / MARKER).is_file()]
    return sorted(dirs, key=lambda d: d.name)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def save(accelerator: tp.Any, root: Path, state: TrainerState, keep: int) -> Path:
    """Write a complete checkpoint of ``state`` and the accelerator; every rank calls it.

    All ranks write their part into the same temporary directory (ZeRO shards, RNG
    states); the main process then adds the trainer state and the COMPLETE marker
    and renames it into place, and prunes all but the last ``keep``.
    """
    final = _step_dir(root, state.step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_trainable_only)
    try:
        accelerator.save_state(str(tmp / "accelerate"))
    finally:
        hook.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, asdict(state))
        atomic_write_text(tmp / MARKER, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        if final.exists():  # the same step saved again (resumed exactly at a checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep: int) -> None:
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _trainable_only(models: list, weights: list, output_dir: str) -> None:
    """accelerate save hook: keep only trainable tensors of adapter models (LoRA, QLoRA).

    The frozen base is already on disk (the model path) and, for QLoRA, quantised: saving it
    would copy gigabytes per checkpoint and reloading 4-bit tensors is fragile.
    """
    for i, model in enumerate(models):
        if i >= len(weights):  # DeepSpeed saves its own way; weights stays empty
            break
        params = list(model.named_parameters())
        trainable = {name for name, p in params if p.requires_grad}
        if len(trainable) < len(params):
            weights[i] = {k: v for k, v in weights[i].items() if k in trainable}


def load(accelerator: tp.Any, path: Path, partly_frozen: bool = False) -> TrainerState:
    """Restore the accelerator (model, optimizer, scheduler, RNG) and return the trainer state.

    ``partly_frozen``: the model has frozen parameters (LoRA, QLoRA), so its checkpoint
    holds the trainable tensors only (see :func:`_trainable_only`) and the frozen base,
    already loaded from the model path, is expected to be missing from it.
    """
    kwargs = {"strict": False} if partly_frozen else {}
    accelerator.load_state(str(path / "accelerate"), **kwargs)
    raw = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    return TrainerState(**raw)


class StopSignal:
    """SIGUSR2 (Slurm's warning before a time limit or preemption) as a flag the loop polls.

    ``received`` is this rank's; the loop shares it with the other ranks in its once-per-step
    all-reduce (``train.loop.step_stats``), so all of them stop at the same step.
    ``install()`` keeps the previous handler (submitit's checkpoint-and-requeue) to
    call once the loop has saved: :meth:`hand_over`.
    """

    def __init__(self) -> None:
        self.received = False
        self.previous: tp.Any = None
        self.installed = False

    def install(self) -> StopSignal:
        try:
            self.previous = signal.signal(signal.SIGUSR2, self._on_signal)
            self.installed = True
        except ValueError:  # not the main thread (e.g. a test runner thread): no signal handling
            self.installed = False
        return self

    def _on_signal(self, signum: int, frame: tp.Any) -> None:
        self.received = True

    def hand_over(self, accelerator: tp.Any) -> tp.NoReturn:
        """After the checkpoint: let submitit requeue the job (rank 0), or wait to be stopped."""
        self.uninstall()
        if accelerator.is_main_process and callable(self.previous):
            self.previous(signal.SIGUSR2, None)  # submitit: TrainJob.checkpoint(), scontrol requeue, exit
        if accelerator.is_main_process:
            raise Preempted("stopped on SIGUSR2 after saving a checkpoint (no requeue handler installed)")
        while True:  # other ranks: rank 0's requeue ends the whole job step
            time.sleep(60)

    def uninstall(self) -> None:
        if self.installed:
            signal.signal(signal.SIGUSR2, self.previous if self.previous is not None else signal.SIG_DFL)
            self.installed = False


class Preempted(RuntimeError):
    """Training stopped on a signal after a complete checkpoint was written."""
