"""The benchmarks that run on the dev Slurm cluster (bench/bench_submit.py, bench/bench_sweep.py), without one.

Issue 23: ``make bench`` read a successful ``cyberft submit`` as a failure (the smoke study had grown to
seven methods, 8 jobs, where the benchmark counted 4 job lines of the printed output), and a benchmark
that failed left the cluster's ``slurmstepd`` and ``srun`` running. Here the submissions go to the fake
``sbatch`` (tests/support/fake_slurm.py) with a bitsandbytes-style warning on the command's stderr, and
the teardown runs on a fake cluster whose ``down`` leaves a job process behind. About 15 s on 2 cores.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import types
import typing as tp
from pathlib import Path
from unittest import mock

import pytest

from support.fake_slurm import FAKE_SCANCEL, install_fake_slurm

REPO = Path(__file__).resolve().parents[1]
BNB_WARNING = (
    "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. "
    "Please make sure you already `pip install kernels` and the kernels >= 0.11.1"
)
"""What bitsandbytes logs on stderr on a CPU with AVX512-BF16 when the ``kernels`` package is missing."""


def bench_module(name: str) -> types.ModuleType:
    """Import ``bench/<name>.py``; the environment defaults a benchmark sets on import are undone."""
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    with mock.patch.dict(os.environ):
        return importlib.import_module(name)


@pytest.fixture
def noisy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake Slurm on PATH, and every Python process started with it logs :data:`BNB_WARNING` on stderr."""
    monkeypatch.chdir(REPO)
    install_fake_slurm(tmp_path, monkeypatch)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import logging\nlogging.getLogger('bitsandbytes.cpu').warning({BNB_WARNING!r})\n", encoding="utf-8"
    )
    return dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def submitted_scripts(env: dict[str, str]) -> int:
    return len(list(Path(env["FAKE_SLURM"]).glob("script-*.sh")))


# ----------------------------------------------------------------------------- reading a submission


