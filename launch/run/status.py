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

from launch.run import slurm
from launch.store.expdir import EVAL_JOB, ExperimentDir, parse_address


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


def _fmt_elapsed(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _train_detail(exp: ExperimentDir, name: str) -> tuple[str, str | None]:
    """(progress text, training status from metrics.json or None)."""
    metrics = exp.method(name).read_metrics()
    if metrics.status not in ("missing", "unreadable"):
        if metrics.completed:
            loss = metrics.final_loss if metrics.final_loss is not None else float("nan")
            return f"done: {metrics.steps} steps, loss {loss:.4f}", metrics.status
        return f"{metrics.status}: {str(metrics.error or '')[:160]}", metrics.status
    progress = exp.method(name).read_progress()
    if progress is not None:
        return f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f}", None
    return "", None


def _eval_detail(exp: ExperimentDir, name: str) -> tuple[str, str | None]:
    """The evaluation job's progress (``eval``), or a task's of an evaluation array (``eval[i]``)."""
    shard = parse_address(name)[1]
    if shard is not None:
        p = exp.eval.read_progress(shard)
        return (f"scored {len(p.finished)}/{p.models} model(s)" if p else ""), None
    results = exp.eval.scored()
    if exp.summary_file.is_file():
        return f"report written ({len(results)} model(s) scored)", "completed"
    if len(results) > 8:
        return f"scored: {len(results)} models", None
    return (f"scored: {', '.join(results)}" if results else ""), None


def refusal(exp: ExperimentDir) -> str | None:
    """Why the experiment was never fully submitted (sbatch refused a job), or None.

    Such an experiment has no evaluation job and its other jobs were cancelled: it is not an
    experiment in progress, and ``status``/``resume`` say so instead of showing an empty table.
    """
    error = exp.read_manifest().submit_error
    if not error:
        return None
    return (
        f"this experiment was never fully submitted: {error}; the jobs submitted before were cancelled "
        "-> fix the profile and `cyberft submit` the config again"
    )


def select_jobs(exp: ExperimentDir, addresses: tp.Sequence[str] = ()) -> list[str]:
    """The manifest's job names that ``addresses`` name (all when empty): a method names all its
    cells (``lora`` -> ``lora[0]``, ``lora[1]``...), ``eval`` every evaluation job.

    Raises KeyError naming what exists when an address names no job.
    """
    names = list(exp.read_manifest().jobs)
    if not addresses:
        return names
    out: list[str] = []
    for address in addresses:
        found = [n for n in names if n == address or (parse_address(address)[1] is None and _method_of(n) == address)]
        if not found:
            raise KeyError(f"no job {address!r} in {exp.manifest_file} -> a method, a cell or eval: {_known(names)}")
        out += [n for n in found if n not in out]
    return out


def _method_of(name: str) -> str:
    return parse_address(name)[0]


def _known(names: tp.Sequence[str]) -> str:
    """``full_sft[0-2], lora[0-11], eval`` (the jobs of a manifest, each method's cells as one span)."""
    spans: dict[str, list[int | None]] = {}
    for n in names:
        method, index = parse_address(n)
        spans.setdefault(method, []).append(index)
    out = []
    for method, indexes in spans.items():
        cells = sorted(i for i in indexes if i is not None)
        out.append(
            f"{method}[{cells[0]}-{cells[-1]}]" if len(cells) > 1 else f"{method}[{cells[0]}]" if cells else method
        )
    return ", ".join(out) or "none yet"


