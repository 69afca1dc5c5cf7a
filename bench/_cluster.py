"""The dev Slurm cluster of a benchmark: started, and always torn down, its stray job processes included.

``bench_submit.py`` and ``bench_sweep.py`` run against ``slurm/dev-cluster/up``. Its ``down`` cancels the
jobs and stops the daemons by their PID files, but when the cancel fails (see :func:`cancel_all`) or a
step is still being launched, the jobs' ``slurmstepd``, job script, ``srun`` and job processes outlive
the daemons and wait for a controller that is gone, for hours. So :func:`dev_cluster` cancels the jobs
itself, runs ``down``, and then ends every process left that belongs to *that* cluster, whether the
benchmark finished, raised, was interrupted or got SIGTERM.

A process belongs to the cluster in ``BASE`` when its environment holds ``SLURM_CONF=BASE/etc/slurm.conf``:
``up`` exports it before it starts slurmctld and slurmd, slurmd hands its environment to every
``slurmstepd``, and ``sbatch``/``srun`` pass it on to the job. Another cluster (a developer's own, or a
second benchmark's) has another ``BASE``, so nothing of it is touched; nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import typing as tp
from pathlib import Path

from _common import log

PROC = Path("/proc")
TERM_WAIT_S = 10.0
"""How long stray processes get after SIGTERM before SIGKILL (slurmstepd waits for its tasks to end)."""
KILL_WAIT_S = 5.0
"""How long a SIGKILLed process may take to disappear before the teardown reports it as still alive."""


class TeardownError(RuntimeError):
    """Processes of a benchmark's cluster are still alive after ``down``, SIGTERM and SIGKILL."""


def conf_entry(base: str | os.PathLike) -> bytes:
    """The environment entry that marks the processes of the cluster in ``base``, as bytes of ``environ``."""
    return f"SLURM_CONF={os.path.abspath(base)}/etc/slurm.conf".encode()


