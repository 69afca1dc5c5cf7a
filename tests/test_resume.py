"""Resumable training: killed, signalled and restarted runs end with the same weights as an
uninterrupted one, from complete checkpoints only, and log every step to W&B exactly once.

Each run is a fresh process (what a requeued Slurm job is) calling the entrypoint's main();
the Slurm side (scontrol requeue, USR2 through submitit) is in tests/test_requeue_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launch.store.expdir import ExperimentDir
from support.experiments import new_experiment
from support.runs import effective_steps, max_diff, weights
from train import checkpoint

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STEPS = 120
# Bit-for-bit on CPU; on a GPU (CUDA visible to the suite) atomic-add kernels reorder sums between runs.
WEIGHT_TOL = 1e-3 if torch.cuda.is_available() else 1e-6
RUN = (
    "import sys, importlib; from launch.store.expdir import ExperimentDir; from launch.jobs import ENTRYPOINTS;"
    "exp, name = sys.argv[1], sys.argv[2]; cfg = ExperimentDir(exp).load_config();"
    "importlib.import_module(ENTRYPOINTS[cfg.method(name).kind]).main(cfg, name, exp, threads=1)"
)


def make_experiment(tmp_path: Path, tiny_model: Path, method: str) -> ExperimentDir:
    overrides = [
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
        "data.max_train=64",
        "data.max_eval=16",
        f"methods.{method}.max_steps={STEPS}",
        f"methods.{method}.micro_batch_size=8",
        f"methods.{method}.checkpoint.every_steps=10",
        f"methods.{method}.checkpoint.keep=2",
        "tracking.mode=offline",
    ]
    return new_experiment(overrides)[1]


def start(exp: ExperimentDir, method: str) -> subprocess.Popen:
    # progress.json at every step: the test interrupts the run at given steps
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "CYBERFT_PROGRESS_EVERY_S": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(exp), method],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def step_of(exp: ExperimentDir, method: str) -> int:
    progress = exp.method(method).read_progress()
    return progress.step if progress is not None else 0


def interrupt_at(proc: subprocess.Popen, exp: ExperimentDir, method: str, step: int, sig: int) -> str:
    """Send ``sig`` once the run has passed ``step``; return its output."""
    deadline = time.monotonic() + 300
    while step_of(exp, method) < step:
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out
    return out


def finish(proc: subprocess.Popen) -> str:
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.parametrize("method", ["full_sft", "lora"])
def test_killed_and_signalled_runs_end_like_an_uninterrupted_one(tmp_path, tiny_model, method):
    reference = make_experiment(tmp_path / "ref", tiny_model, method)
    finish(start(reference, method))

    exp = make_experiment(tmp_path / "int", tiny_model, method)
    # 1. killed outright (a node failure, or `scontrol requeue`: no signal reaches the job)
    interrupt_at(start(exp, method), exp, method, 35, signal.SIGKILL)
    assert checkpoint.latest(exp.method(method).checkpoints_dir).name >= "step-00000030"
    # 2. SIGUSR2 (time limit / preemption): saved at the next step boundary, then stops
    out = interrupt_at(start(exp, method), exp, method, 75, signal.SIGUSR2)
    assert "resumed from" in out and "(step 30/120)" in out, out[-3000:]
    assert "stopped on SIGUSR2 after saving a checkpoint" in out, out[-3000:]
    saved = checkpoint.latest(exp.method(method).checkpoints_dir)
    signalled_at = int(saved.name.split("-")[1])
    assert signalled_at >= 75, saved  # saved where the signal was seen, not at the last periodic one
    assert not exp.method(method).metrics_file.exists(), "a stop to be requeued is not a failure"
    # 3. the last attempt resumes from exactly that step and completes
    out = finish(start(exp, method))
    assert f"(step {signalled_at}/{STEPS})" in out, out[-3000:]

    diff = max_diff(weights(reference, method), weights(exp, method))
    print(f"{method}: max |w_interrupted - w_reference| = {diff:.3g}")
    assert diff <= WEIGHT_TOL
    metrics, ref_metrics = exp.method(method).read_metrics(), reference.method(method).read_metrics()
    assert metrics.steps == STEPS
    assert metrics.final_loss == pytest.approx(ref_metrics.final_loss, abs=WEIGHT_TOL)
    assert metrics.train_tokens == ref_metrics.train_tokens
    # W&B: one run id over all attempts (the SIGKILLed attempt's offline file may be empty:
    # its buffer died with it, and the next attempt logged those steps again), every step once.
    steps, ids = effective_steps(exp)
    assert len(ids) == 3 and {i for i in ids if i} == {f"{exp.name}-{method}"}
    assert steps == list(range(1, STEPS + 1)), "a step is missing or out of order"
    ref_steps, _ = effective_steps(reference)
    assert ref_steps == steps
    # Checkpoints are removed once the final model is saved.
    assert not exp.method(method).checkpoints_dir.exists()


class _FakeAccelerator:
    """Just enough of an Accelerator for checkpoint.save: one process; save_state can be made to die."""

    is_main_process = True
    num_processes = 1

    def __init__(self, die: bool = False) -> None:
        self.die = die

    def wait_for_everyone(self) -> None:
        pass

    def register_save_state_pre_hook(self, hook):
        class Handle:
            def remove(self):
                pass

        return Handle()

    def save_state(self, out: str) -> None:
        Path(out).mkdir(parents=True)
        (Path(out) / "model.safetensors").write_bytes(b"half a file")
        if self.die:
            raise KeyboardInterrupt("SIGKILL while writing the checkpoint")


def test_a_checkpoint_killed_while_written_is_never_loaded(tmp_path):
    root = tmp_path / "checkpoints"
    checkpoint.save(_FakeAccelerator(), root, checkpoint.TrainerState(step=10), keep=2)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_FakeAccelerator(die=True), root, checkpoint.TrainerState(step=20), keep=2)
    assert (root / ".tmp-step-00000020").is_dir()
    # A directory that looks final but lacks the marker (e.g. copied by hand) is not trusted either.
    (root / "step-00000030").mkdir()
    assert checkpoint.latest(root) == root / "step-00000010"
    # The next save replaces the leftover and keeps the newest two complete ones.
    checkpoint.save(_FakeAccelerator(), root, checkpoint.TrainerState(step=20), keep=2)
    checkpoint.save(_FakeAccelerator(), root, checkpoint.TrainerState(step=40), keep=2)
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == ["step-00000020", "step-00000040"]
    assert not list(root.glob(".tmp-*"))
    assert json.loads((root / "step-00000040" / "trainer_state.json").read_text())["step"] == 40


SLOW_SAVE = (
    "import time, accelerate; from pathlib import Path; real = accelerate.Accelerator.save_state\n"
    "def slow(self, out, *a, **k):\n"
    "    r = real(self, out, *a, **k)\n"
    "    if Path(out).parent.name == '.tmp-step-00000040': time.sleep(120)  # the kill lands here\n"
    "    return r\n"
    "accelerate.Accelerator.save_state = slow\n"
)


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_complete_one(tmp_path, tiny_model):
    method = "full_sft"
    reference = make_experiment(tmp_path / "ref", tiny_model, method)
    finish(start(reference, method))

    exp = make_experiment(tmp_path / "int", tiny_model, method)
    root = exp.method(method).checkpoints_dir
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE + RUN, str(exp), method],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (root / ".tmp-step-00000040" / "accelerate").is_dir():  # step 40's state is being written
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stdout.read() if proc.poll() is not None else ""
        )
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    assert checkpoint.latest(root) == root / "step-00000030"
    assert (root / ".tmp-step-00000040").is_dir() and not (root / "step-00000040").exists()

    out = finish(start(exp, method))
    assert "(step 30/120)" in out, out[-3000:]
    assert max_diff(weights(reference, method), weights(exp, method)) <= 1e-6