def test_submit_bench_reads_the_jobs_of_a_successful_submission(
    noisy_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    sub = bench_module("bench_submit")
    config = sub.bench_config(tmp_path)
    _, ids = sub.submit_ours(config, tiny_model, tmp_path / "runs0", noisy_env)
    # The shape the baseline and the target are for: one job per classic method, then the evaluation.
    assert sub.training_jobs(config) == 3
    assert ids == ["5001", "5002", "5003", "5004"]
    assert submitted_scripts(noisy_env) == 4


def test_the_warning_reaches_the_submit_commands_stderr(noisy_env: dict[str, str]) -> None:
    """The test above is only worth something if the submission really ran with the warning."""
    proc = subprocess.run(
        [sys.executable, "-c", "pass"], env=noisy_env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "No module named 'kernels'" in proc.stderr


def test_a_refused_submission_is_an_error_that_names_the_counts(
    noisy_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    sub = bench_module("bench_submit")
    env = dict(noisy_env, FAKE_SBATCH_FAIL_AT="5003")  # sbatch refuses the third training job
    with pytest.raises(RuntimeError, match=r"failed: exit [1-9]\d*, \d job\(s\) in the manifest .*expected 4 ") as exc:
        sub.submit_ours(sub.bench_config(tmp_path), tiny_model, tmp_path / "runs0", env)
    assert "Invalid qos specification" in str(exc.value)  # the command's own stderr is shown


def test_sweep_bench_reads_the_200_cell_submission(noisy_env: dict[str, str], tiny_model: Path, tmp_path: Path) -> None:
    sweep = bench_module("bench_sweep")
    config = bench_module("bench_submit").bench_config(tmp_path)
    _, exp = sweep.submit_sweep(config, tiny_model, tmp_path / "runs0", noisy_env)
    assert len(sweep.array_ids(exp)) == sweep.SBATCH_CALLS == submitted_scripts(noisy_env)
    assert len(bench_module("bench_submit").manifest_job_ids(exp)) == sweep.JOBS == 212


def test_a_reused_output_dir_is_a_mistake_not_a_miscount(tmp_path: Path) -> None:
    sub = bench_module("bench_submit")
    (tmp_path / "smoke-1").mkdir()
    (tmp_path / "smoke-2").mkdir()
    with pytest.raises(RuntimeError, match="holds 2 experiments; give every submission a new output_dir"):
        sub.submitted_experiment(tmp_path)
    assert sub.submitted_experiment(tmp_path / "none") is None
    assert sub.manifest_job_ids(tmp_path / "smoke-1") == {}


# ----------------------------------------------------------------------------- tearing the cluster down


def stray(base: Path, ignore_term: bool = False) -> subprocess.Popen:
    """A process that looks like a job step of the cluster in ``base``: it has the cluster's SLURM_CONF."""
    # SIGTERM's disposition set either way: one the suite inherited (SIG_IGN) would otherwise pass to the stray.
    code = f"import signal, time\nsignal.signal(signal.SIGTERM, signal.{'SIG_IGN' if ignore_term else 'SIG_DFL'})\n"
    code += "print('ready', flush=True)\ntime.sleep(600)\n"
    env = dict(os.environ, SLURM_CONF=f"{base}/etc/slurm.conf")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # its signal handler is in place
    return proc


@pytest.fixture
def strays() -> tp.Iterator[list[subprocess.Popen]]:
    """Processes a test starts; whatever the test leaves alive is killed and reaped."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_the_cluster_processes_are_found_by_their_slurm_conf_only(tmp_path: Path, strays: list) -> None:
    cl = bench_module("_cluster")
    ours, other = tmp_path / "ours", tmp_path / "other"
    strays += [stray(ours), stray(other)]
    found = cl.cluster_processes(ours)
    assert strays[0].pid in found
    assert strays[1].pid not in found  # another cluster (a developer's own) is left alone
    assert os.getpid() not in found


def test_processes_that_ignore_sigterm_get_sigkill(tmp_path: Path, strays: list) -> None:
    cl = bench_module("_cluster")
    strays += [stray(tmp_path, ignore_term=True), stray(tmp_path)]
    pids = [p.pid for p in strays]
    assert cl.end_processes(pids, term_wait=0.5, kill_wait=30) == []
    assert [p.wait(timeout=30) for p in strays] == [-signal.SIGKILL, -signal.SIGTERM]


FAKE_SQUEUE = """#!/bin/sh
# One queued job until scancel has run; `-o %F` (array job ids) is what the teardown cancels by.
[ -f "$FAKE_SLURM/scancel" ] || echo 4242
"""


class FakeCluster:
    """``make_base``/``start_cluster``/``stop_cluster`` whose ``down`` leaves a job step running.

    Its ``squeue`` shows one job until ``scancel`` (recorded in ``fake-slurm/scancel``) has run.
    """

    def __init__(self, tmp_path: Path, strays: list, stop_fails: bool = False, squeue: str = FAKE_SQUEUE) -> None:
        self.tmp_path, self.strays, self.stop_fails = tmp_path, strays, stop_fails
        self.stopped: list[Path] = []
        self.bin, self.state = tmp_path / "bin", tmp_path / "fake-slurm"
        for folder in (self.bin, self.state):
            folder.mkdir()
        for name, text in (("squeue", squeue), ("scancel", FAKE_SCANCEL)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def make_base(self, prefix: str) -> Path:
        base = self.tmp_path / f"{prefix}0"
        base.mkdir()
        return base

    def start_cluster(self, base: Path, topo: str, acct: str) -> dict[str, str]:
        self.strays.append(stray(base))
        path = f"{self.bin}{os.pathsep}{os.environ['PATH']}"
        return {"SLURM_CONF": f"{base}/etc/slurm.conf", "PATH": path, "FAKE_SLURM": str(self.state)}

    def stop_cluster(self, base: Path) -> None:
        self.stopped.append(base)
        if self.stop_fails:
            raise RuntimeError("down failed (rc=1)")

    @property
    def cancelled(self) -> list[str]:
        path = self.state / "scancel"
        return path.read_text().split() if path.is_file() else []


def test_a_failing_benchmark_still_stops_its_cluster_and_its_strays(tmp_path: Path, strays: list) -> None:
    cl = bench_module("_cluster")
    fake = FakeCluster(tmp_path, strays)
    with (
        pytest.raises(RuntimeError, match="cyberft submit failed"),
        cl.dev_cluster("sweep", cluster=fake) as (base, env),
    ):
        assert env["SLURM_CONF"] == f"{base}/etc/slurm.conf"
        raise RuntimeError("cyberft submit failed")
    assert fake.cancelled == ["4242"]
    assert fake.stopped == [base]
    assert strays[0].wait(timeout=30) == -signal.SIGTERM
    assert not base.exists()


def test_sigterm_to_the_benchmark_stops_its_cluster(tmp_path: Path, strays: list) -> None:
    cl = bench_module("_cluster")
    fake = FakeCluster(tmp_path, strays)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, cl.dev_cluster("submit", cluster=fake) as (base, _env):
        os.kill(os.getpid(), signal.SIGTERM)  # a time-out's kill: Python runs the handler right away
        pytest.fail("SIGTERM did not interrupt the benchmark")
    assert exc.value.code == 128 + signal.SIGTERM
    assert fake.stopped == [base]
    assert strays[0].wait(timeout=30) == -signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failed_down_still_ends_the_strays_and_is_raised(tmp_path: Path, strays: list) -> None:
    cl = bench_module("_cluster")
    fake = FakeCluster(tmp_path, strays, stop_fails=True)
    with (
        pytest.raises(RuntimeError, match=r"down failed \(rc=1\)"),
        cl.dev_cluster("submit", cluster=fake) as (base, _),
    ):
        pass
    assert strays[0].wait(timeout=30) == -signal.SIGTERM
    assert base.exists()  # kept: its logs say why down failed


def test_the_fake_proc_view_is_read_as_the_real_one(tmp_path: Path) -> None:
    """cluster_processes reads only environ and status: a pid whose status says zombie is not counted."""
    cl = bench_module("_cluster")
    proc = tmp_path / "proc"
    entry = cl.conf_entry("/tmp/c")
    for pid, state, env in ((11, "S", entry), (12, "Z", entry), (13, "S", b"SLURM_CONF=/tmp/d/etc/slurm.conf")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "environ").write_bytes(b"PATH=/bin\0" + env + b"\0")
        (proc / str(pid) / "status").write_text(textwrap.dedent(f"Name:\tslurmstepd\nState:\t{state} (x)\n"))
    (proc / "self").mkdir()
    assert cl.cluster_processes("/tmp/c", proc=proc) == [11]


def test_a_controller_that_does_not_answer_does_not_stop_the_teardown(tmp_path: Path, strays: list) -> None:
    """Cancelling is best effort: with squeue failing, down and the leftover check still run, and nothing is raised."""
    cl = bench_module("_cluster")
    dead = "#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller' >&2\nexit 1\n"
    fake = FakeCluster(tmp_path, strays, squeue=dead)
    with cl.dev_cluster("submit", cluster=fake) as (base, _):
        pass
    assert fake.cancelled == []
    assert fake.stopped == [base]
    assert strays[0].wait(timeout=30) == -signal.SIGTERM
    assert not base.exists()