def pid_alive(pid: int, proc: Path = PROC) -> bool:
    """True while ``pid`` exists and is not a zombie (a killed process stays ``<defunct>`` until reaped)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state not in ("", "Z")


def cluster_processes(base: str | os.PathLike, proc: Path = PROC, exclude: tp.Iterable[int] = ()) -> list[int]:
    """Pids of the live processes of the cluster in ``base`` (see the module docstring), in ``proc``.

    Parameters
    ----------
    base
        The cluster's directory (``BASE`` of ``up``).
    proc
        The proc file system to read; a test passes a fake one.
    exclude
        Pids never returned. This process is always left out.

    Returns
    -------
    list[int]
        Sorted pids; processes whose environment cannot be read (gone, or not ours) are left out.
    """
    entry = conf_entry(base)
    skip = {os.getpid(), *exclude}
    found = []
    for path in proc.iterdir():
        if not path.name.isdigit() or int(path.name) in skip:
            continue
        try:
            environ = (path / "environ").read_bytes()
        except OSError:
            continue  # ended while we looked, or another user's
        if entry in environ.split(b"\0") and pid_alive(int(path.name), proc):
            found.append(int(path.name))
    return sorted(found)


def describe(pid: int, proc: Path = PROC) -> str:
    """``pid (command line)`` for a log line; the command is ``?`` once the process is gone."""
    try:
        cmd = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"{pid} ({cmd[:100] or '?'})"


def end_processes(
    pids: tp.Sequence[int], term_wait: float = TERM_WAIT_S, kill_wait: float = KILL_WAIT_S, proc: Path = PROC
) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still alive after ``term_wait`` seconds; return those that survived both."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        alive = [p for p in pids if pid_alive(p, proc)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while alive and time.monotonic() < end:
            time.sleep(0.1)
            alive = [p for p in alive if pid_alive(p, proc)]
        if not alive:
            return []
    return alive


def end_leftovers(base: str | os.PathLike, name: str, proc: Path = PROC, **waits: float) -> None:
    """End what is left of the cluster in ``base`` after ``down``; raise :class:`TeardownError` if some survive."""
    left = cluster_processes(base, proc)
    if not left:
        return
    shown = ", ".join(describe(p, proc) for p in left)
    log(name, f"{len(left)} process(es) of the cluster outlived down, ending them: {shown}")
    survivors = end_processes(left, proc=proc, **waits)
    if survivors:
        raise TeardownError(
            f"processes {survivors} of the dev cluster in {base} survived SIGTERM and SIGKILL; "
            f"check them with `ps -o pid,stat,cmd -p {','.join(map(str, survivors))}` and end them by hand"
        )


def cancel_all(env: dict, timeout: float = 30.0) -> None:
    """Cancel every job of the cluster in ``env`` and wait until its queue is empty.

    By array job id (``squeue -o %F``): ``down`` passes ``squeue -o %i``'s ids to scancel, and a
    throttled array's pending part prints as ``4242_[2-39%2]``, which scancel rejects ("Invalid
    range"), cancelling none of the ids given, running tasks included. Raises ``RuntimeError`` if
    scancel fails or jobs are left after ``timeout`` seconds.
    """
    ids = sorted(set(_slurm(["squeue", "-h", "-o", "%F"], env).split()))
    if ids:
        _slurm(["scancel", *ids], env)
    end = time.monotonic() + timeout
    while _slurm(["squeue", "-h", "-o", "%i"], env).strip():
        if time.monotonic() > end:
            raise RuntimeError(f"jobs still queued {timeout:.0f}s after scancel {' '.join(ids)}")
        time.sleep(0.2)


def _slurm(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def teardown(base: Path, name: str, stop: tp.Callable[[Path], None], env: dict | None = None) -> None:
    """Cancel the jobs (with ``env``, when the cluster came up), ``stop(base)`` (``down``), end the
    cluster's stray processes, then delete ``base``.

    Cancelling first lets the jobs end through Slurm; it is best effort (a failure is logged), since
    ``down`` and :func:`end_leftovers` end them anyway. Those two always both run; the first of their
    failures is raised at the end, and ``base`` is then kept (its logs say why).
    """
    if env is not None:
        try:
            cancel_all(env)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log(name, f"teardown: could not cancel the jobs ({exc}); down and the leftover check still run")
    errors: list[Exception] = []
    for step in (lambda: stop(base), lambda: end_leftovers(base, name)):
        try:
            step()
        except Exception as exc:  # every step must run; the first error is raised below
            errors.append(exc)
            log(name, f"teardown: {type(exc).__name__}: {exc}")
    if errors:
        raise errors[0]
    shutil.rmtree(base, ignore_errors=True)
    log(name, "dev cluster stopped")


@contextlib.contextmanager
def signals_raise(signums: tp.Iterable[int] = (signal.SIGTERM, signal.SIGHUP)) -> tp.Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise ``SystemExit(128 + signum)``, so ``finally`` blocks run.

    By default they end the process at once, which would leave the cluster running (a time-out's
    ``kill``, a closed terminal). Ctrl-C already raises ``KeyboardInterrupt``.
    """

    def raise_exit(signum: int, _frame: tp.Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, raise_exit) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def dev_cluster(
    name: str, topo: str = "single", acct: str = "dbd", cluster: tp.Any = None
) -> tp.Iterator[tuple[Path, dict]]:
    """Start the dev cluster (``up`` on free ports); yield ``(base, env)``; always tear it down.

    Parameters
    ----------
    name
        The benchmark's name: the log prefix and part of the cluster directory's name.
    topo, acct
        ``TOPO`` and ``ACCT`` of ``up``.
    cluster
        What starts and stops it: ``make_base``, ``start_cluster`` and ``stop_cluster`` as in
        ``tests/support/slurm_cluster.py`` (the default); a test passes a fake.

    Yields
    ------
    tuple[Path, dict]
        The cluster's directory, and this process's environment with the cluster's ``SLURM_CONF``.

    Notes
    -----
    However the block is left (return, exception, Ctrl-C, SIGTERM, SIGHUP), :func:`teardown` cancels
    the cluster's jobs, runs ``down``, ends any process of this cluster that outlived it and removes
    the directory. A teardown failure is raised on a normal exit; after an exception it is logged and
    the original exception goes on.
    """
    if cluster is None:
        from tests.support import slurm_cluster as cluster

    base = cluster.make_base(f"cyberft-bench-{name}-")
    env = None
    with signals_raise():
        try:
            t0 = time.perf_counter()
            env = dict(os.environ, **cluster.start_cluster(base, topo=topo, acct=acct))
            log(name, f"dev cluster ({topo}, {acct}) up in {time.perf_counter() - t0:.1f}s at {base}")
            yield base, dict(env)
        except BaseException:
            with contextlib.suppress(Exception):  # teardown logged it; the benchmark's own error matters more
                teardown(base, name, cluster.stop_cluster, env)
            raise
        teardown(base, name, cluster.stop_cluster, env)
