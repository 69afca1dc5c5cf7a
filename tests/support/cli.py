"""``cyberft`` run as a user runs it: a new interpreter in the checkout, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cyberft(*argv: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m launch.cli ARGV`` in the repository root; ``env`` is added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def shortened_study(config: str, cm500: Path, out: Path, stepped: tuple[str, ...], *extra: str, timeout: float = 1800):
    """``cyberft run CONFIG`` cut short: 8 training questions, 16 held out, 2 steps of 2 per stepping method,
    no tracking; ``extra`` overrides follow. Returns the finished process (the caller checks its exit)."""
    overrides = [
        f"data.train.path={cm500}",
        "data.max_train=8",
        "data.max_eval=16",
        f"output_dir={out}",
        "tracking.backend=none",
        *extra,
    ] + [f"methods.{m}.{k}" for m in stepped for k in ("max_steps=2", "micro_batch_size=2")]
    return cyberft("run", config, *overrides, timeout=timeout)
