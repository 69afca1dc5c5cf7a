"""Make an experiment: resolve the config's paths and create its directory with the config and manifest.

The directory's layout and records belong to :mod:`launch.store.expdir`; this module is the login
side's act of starting one (``cyberft run`` and ``cyberft submit``).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import typing as tp
from pathlib import Path

from launch import REPO_ROOT
from launch.spec.config import ExperimentConfig, config_hash
from launch.store.expdir import ExperimentDir, Manifest, absolute_result_ref


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
        m.init_from = absolute_result_ref(m.init_from)  # EXP_DIR:method keeps its form, EXP_DIR absolute
        for task in m.multi_task.tasks:
            task.path = _absolute(task.path)
    return cfg


def git_commit() -> str | None:
    """The commit the launcher runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def create(cfg: ExperimentConfig, source: str, overrides: tp.Sequence[str], executor: str = "local") -> ExperimentDir:
    """A new ``output_dir/<name>-<UTC time>`` directory holding the resolved config and the manifest."""
    exp = ExperimentDir.new(cfg.output_dir, cfg.name)
    exp.write_config(cfg)
    manifest = Manifest(
        experiment=exp.name,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config_hash=config_hash(cfg),
        git_commit=git_commit(),
        source_config=str(Path(source).resolve()),
        overrides=list(overrides),
        methods={m.name: m.kind for m in cfg.methods},
        executor=executor,
    )
    exp.write_manifest(manifest)
    return exp
