"""Run every benchmark (``bench/bench_*.py``), print one table, write ``bench/results/latest.json``.

Each benchmark runs in its own fresh process (no torch threads or imports carried from one to the
next), with ``--runs N --json <tmp>``; its progress lines stream through. Order: eval, cli,
submit, train, then any other ``bench_*.py`` alphabetically, so a new benchmark is picked up by
dropping the file in (see ``bench/_common.py`` for the protocol). A benchmark that crashes gets
a ``FAILED`` line in the table and in the JSON; run_all then exits 1.

    python bench/run_all.py [--runs 5] [--only eval cli ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_RUNS, MIN_RUNS, REPO, format_table, machine_info  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "latest.json"
ORDER = ["eval", "cli", "submit", "train"]


def discover() -> list[tuple[str, Path]]:
    found = {p.stem[len("bench_") :]: p for p in BENCH_DIR.glob("bench_*.py")}
    names = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return [(n, found[n]) for n in names]


def git_state() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run_all.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per measurement (>= {MIN_RUNS})")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (eval, cli, submit, ...)")
    p.add_argument("--output", default=str(RESULTS), help="where the JSON goes (default bench/results/latest.json)")
    args = p.parse_args(argv)
    if args.runs < MIN_RUNS:
        p.error(f"--runs must be at least {MIN_RUNS}")
    benches = discover()
    if args.only:
        unknown = set(args.only) - {n for n, _ in benches}
        if unknown:
            p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))} (have: {', '.join(n for n, _ in benches)})")
        benches = [(n, s) for n, s in benches if n in args.only]

    started = dt.datetime.now(dt.UTC)
    machine_before = machine_info()
    results, failed = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cyberft-bench-") as tmp:
        for name, script in benches:
            out = Path(tmp) / f"{name}.json"
            print(f"=== {name}: {script.relative_to(REPO)} --runs {args.runs}", flush=True)
            t = time.perf_counter()
            rc = subprocess.run(
                [sys.executable, str(script), "--runs", str(args.runs), "--json", str(out)], cwd=REPO
            ).returncode
            if rc == 0 and out.is_file():
                results.append(json.loads(out.read_text(encoding="utf-8")))
            else:
                failed.append(name)
                results.append(
                    {
                        "name": name,
                        "rows": [],
                        "info": {},
                        "notes": [],
                        "skipped": f"FAILED (exit {rc}), see the output above",
                        "wall_s": round(time.perf_counter() - t, 1),
                    }
                )
            print(f"=== {name}: done in {time.perf_counter() - t:.0f}s", flush=True)

    table = format_table(results)
    machine = machine_info()
    print()
    print(
        f"cyberft benchmarks, {started:%Y-%m-%d %H:%M} UTC, {machine['cpus']} CPUs, load average before/after "
        f"{machine_before['loadavg'][0] if machine_before['loadavg'] else '?'}/"
        f"{machine['loadavg'][0] if machine['loadavg'] else '?'}; "
        f"median of {args.runs} runs; vs baseline: times faster than the baseline row (>1 = faster)"
    )
    print(table)
    for res in results:
        for note in res.get("notes", []):
            print(f"  {res['name']}: {note}")
    doc = {
        "created": started.isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": args.runs,
        "git": git_state(),
        "machine": {"before": machine_before, "after": machine},
        "benchmarks": results,
        "table": table,
    }
    sys.path.insert(0, str(REPO))
    from launch.store.fsio import atomic_write_json

    atomic_write_json(args.output, doc)
    written = Path(args.output).resolve()
    print(
        f"\nwritten: {written.relative_to(REPO) if written.is_relative_to(REPO) else args.output} "
        f"(total {doc['wall_s']:.0f}s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
