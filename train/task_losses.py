"""Per-task losses of a multi-task run: summed on the device, reduced with the step, logged per task.

:func:`train.loop.train_loop` uses :class:`TaskLosses` when it is given task names (``multi_task``),
and :func:`step_log` for every step it logs (or logs again after a restart).
"""

from __future__ import annotations

import typing as tp

import torch

from train import checkpoint


def step_log(state: checkpoint.TrainerState, step: int) -> dict[str, float]:
    """What W&B gets for ``step``: the loss, the learning rate, and each task's loss where it had tokens."""
    row = {"train/loss": state.losses[step - 1], "train/lr": state.lrs[step - 1]}
    for task, values in state.task_losses.items():
        if len(values) >= step and values[step - 1] is not None:
            row[f"train/loss/{task}"] = values[step - 1]
    return row


class TaskLosses:
    """Each task's summed answer-token loss and token count over one optimizer step, kept on the device.

    Summed (not averaged) so that they add up over micro-batches and ranks in :func:`step_stats`;
    a task's loss at a step is its sum over its count, the mean over its answer tokens.
    """

    def __init__(self, names: tp.Sequence[str]) -> None:
        self.names = list(names)
        self.sums: tp.Any = 0.0
        self.counts: tp.Any = 0.0

    def add(self, token_losses: torch.Tensor, tasks: torch.Tensor) -> None:
        n = len(self.names)
        sums = torch.zeros(n, device=token_losses.device).index_add(0, tasks, token_losses.detach().float())
        self.sums = self.sums + sums
        self.counts = self.counts + torch.bincount(tasks, minlength=n).float()

    def packed(self, device: torch.device) -> torch.Tensor:
        """Sums then counts, one tensor (zeros when nothing was added on this rank)."""
        if isinstance(self.sums, float):
            return torch.zeros(2 * len(self.names), device=device)
        return torch.cat([self.sums, self.counts])

    def record(self, reduced: list[float], state: checkpoint.TrainerState) -> dict[str, float]:
        """Append this step's losses (summed over ranks) to ``state``; return those of the tasks that had tokens."""
        n = len(self.names)
        out = {}
        for i, name in enumerate(self.names):
            value = reduced[i] / reduced[n + i] if reduced[n + i] else None
            state.task_losses.setdefault(name, []).append(value)
            if value is not None:
                out[name] = value
        self.sums = self.counts = 0.0
        return out

    @staticmethod
    def final(state: checkpoint.TrainerState) -> dict[str, float]:
        """Each task's mean over its last 10 steps with tokens."""
        out = {}
        for name, values in state.task_losses.items():
            seen = [v for v in values if v is not None][-10:]
            if seen:
                out[name] = sum(seen) / len(seen)
        return out