def job_statuses(exp: ExperimentDir, names: tp.Sequence[str] | None = None) -> list[JobStatus]:
    """The state of every job in the experiment's manifest (or of the jobs ``names``): one ``squeue``
    and one ``sacct`` call, whatever the number of jobs or cells."""
    manifest = exp.read_manifest()
    jobs = manifest.jobs if names is None else {n: manifest.jobs[n] for n in names}
    ids = [rec.job_id for rec in jobs.values()]
    live: dict[str, slurm.LiveJob] = {}
    accounts: dict[str, slurm.JobAccount] = {}
    if manifest.on_slurm:
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
        is_eval = _method_of(name) == EVAL_JOB
        detail, file_status = _eval_detail(exp, name) if is_eval else _train_detail(exp, name)
        st = JobStatus(name, rec.job_id, "UNKNOWN", detail=detail)
        if rec.job_id in live:
            lj = live[rec.job_id]
            st.state, st.elapsed, st.nodes = lj.state, lj.elapsed, lj.nodes
            if lj.state == "PENDING" and lj.reason not in ("None", ""):
                st.detail = f"waiting: {lj.reason}" + (f"; {detail}" if detail else "")
        elif rec.job_id in accounts:
            _from_accounting(st, accounts[rec.job_id], detail)
        elif file_status is not None:
            # Slurm no longer knows the job (no accounting database, or purged): trust its files.
            st.state, st.ended = ("COMPLETED" if file_status == "completed" else "FAILED"), True
        st.ok = st.ended and st.state == "COMPLETED" and file_status in (None, "completed")
        if st.ended and st.state == "COMPLETED" and not is_eval and file_status != "completed":
            st.ok = False  # Slurm says fine, but the job did not record a completed training
            st.detail = st.detail or "no metrics.json: training did not complete"
        out.append(st)
    return out


def _from_accounting(st: JobStatus, acc: slurm.JobAccount, detail: str) -> None:
    """Fill ``st`` from ``sacct``'s record of an ended (or forgotten by squeue) job."""
    st.state, st.elapsed = acc.state, _fmt_elapsed(acc.elapsed_s)
    st.nodes = acc.attempts[-1].nodes
    st.ended = acc.ended
    if acc.ended and acc.state != "COMPLETED":
        last = acc.attempts[-1]
        reason = f", {last.reason}" if last.reason not in ("None", "") else ""
        st.detail = f"exit {last.exit_code}{reason}" + (f"; {detail}" if detail else "")
    if acc.restarts:
        st.detail += f" ({acc.restarts} restart(s))"


def format_statuses(statuses: list[JobStatus]) -> str:
    header = ("job", "job id", "state", "elapsed", "nodes", "progress")
    rows = [header] + [(s.name, s.job_id, s.state, s.elapsed, s.nodes, s.detail) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def wait(
    exp: ExperimentDir,
    poll_s: float = 5.0,
    print_every_s: float = 30.0,
    out: tp.TextIO = sys.stdout,
    names: tp.Sequence[str] | None = None,
) -> list[JobStatus]:
    """Block until every job (or every one of ``names``) has ended, printing the table when it
    changes (or every ``print_every_s``)."""
    last_text, last_states, last_print = "", None, 0.0
    while True:
        statuses = job_statuses(exp, names)
        text = format_statuses(statuses)
        states = [(s.name, s.state) for s in statuses]
        done = all(s.ended for s in statuses)
        if states != last_states or time.monotonic() - last_print >= print_every_s or (done and text != last_text):
            print(text + "\n", file=out, flush=True)
            last_text, last_states, last_print = text, states, time.monotonic()
        if done:
            return statuses
        time.sleep(poll_s)


def log_paths(exp: ExperimentDir, name: str, task: int = 0) -> tuple[Path, Path]:
    """(stdout, stderr) of one task of a job, as submitit names them (asked of submitit's ``JobPaths``).

    ``name``: a job's manifest name: a method without a sweep, a cell (``lora[3]``), ``eval``.
    """
    jobs = exp.read_manifest().jobs
    if name not in jobs:
        cells = [n for n in jobs if _method_of(n) == name and n != name]
        hint = f" (its cells: {_known(cells)}; give one)" if cells else ""
        raise KeyError(f"no job {name!r} in {exp.manifest_file}{hint} -> one of: {_known(list(jobs))}")
    paths = exp.job_paths(jobs[name].job_id, task)
    return paths.stdout, paths.stderr
