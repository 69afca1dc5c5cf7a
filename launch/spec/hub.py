"""Is the model already on disk where the jobs will look for it? (Hugging Face hub cache, no network.)

Every training rank and the evaluation job call ``from_pretrained`` on ``model.name_or_path``.
For a hub name that is not in the cache they would each download it on the compute nodes,
which often have no internet, and a gated model (Llama) also needs ``HF_TOKEN`` there: the
jobs would die at load time, after waiting in the queue. :func:`prefetch_note` says so before
submitting and how to fill a shared cache once, from the login node. :func:`offline_ok` tells
the job setup whether ``HF_HUB_OFFLINE=1`` is safe (a local directory, or a complete snapshot
in the cache the jobs use): then no rank asks the hub anything.

Standard library only (the login node never imports torch or huggingface_hub here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import typing as tp
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Single-file checkpoints; sharded ones have ``<name>.index.json`` listing their shards."""


def hub_cache(env: tp.Mapping[str, str] | None = None) -> Path:
    """The hub cache directory as ``huggingface_hub`` resolves it from ``env`` (default: this process)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` or ``name`` as the hub spells repository ids (not a path)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)) and ".." not in name


def snapshot_dir(repo_id: str, cache: Path) -> Path | None:
    """The cached snapshot of ``repo_id``: the one ``refs/main`` names, else the newest with a config."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return None
    ref = root / "refs" / "main"
    if ref.is_file():
        cand = snaps / ref.read_text(encoding="utf-8").strip()
        if (cand / "config.json").is_file():
            return cand
    found = [p.parent for p in snaps.glob("*/config.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def has_weights(snapshot: Path) -> bool:
    """Whether ``snapshot`` holds a whole checkpoint: one weights file, or every shard its index lists."""
    for name in WEIGHT_FILES:
        if (snapshot / name).is_file():
            return True
        index = snapshot / f"{name}.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return False
            return bool(shards) and all((snapshot / s).is_file() for s in shards)
    return False


def is_local(name_or_path: str) -> bool:
    """A local model directory (what ``from_pretrained`` reads without the hub)."""
    return Path(name_or_path).expanduser().is_dir()


def is_cached(repo_id: str, env: tp.Mapping[str, str] | None = None) -> bool:
    """Whether the cache the jobs use (``env``'s ``HF_HUB_CACHE``/``HF_HOME``) has all of ``repo_id``."""
    snap = snapshot_dir(repo_id, hub_cache(env))
    return snap is not None and has_weights(snap)


def offline_ok(name_or_path: str, env: tp.Mapping[str, str] | None = None) -> bool:
    """Whether the jobs can load the model with ``HF_HUB_OFFLINE=1``: a local directory, or fully cached."""
    return is_local(name_or_path) or (looks_like_hub_id(name_or_path) and is_cached(name_or_path, env))


def job_env(profile_env: tp.Mapping[str, str]) -> dict[str, str]:
    """The cache-related environment the jobs see: the profile's ``env`` over this shell's (sbatch passes it on)."""
    keys = ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
    merged = {k: os.environ[k] for k in keys if os.environ.get(k)}
    merged.update({k: str(v) for k, v in profile_env.items() if k in keys and v})
    return merged


def prefetch_note(name_or_path: str, env: tp.Mapping[str, str]) -> str | None:
    """A note when the jobs would download ``name_or_path`` from the hub; None when nothing would be fetched."""
    if is_local(name_or_path) or not looks_like_hub_id(name_or_path) or is_cached(name_or_path, env):
        return None
    cache = hub_cache(env)
    home = env.get("HF_HOME") or "/shared/hf"
    repo = shlex.quote(name_or_path)
    return (
        f"model.name_or_path: {name_or_path!r} is not (completely) in the Hugging Face cache the jobs use "
        f"({cache}): every rank would download it when it starts, on compute nodes that often have no internet, "
        f"and a gated model also needs HF_TOKEN there -> download it once from this login node into a shared "
        f"HF_HOME: `HF_HOME={shlex.quote(home)} hf download {repo}` (`huggingface-cli download` before "
        f"huggingface_hub 1.0, or `snapshot_download({name_or_path!r})` in Python with HF_HOME exported; "
        f"`hf auth login` or HF_TOKEN first for gated models), set HF_HOME: "
        f"{home} in the profile's env, and submit again: the jobs then load it offline (HF_HUB_OFFLINE=1)"
    )
