"""Start and stop a real local Slurm cluster for integration tests (slurm/dev-cluster/up and down).

Not a test module: the dev-cluster tests import it.

Policy (:func:`cluster_or_skip`): without root, or without the Slurm packages and apt-get to
install them, the tests are skipped with the reason -- except when ``CI`` is set, where they
fail, so a CI runner that silently lost its cluster does not pass green.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
import typing as tp
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UP = REPO / "slurm" / "dev-cluster" / "up"
DOWN = REPO / "slurm" / "dev-cluster" / "down"
RUNNING: set[Path] = set()
"""Clusters started by :func:`start_cluster` in this process and not stopped yet."""
UP_TIMEOUT = "300"
"""``up``'s wait for each daemon and for the nodes (its own default, 60 s, is short on a loaded machine:
mariadbd alone has taken over a minute to answer on 2 shared cores)."""
PID_FILES = ("slurmd-*.pid", "slurmctld.pid", "slurmdbd.pid", "db/mariadbd.pid", "munge/munged.pid")


class ClusterUnavailable(RuntimeError):
    """The machine cannot run the dev cluster (not root, no packages and no apt-get)."""


def make_base(prefix: str = "cyberft-slurm-") -> Path:
    """A fresh, short cluster directory under /tmp.

    Not pytest's ``tmp_path``: munged needs o+x on every directory above its socket, and
    /tmp/pytest-of-<user> is 0700; unix socket paths are also limited to 107 bytes.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


START_LOCK = Path("/tmp/cyberft-slurm-start.lock")
"""Held while a cluster picks its ports and starts, by every process of the machine (see :func:`start_lock`)."""


