"""An experiment directory: created once, holding the resolved config and a manifest.

Layout::

    EXP/config.yaml          resolved config (absolute paths), what every job reads
    EXP/manifest.json        config hash, git commit, creation time, jobs
    EXP/data/                the prepared train/eval split (train.jsonl, eval.jsonl)
    EXP/jobs/                submitit folders (logs, pickles)
    EXP/methods/<name>/      model or adapter, metrics.json, progress.json
    EXP/eval/                predictions/ and results/ per model
    EXP/wandb/               W&B runs (offline mode)
    EXP/summary.json, report.md, report.html, chart.png
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import typing as tp
from pathlib import Path

from launch.config import ExperimentConfig, config_hash, dump_yaml, load_config
from launch.fsio import atomic_write_json, atomic_write_text, read_json

REPO_ROOT = Path(__file__).resolve().parents[1]


def _absolute(path: str) -> str:
    """A local path made absolute; a hub name left as it is."""
    p = Path(path).expanduser()
    return os.path.abspath(p) if p.exists() else path


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``cfg`` whose local paths are absolute, so jobs do not depend on their cwd.

    Links are not followed: ``/scratch/runs`` stays ``/scratch/runs`` when /scratch links to
    /lustre/scratch, which is the name the compute nodes know it by.
    """
    cfg = copy.deepcopy(cfg)
    cfg.output_dir = os.path.abspath(os.path.expanduser(cfg.output_dir))
    cfg.model.name_or_path = _absolute(cfg.model.name_or_path)
    for src in (cfg.data.train, cfg.data.eval):
        if src is not None:
            src.path = _absolute(src.path)
    for m in cfg.methods:
        if m.deepspeed:
            m.deepspeed = _absolute(m.deepspeed)
    return cfg


def git_commit() -> str | None:
    """The commit the launcher runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def create(cfg: ExperimentConfig, source: str, overrides: tp.Sequence[str]) -> Path:
    """Make a new ``output_dir/<name>-<UTC time>`` directory with the resolved config and manifest."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    for i in range(100):  # two launches in the same second get distinct directories
        exp_dir = root / (f"{cfg.name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            exp_dir.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise RuntimeError(f"could not create a new experiment directory under {root}")
    atomic_write_text(exp_dir / "config.yaml", dump_yaml(cfg))
    atomic_write_json(
        exp_dir / "manifest.json",
        {
            "experiment": exp_dir.name,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config_hash": config_hash(cfg),
            "git_commit": git_commit(),
            "source_config": str(Path(source).resolve()),
            "overrides": list(overrides),
            "methods": {m.name: m.kind for m in cfg.methods},
            "jobs": {},
        },
    )
    return exp_dir


def load(exp_dir: str | os.PathLike) -> ExperimentConfig:
    """The resolved config of an experiment directory."""
    return load_config(Path(exp_dir) / "config.yaml")


def update_manifest(exp_dir: Path, **fields: tp.Any) -> None:
    """Merge ``fields`` into the manifest (atomically)."""
    manifest = read_json(exp_dir / "manifest.json")
    manifest.update(fields)
    atomic_write_json(exp_dir / "manifest.json", manifest)
