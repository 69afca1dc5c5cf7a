"""Which GPUs a process may use, read from the environment alone (no torch, no CUDA call).

A contract module: ``train/`` imports it too (the GPU-binding check every rank runs before touching CUDA).

Two questions the launcher and the jobs ask before anything touches CUDA:

* :func:`cuda_hidden`: is CUDA off for this process (``CUDA_VISIBLE_DEVICES`` set empty, or no
  NVIDIA driver device)? Then DeepSpeed must be told to use its CPU accelerator, and only then:
  forcing it to the CPU while torch and accelerate see a GPU puts the two on different devices.
* :func:`check_gpu_binding`: does every rank of a multi-GPU job see all the GPUs of its node?
  DeepSpeed opens ``cuda:LOCAL_RANK`` (and accelerate's DDP wrap passes ``device_ids=[LOCAL_RANK]``),
  so on a site that binds one GPU to each Slurm task every rank but the first would die with
  "invalid device ordinal" after the job waited in the queue. The check stops every rank at
  once with the reason and the fix instead.
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")
"""Present on every machine with a loaded NVIDIA driver."""


class GpuBindingError(RuntimeError):
    """The ranks of a job do not each see every GPU of their node."""


def visible_devices(env: tp.Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs); None when it is not set."""
    env = os.environ if env is None else env
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",") if e.strip()]
    # CUDA stops at the first invalid entry: "-1" (a common way to hide every GPU) hides the rest too.
    out = []
    for e in entries:
        if e.startswith("-"):
            break
        out.append(e)
    return out


def cuda_hidden(env: tp.Mapping[str, str] | None = None, driver_device: Path = NVIDIA_CONTROL_DEVICE) -> bool:
    """Whether this process runs without CUDA: GPUs hidden by the environment, or no NVIDIA driver."""
    devices = visible_devices(env)
    if devices is not None:
        return not devices
    return not driver_device.exists()


def check_gpu_binding(env: tp.Mapping[str, str] | None = None) -> None:
    """Stop when a rank sees fewer GPUs than there are ranks on its node.

    Reads ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` (torchrun and :mod:`launch.jobs` export both) and
    ``CUDA_VISIBLE_DEVICES``. Nothing to check for a single process, with CUDA hidden (a CPU run),
    or when ``CUDA_VISIBLE_DEVICES`` is unset (every GPU of the machine is visible).

    Raises
    ------
    GpuBindingError
        On every rank of the node alike (each counts the same entries), before any CUDA call.
    """
    env = os.environ if env is None else env
    local_world = int(env.get("LOCAL_WORLD_SIZE") or 1)
    devices = visible_devices(env)
    if local_world <= 1 or not devices or len(devices) >= local_world:
        return
    local_rank = env.get("LOCAL_RANK", "?")
    rank = env.get("RANK", "?")
    n = len(devices)
    raise GpuBindingError(
        f"rank {rank} (LOCAL_RANK={local_rank} of {local_world} tasks on this node) sees {n} GPU"
        f"{'s' if n != 1 else ''} (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}), but each rank of a "
        f"multi-GPU job must see all {local_world} GPUs of its node: DeepSpeed and DDP open cuda:LOCAL_RANK, which "
        "does not exist here ('invalid device ordinal') -> the site binds GPUs to tasks although the job's srun "
        "passes --gpu-bind=none: remove gpus_per_task / gpu_bind from the profile's additional_parameters and "
        "SLURM_GPU_BIND from the environment, or ask the site whether a job_submit plugin or cgroup ConstrainDevices "
        "binds GPUs per task (check: srun --gpu-bind=none bash -c 'echo $SLURM_LOCALID $CUDA_VISIBLE_DEVICES')"
    )
