"""Stopping `cyberft run` cancels the local jobs it started (they run in processes of their own)."""

from __future__ import annotations

import functools
import os
import signal
import time

import pytest

from launch.run.local import cancelled_on_exit, start_job


class FakeJob:
    def __init__(self, done: bool) -> None:
        self._done, self.cancelled = done, False

    def done(self) -> bool:
        return self._done

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


def test_an_exception_cancels_the_jobs_not_done_and_is_raised_again(capsys):
    running = {"lora": FakeJob(False), "qlora": FakeJob(True)}
    with pytest.raises(KeyboardInterrupt), cancelled_on_exit(running):
        raise KeyboardInterrupt
    assert running["lora"].cancelled and not running["qlora"].cancelled
    assert "[cyberft] lora: cancelled (cyberft run was stopped)" in capsys.readouterr().err


def test_sigterm_becomes_an_exit_that_cancels_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    running = {"full_sft": FakeJob(False)}
    with pytest.raises(SystemExit) as stopped, cancelled_on_exit(running):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes; never reached past it
            time.sleep(0.01)
    assert stopped.value.code == 128 + signal.SIGTERM and running["full_sft"].cancelled
    assert signal.getsignal(signal.SIGTERM) is before


def test_leaving_normally_cancels_nothing():
    running = {"lora": FakeJob(False)}
    with cancelled_on_exit(running):
        pass
    assert not running["lora"].cancelled


@pytest.fixture
def sigint(request):
    """This process's SIGINT disposition while the test runs (``request.param``); the one before comes back."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, request.param)
    yield request.param
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize(
    "sigint",
    [signal.default_int_handler, signal.SIG_IGN],
    ids=["interactive", "started-in-the-background"],
    indirect=True,
)
def test_a_real_local_job_is_stopped(tmp_path, sigint):
    """submitit's local executor: the job's process is gone after the cancel (bounded wait, no timing bound).

    Also where ``cyberft run`` (here: pytest) inherited SIGINT ignored, as a non-interactive shell starts a
    background command: the cancel is a SIGINT to the job's controller, which must not inherit that. Each case
    sets the disposition itself, so the outcome does not depend on how the suite was started.
    """
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path, cluster="local")
    executor.update_parameters(timeout_min=5)
    job = start_job(executor, functools.partial(time.sleep, 300))
    assert signal.getsignal(signal.SIGINT) is sigint  # this process's own disposition is left as it was
    for _ in range(600):  # wait until it runs (the controller writes its log once started)
        if job.paths.stdout.exists():
            break
        time.sleep(0.1)
    with pytest.raises(KeyboardInterrupt), cancelled_on_exit({"sleeper": job}):
        raise KeyboardInterrupt
    for _ in range(600):
        if job.done():
            break
        time.sleep(0.1)
    assert job.done(), "the cancelled job is still running"