@contextlib.contextmanager
def start_lock() -> tp.Iterator[None]:
    """One cluster start at a time on this machine, whichever process (another suite, another checkout) runs it.

    :func:`free_port_base` only finds ports that nobody has bound *yet*: two suites starting a cluster at the
    same moment would both pick the same range, and ``up``'s daemons bind it seconds later, so one cluster
    fails to start or its clients reach the other's controller. Held from the choice of ports until ``up``
    has returned (its daemons listen by then). The kernel drops the lock when its holder ends.
    """
    with open(START_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def free_port_base(start: int = 26817, stop: int = 60000, step: int = 10) -> int:
    """The first ``PORT_BASE`` whose five ports (``up`` uses base..base+4) are free on 127.0.0.1."""
    for base in range(start, stop, step):
        if all(_port_free(base + i) for i in range(5)):
            return base
    raise RuntimeError(f"no free 5-port range in {start}..{stop}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def unavailable_reason(acct: str = "dbd") -> str | None:
    """Why this machine cannot start the dev cluster, or None when it can (installing packages if needed)."""
    if os.geteuid() != 0:
        return "the dev Slurm cluster needs root (it runs slurmd, munged and mariadbd)"
    if not UP.is_file():
        return f"{UP} is missing"
    needed = ["slurmctld", "slurmd", "sinfo", "munged"] + (["slurmdbd", "mariadbd"] if acct == "dbd" else [])
    have = [shutil.which(b) or shutil.which(b, path="/usr/sbin:/usr/bin") for b in needed]
    if not all(have) and shutil.which("apt-get") is None:
        missing = [b for b, h in zip(needed, have) if not h]
        return f"Slurm is not installed ({', '.join(missing)} missing) and apt-get is not available to install it"
    return None


def start_cluster(
    base: Path,
    topo: str = "single",
    acct: str = "dbd",
    port_base: int | None = None,
    timeout: float = 900,
    gpu_type: str = "",
) -> dict[str, str]:
    """Run ``up`` with ``BASE=base``; return the environment variables to use (``{"SLURM_CONF": ...}``).

    ``port_base`` defaults to a free range, so a developer's own dev cluster on the default ports is
    left alone; ``gpu_type`` makes the fake GPUs typed GRES (``gpu:<type>:2``). Raises
    :class:`ClusterUnavailable` when the packages cannot be installed and ``RuntimeError`` (with
    up's output) for any other failure.
    """
    with start_lock():
        env = dict(
            os.environ,
            BASE=str(base),
            TOPO=topo,
            ACCT=acct,
            PORT_BASE=str(port_base or free_port_base()),
            GPU_TYPE=gpu_type,
            UP_TIMEOUT=os.environ.get("UP_TIMEOUT", UP_TIMEOUT),
        )
        env.pop("SLURM_CONF", None)
        t0 = time.monotonic()
        proc = subprocess.run([str(UP)], env=env, capture_output=True, text=True, timeout=timeout)
        elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        msg = f"{UP} failed (rc={proc.returncode}, {elapsed:.1f}s):\n{proc.stderr[-6000:]}{proc.stdout[-2000:]}"
        if "could not install" in proc.stderr:
            raise ClusterUnavailable(msg)
        raise RuntimeError(msg)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("export SLURM_CONF="), f"up's last line should be the export, got {last!r}"
    RUNNING.add(Path(base))
    print(f"dev cluster {topo}/{acct} up in {elapsed:.2f}s at {base}")
    return {"SLURM_CONF": last.split("=", 1)[1]}


def cluster_pids(base: Path) -> dict[str, int]:
    """The daemons ``up`` recorded under ``base``: {pid file relative to base: pid}."""
    out = {}
    for pattern in PID_FILES:
        for f in sorted(Path(base).glob(pattern)):
            text = f.read_text().strip()
            if text.isdigit():
                out[str(f.relative_to(base))] = int(text)
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a killed daemon stays <defunct> until reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state not in ("", "Z")


def stop_cluster(base: Path, timeout: float = 120, remove: bool = False) -> None:
    """Run ``down`` with ``BASE=base`` (idempotent); raise ``RuntimeError`` if it fails.

    ``remove``: also delete ``base`` once every daemon is gone.
    """
    if Path(base, ".slurm-dev-cluster").exists():
        env = dict(os.environ, BASE=str(base))
        proc = subprocess.run([str(DOWN)], env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{DOWN} failed (rc={proc.returncode}):\n{proc.stderr}{proc.stdout}")
    RUNNING.discard(Path(base))
    if remove:
        shutil.rmtree(base, ignore_errors=True)


def stop_all() -> None:
    """Stop every cluster this process started (so the next one never runs beside another)."""
    for base in sorted(RUNNING):
        stop_cluster(base)


def cluster_or_skip(base: Path, topo: str = "single", acct: str = "dbd", **kwargs: tp.Any) -> dict[str, str]:
    """:func:`start_cluster`, or ``pytest.skip`` with the reason when the machine cannot run it.

    With the environment variable ``CI`` set, an unavailable cluster fails the test instead.
    A cluster that is available but does not start always fails.
    """
    reason = unavailable_reason(acct)
    if reason is None:
        try:
            return start_cluster(base, topo, acct, **kwargs)
        except ClusterUnavailable as exc:
            reason = str(exc)
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the dev Slurm cluster is required: {reason}")
    pytest.skip(reason)


def run(cmd: tp.Sequence[str], env: dict[str, str], timeout: float = 30) -> str:
    """Run a Slurm client command against the cluster in ``env``; return stdout, raise with stderr on failure."""
    proc = subprocess.run(list(cmd), env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def wait_job(job_id: str, env: dict[str, str], timeout: float = 60) -> str:
    """Poll ``sacct`` until the job has ended; return its final state (COMPLETED, FAILED...). Needs ACCT=dbd."""
    end = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < end:
        out = run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], env).strip()
        state = out.split()[0] if out else "?"  # "?" until slurmctld has sent the job to slurmdbd
        if state not in ("?", "PENDING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"):
            return state
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s (last sacct state {state})")
