"""Talk to Slurm's command-line tools: job states, accounting, cancelling.

Thin wrappers over ``squeue``, ``sacct`` and ``scancel`` (standard library
only, no torch), used by ``cyberft status|logs|cancel`` on the login node and by
the evaluation job on a compute node to put Slurm's own accounting in the report.

Cost comes from ``sacct`` because it is what the site bills: GPU-hours are
``gres/gpu`` of AllocTRES x Elapsed, summed over *every* attempt of a job
(``--duplicates``: a requeued or preempted job has one record per attempt, and
each attempt held its GPUs).

Job arrays (one per method of a sweep) are named as Slurm 22.05 names them, checked on the dev
cluster: a task is ``<array id>_<task>`` in ``squeue -r`` (without ``-r`` its pending tasks are one
line, ``4242_[5-11%4]``) and in sacct's ``JobID``; sacct's ``JobIDRaw`` is a different number per
task (the last task started takes the array's own id), so tasks are matched by ``JobID``. A
requeued task keeps its ``JobID`` and has one sacct record per attempt, as a plain job does.
Tasks not started yet are one sacct line in the collapsed form, expanded here. Every call asks
for the array ids (``-j 4242``), so one ``squeue`` and one ``sacct`` cover any number of cells.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
import typing as tp
from dataclasses import dataclass, field

from launch.store.expdir import Manifest

ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
"""States of a job that has not ended: it may still run (again)."""

SACCT_FIELDS = (
    "JobID",
    "State",
    "ElapsedRaw",
    "AllocTRES",
    "Submit",
    "Start",
    "End",
    "NodeList",
    "ExitCode",
    "Reason",
)


class SlurmError(RuntimeError):
    """A Slurm command failed (not installed, no controller, no accounting database)."""


def available(command: str = "sbatch") -> bool:
    """Whether a Slurm client command is on PATH."""
    return shutil.which(command) is not None


def _run(cmd: list[str], timeout: float = 30) -> str:
    if not available(cmd[0]):
        raise SlurmError(f"{cmd[0]} not found on PATH -> run this on a Slurm login node (or load the Slurm module)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(cmd)} did not answer within {timeout:.0f}s (is slurmctld/slurmdbd up?)") from None
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


# --------------------------------------------------------------------------- squeue


@dataclass
class LiveJob:
    """One job as ``squeue`` sees it (queued or running)."""

    job_id: str
    state: str
    elapsed: str
    nodes: str
    reason: str


def array_ids(job_ids: tp.Iterable[str]) -> list[str]:
    """The ids to ask Slurm about: each array once (``4242`` for ``4242_0``..``4242_11``), plain jobs as they are."""
    return list(dict.fromkeys(j.split("_")[0] for j in job_ids))


def squeue(job_ids: tp.Sequence[str]) -> dict[str, LiveJob]:
    """Jobs among ``job_ids`` (plain ids, array tasks ``4242_3``) that Slurm still holds (pending, running...).

    One call, whatever the number of tasks: ``-r`` lists an array's pending tasks one per line.
    """
    if not job_ids:
        return {}
    out = _run(["squeue", "-h", "-a", "-r", "-o", "%i|%T|%M|%N|%r", "-j", ",".join(array_ids(job_ids))])
    return _parse_squeue(out, set(job_ids))


def _parse_squeue(out: str, wanted: set[str]) -> dict[str, LiveJob]:
    jobs: dict[str, LiveJob] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        for job_id in expand_task_ids(parts[0]):
            if job_id in wanted:
                jobs[job_id] = LiveJob(job_id, *parts[1:])
    return jobs


def expand_task_ids(job_id: str) -> list[str]:
    """``4242_[5-7%4]`` -> ``4242_5``, ``4242_6``, ``4242_7`` (Slurm's collapsed pending tasks); others as given."""
    head, bracket, rest = job_id.partition("_[")
    if not bracket or not rest.endswith("]"):
        return [job_id]
    out = []
    for part in rest[:-1].split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            out += [f"{head}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


# --------------------------------------------------------------------------- sacct


@dataclass
class Attempt:
    """One record of ``sacct -X --duplicates``: one run (attempt) of a job."""

    job_id: str
    state: str
    elapsed_s: int
    tres: dict[str, str]
    submit: str
    start: str
    end: str
    nodes: str
    exit_code: str
    reason: str

    @property
    def gpus(self) -> int:
        """GPUs held: ``gres/gpu``. A site that also accounts typed GRES lists the same GPUs again as
        ``gres/gpu:a100``, so the typed entries count only where the untyped one is missing."""
        if "gres/gpu" in self.tres:
            return _count(self.tres["gres/gpu"])
        return sum(_count(v) for k, v in self.tres.items() if k.startswith("gres/gpu:"))

    @property
    def cpus(self) -> int:
        return _count(self.tres.get("cpu"))


@dataclass
class JobAccount:
    """Everything ``sacct`` knows about one job, all attempts together."""

    job_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def state(self) -> str:
        """The last attempt's state, the first word only (``CANCELLED by 0`` -> ``CANCELLED``)."""
        return self.attempts[-1].state.split()[0] if self.attempts else "UNKNOWN"

    @property
    def ended(self) -> bool:
        return bool(self.attempts) and self.state not in ACTIVE_STATES

    @property
    def gpu_hours(self) -> float:
        return sum(a.gpus * a.elapsed_s for a in self.attempts) / 3600

    @property
    def cpu_hours(self) -> float:
        return sum(a.cpus * a.elapsed_s for a in self.attempts) / 3600

    @property
    def elapsed_s(self) -> int:
        return sum(a.elapsed_s for a in self.attempts)

    @property
    def restarts(self) -> int:
        """Attempts that ended by requeue/preemption/node failure and were run again."""
        return max(0, len([a for a in self.attempts if a.start not in ("", "Unknown", "None")]) - 1)

    @property
    def queue_wait_s(self) -> float | None:
        """Submit to first start, in seconds (None before it started)."""
        first = next((a for a in self.attempts if _parse_time(a.start)), None)
        if first is None or _parse_time(first.submit) is None:
            return None
        return (_parse_time(first.start) - _parse_time(first.submit)).total_seconds()

    def summary(self, price_per_gpu_hour: float | None = None) -> dict[str, tp.Any]:
        """The report's Slurm fields for this job."""
        last = self.attempts[-1] if self.attempts else None
        return {
            "job_id": self.job_id,
            "slurm_state": self.state,
            "slurm_exit_code": last.exit_code if last else None,
            "slurm_reason": last.reason if last and last.reason not in ("None", "") else None,
            "attempts": len(self.attempts),
            "restarts": self.restarts,
            "elapsed_s": self.elapsed_s,
            "queue_wait_s": self.queue_wait_s,
            "gpu_hours": round(self.gpu_hours, 6),
            "cpu_hours": round(self.cpu_hours, 6),
            "gpus": last.gpus if last else None,
            "nodes": last.nodes if last else None,
            "cost": round(self.gpu_hours * price_per_gpu_hour, 6) if price_per_gpu_hour is not None else None,
            "cost_source": "sacct",
        }


def _count(value: str | None) -> int:
    if not value:
        return 0
    digits = "".join(ch for ch in value if ch.isdigit())
    return int(digits) if digits else 0


def _parse_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):  # "Unknown", "None", ""
        return None


def parse_tres(text: str) -> dict[str, str]:
    """``billing=2,cpu=2,gres/gpu=2,node=1`` -> ``{"billing": "2", "cpu": "2", ...}``."""
    out = {}
    for item in text.split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def parse_sacct(out: str) -> dict[str, JobAccount]:
    """Parse ``sacct -X -D -P -n -o <SACCT_FIELDS>`` output into accounts per job id (``4242_3`` for a task)."""
    accounts: dict[str, JobAccount] = {}
    for line in out.splitlines():
        parts = line.rstrip("\n").split("|")
        if len(parts) != len(SACCT_FIELDS):
            continue
        job_id, state, elapsed, tres, submit, start, end, nodes, exit_code, reason = parts
        for base_id in expand_task_ids(job_id.split(".")[0]):
            attempt = Attempt(
                base_id,
                state,
                int(elapsed) if elapsed.isdigit() else 0,
                parse_tres(tres),
                submit,
                start,
                end,
                nodes,
                exit_code,
                reason,
            )
            accounts.setdefault(base_id, JobAccount(base_id)).attempts.append(attempt)
    return accounts


def sacct(job_ids: tp.Sequence[str]) -> dict[str, JobAccount]:
    """Accounting records of ``job_ids`` (plain ids, array tasks ``4242_3``), every attempt (needs slurmdbd).

    One call: each array is asked for once; the answer may hold more tasks than were asked for.
    """
    if not job_ids:
        return {}
    out = _run(["sacct", "-X", "-D", "-P", "-n", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(array_ids(job_ids))])
    return parse_sacct(out)


def wait_accounted(job_ids: tp.Sequence[str], timeout_s: float = 60, poll_s: float = 1.0) -> dict[str, JobAccount]:
    """``sacct`` once every job has ended there (slurmctld reports job ends to slurmdbd asynchronously).

    Returns the last answer after ``timeout_s`` even if some job still looks active.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        accounts = sacct(job_ids)
        if all(j in accounts and accounts[j].ended for j in job_ids) or time.monotonic() >= deadline:
            return accounts
        time.sleep(poll_s)


# --------------------------------------------------------------------------- scancel


def scancel(job_ids: tp.Sequence[str]) -> None:
    """Cancel jobs (ids that already ended are ignored by Slurm)."""
    if job_ids:
        _run(["scancel", *job_ids])


# --------------------------------------------------------------------------- experiments


def experiment_accounts(
    manifest: Manifest, price_per_gpu_hour: float | None, timeout_s: float = 60
) -> tuple[dict[str, dict] | None, str]:
    """Slurm's accounting of each training job of a submitted experiment (a method's, or a cell's).

    Returns ``({address: JobAccount.summary(price)}, note)``; ``(None, why)`` for a local
    run or when ``sacct`` cannot answer (then the report keeps the jobs' own estimate,
    ``cost_source: local``). Waits up to ``timeout_s`` for jobs that just ended to
    reach the accounting database.
    """
    if not manifest.on_slurm:
        return None, "local run"
    # A method or cell resubmitted by `cyberft resume` ran as several jobs: its cost is all of them.
    jobs = {name: rec.all_ids for name, rec in manifest.training_jobs().items()}
    try:
        accounts = wait_accounted([i for ids in jobs.values() for i in ids], timeout_s=timeout_s)
    except SlurmError as exc:
        return None, f"sacct unavailable: {exc}"
    out = {}
    for name, ids in jobs.items():
        if ids[-1] in accounts:
            attempts = [a for i in ids if i in accounts for a in accounts[i].attempts]
            out[name] = JobAccount(ids[-1], attempts).summary(price_per_gpu_hour)
    return out, "sacct"
