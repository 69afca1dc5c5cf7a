"""Benchmark: start-up time of the ``cyberft`` command line, each run a new process.

* ``cyberft --help``
* ``cyberft submit configs/llama3-8b-cybermetric.yaml --profile dev --dry-run`` (renders every
  sbatch script through submitit; it exits 2 because that config's data file is not shipped,
  which is part of what it reports: the exit code is recorded)
* baseline: ``accelerate launch --help`` (the launcher most fine-tuning stacks put in front of a job)
* for reference: ``python -c pass``, the interpreter's own start-up, the floor for any Python CLI

Target: each ``cyberft`` command under 0.3 s (median). The module-level imports of
``launch/cli.py`` are recorded once with ``-X importtime`` (the largest ones go to the JSON).

    python bench/bench_cli.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import re
import sys
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Bench, Row, Target, bench_main, log, machine_info, parse_args, timed_subprocess, venv_bin  # noqa: E402

NAME = "cli"
DRY_RUN_CONFIG = "configs/llama3-8b-cybermetric.yaml"


def commands() -> list[tuple[str, str, list[str]]]:
    py = sys.executable
    return [
        ("accelerate", "accelerate launch --help", [venv_bin("accelerate"), "launch", "--help"]),
        ("help", "cyberft --help", [venv_bin("cyberft"), "--help"]),
        (
            "dry_run",
            "cyberft submit llama3-8b --profile dev --dry-run",
            [venv_bin("cyberft"), "submit", DRY_RUN_CONFIG, "--profile", "dev", "--dry-run"],
        ),
        ("python", "python -c pass (interpreter start)", [py, "-c", "pass"]),
    ]


def import_profile(module: str, top: int = 8) -> list[tuple[str, float]]:
    """The ``top`` largest cumulative import times (seconds) of ``import module`` in a fresh process."""
    _, _, _, err = timed_subprocess([sys.executable, "-X", "importtime", "-c", f"import {module}"])
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) <= 3:  # top-level imports only (and their first level)
            rows.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def build(args: tp.Any) -> Bench:
    bench = Bench(NAME)
    cmds = commands()
    samples: dict[str, list[float]] = {key: [] for key, _, _ in cmds}
    codes: dict[str, set[int]] = {key: set() for key, _, _ in cmds}
    for _key, label, cmd in cmds:  # warm-up: the page cache, .pyc files
        dt, rc, _, err = timed_subprocess(cmd)
        if rc not in (0, 2):
            raise RuntimeError(f"{label} failed (rc={rc}): {err[-2000:]}")
    for i in range(args.runs):
        parts = []
        for key, label, cmd in cmds:  # interleaved, so load changes hit every command alike
            dt, rc, _, _ = timed_subprocess(cmd)
            samples[key].append(dt)
            codes[key].add(rc)
            parts.append(f"{label} {dt:.3f}s (exit {rc})")
        log(NAME, f"run {i + 1}/{args.runs}: " + ", ".join(parts))
    under = Target("<0.3s", "max", 0.3)
    bench.rows = [
        Row("accelerate", "accelerate launch --help", "s", samples["accelerate"], False, baseline="accelerate"),
        Row("help", "cyberft --help", "s", samples["help"], False, baseline="accelerate", targets=[under]),
        Row(
            "dry_run",
            f"cyberft submit --dry-run (exit {'/'.join(map(str, sorted(codes['dry_run'])))})",
            "s",
            samples["dry_run"],
            False,
            baseline="accelerate",
            targets=[under],
        ),
        Row("python", "python -c pass (interpreter start)", "s", samples["python"], False, baseline="accelerate"),
    ]
    prof = import_profile("launch.cli")
    bench.info = {
        "machine": machine_info(),
        "commands": {key: cmd for key, _, cmd in cmds},
        "cwd": str(REPO),
        "exit_codes": {k: sorted(v) for k, v in codes.items()},
        "import_launch_cli_top_s": prof,
    }
    bench.notes = [
        f"dry run exits {sorted(codes['dry_run'])}: {DRY_RUN_CONFIG}'s data file is not shipped "
        "(the plan is still rendered)",
        "import launch.cli, largest cumulative imports: " + ", ".join(f"{m} {s * 1000:.0f}ms" for m, s in prof[:4]),
    ]
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    return bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    raise SystemExit(main())
