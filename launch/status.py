"""``cyberft status``, ``logs`` and ``cancel``: follow the jobs of a submitted experiment.

State comes from Slurm (``squeue`` while a job is queued or running, ``sacct``
once it has ended); training progress comes from the job's own files
(``methods/<name>/progress.json`` and ``metrics.json``), so it works without any
connection to the compute node. When Slurm has forgotten a job (no accounting
database, or ``squeue`` after MinJobAge) the files decide.
"""

from __future__ import annotations

import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from launch import slurm
from launch.fsio import read_json


@dataclass
class JobStatus:
    """One job of an experiment as the user sees it."""

    name: str
    job_id: str
    state: str
    elapsed: str = ""
    nodes: str = ""
    detail: str = ""
    ended: bool = False
    ok: bool = False


def _read(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt_elapsed(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _train_detail(exp_dir: Path, name: str) -> tuple[str, str | None]:
    """(progress text, training status from metrics.json or None)."""
    metrics = _read(exp_dir / "methods" / name / "metrics.json")
    if metrics is not None:
        status = str(metrics.get("status"))
        if status == "completed":
            return f"done: {metrics.get('steps')} steps, loss {metrics.get('final_loss', float('nan')):.4f}", status
        return f"{status}: {str(metrics.get('error', ''))[:160]}", status
    progress = _read(exp_dir / "methods" / name / "progress.json")
    if progress is not None:
        return (
            f"step {progress.get('step')}/{progress.get('total_steps')} loss {progress.get('loss', float('nan')):.4f}",
            None,
        )
    return "", None


def _eval_detail(exp_dir: Path) -> tuple[str, str | None]:
    results = sorted(p.stem for p in (exp_dir / "eval" / "results").glob("*.json"))
    if (exp_dir / "summary.json").is_file():
        return f"report written ({len(results)} model(s) scored)", "completed"
    return (f"scored: {', '.join(results)}" if results else ""), None


def refusal(exp_dir: Path) -> str | None:
    """Why the experiment was never fully submitted (sbatch refused a job), or None.

    Such an experiment has no evaluation job and its other jobs were cancelled: it is not an
    experiment in progress, and ``status``/``resume`` say so instead of showing an empty table.
    """
    error = read_json(Path(exp_dir) / "manifest.json").get("submit_error")
    if not error:
        return None
    return (
        f"this experiment was never fully submitted: {error}; the jobs submitted before were cancelled "
        "-> fix the profile and `cyberft submit` the config again"
    )


def job_statuses(exp_dir: Path) -> list[JobStatus]:
    """The state of every job in the experiment's manifest."""
    exp_dir = Path(exp_dir)
    manifest = read_json(exp_dir / "manifest.json")
    jobs: dict[str, dict] = manifest.get("jobs", {})
    ids = [rec["job_id"] for rec in jobs.values()]
    live: dict[str, slurm.LiveJob] = {}
    accounts: dict[str, slurm.JobAccount] = {}
    if manifest.get("executor") == "slurm":
        try:
            live = slurm.squeue(ids)
        except slurm.SlurmError:
            live = {}
        try:
            accounts = slurm.sacct([i for i in ids if i not in live])
        except slurm.SlurmError:
            accounts = {}
    out = []
    for name, rec in jobs.items():
        detail, file_status = _eval_detail(exp_dir) if name == "eval" else _train_detail(exp_dir, name)
        st = JobStatus(name, rec["job_id"], "UNKNOWN", detail=detail)
        if rec["job_id"] in live:
            lj = live[rec["job_id"]]
            st.state, st.elapsed, st.nodes = lj.state, lj.elapsed, lj.nodes
            if lj.state == "PENDING" and lj.reason not in ("None", ""):
                st.detail = f"waiting: {lj.reason}" + (f"; {detail}" if detail else "")
        elif rec["job_id"] in accounts:
            acc = accounts[rec["job_id"]]
            st.state, st.elapsed = acc.state, _fmt_elapsed(acc.elapsed_s)
            st.nodes = acc.attempts[-1].nodes
            st.ended = acc.ended
            if acc.ended and acc.state != "COMPLETED":
                last = acc.attempts[-1]
                st.detail = (
                    f"exit {last.exit_code}"
                    + (f", {last.reason}" if last.reason not in ("None", "") else "")
                    + (f"; {detail}" if detail else "")
                )
            if acc.restarts:
                st.detail += f" ({acc.restarts} restart(s))"
        elif file_status is not None:
            # Slurm no longer knows the job (no accounting database, or purged): trust its files.
            st.state, st.ended = ("COMPLETED" if file_status == "completed" else "FAILED"), True
        st.ok = st.ended and st.state == "COMPLETED" and file_status in (None, "completed")
        if st.ended and st.state == "COMPLETED" and name != "eval" and file_status != "completed":
            st.ok = False  # Slurm says fine, but the job did not record a completed training
            st.detail = st.detail or "no metrics.json: training did not complete"
        out.append(st)
    return out


def format_statuses(statuses: list[JobStatus]) -> str:
    header = ("job", "job id", "state", "elapsed", "nodes", "progress")
    rows = [header] + [(s.name, s.job_id, s.state, s.elapsed, s.nodes, s.detail) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def wait(
    exp_dir: Path, poll_s: float = 5.0, print_every_s: float = 30.0, out: tp.TextIO = sys.stdout
) -> list[JobStatus]:
    """Block until every job has ended, printing the table when it changes (or every ``print_every_s``)."""
    last_text, last_states, last_print = "", None, 0.0
    while True:
        statuses = job_statuses(exp_dir)
        text = format_statuses(statuses)
        states = [(s.name, s.state) for s in statuses]
        done = all(s.ended for s in statuses)
        if states != last_states or time.monotonic() - last_print >= print_every_s or (done and text != last_text):
            print(text + "\n", file=out, flush=True)
            last_text, last_states, last_print = text, states, time.monotonic()
        if done:
            return statuses
        time.sleep(poll_s)


def log_paths(exp_dir: Path, name: str, task: int = 0) -> tuple[Path, Path]:
    """(stdout, stderr) of one task of a job, as submitit names them."""
    manifest = read_json(Path(exp_dir) / "manifest.json")
    rec = manifest.get("jobs", {}).get(name)
    if rec is None:
        known = ", ".join(manifest.get("jobs", {})) or "none yet"
        raise KeyError(f"no job {name!r} in {exp_dir}/manifest.json -> one of: {known}")
    job_id = rec["job_id"]
    folder = Path(exp_dir) / "jobs" / job_id
    return folder / f"{job_id}_{task}_log.out", folder / f"{job_id}_{task}_log.err"
