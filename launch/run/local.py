"""Run an experiment on this machine through submitit's local executor.

The same :mod:`launch.jobs` objects as on Slurm, each in its own process: the
training jobs (several at once on CPU, one thread each), then the evaluation
job once every training job has ended, whatever its outcome, so a failed
method still gets a row in the report. Stopping ``cyberft run`` (Ctrl-C, or SIGTERM from a
``kill`` or a batch system) cancels the jobs it started: they run in processes of their own, which
would otherwise go on training with nobody to evaluate them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sys
import threading
import time
import typing as tp

from launch.jobs import EvalJob, TrainJob
from launch.spec import sweep
from launch.spec.config import ExperimentConfig
from launch.store.expdir import EvalProgress, ExperimentDir, JobRecord, Progress

POLL_S = 0.5


def has_gpu() -> bool:
    """Whether local jobs run on this machine's GPU (an NVIDIA driver, CUDA not hidden)."""
    return shutil.which("nvidia-smi") is not None and bool(os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "")


def precision_problems(cfg: ExperimentConfig, gpu: bool | None = None, cpuinfo: str | None = None) -> list[str]:
    """An explicit precision this machine's CPU cannot run, found before ``cyberft run`` creates anything.

    The jobs refuse the same at their start (``train.runtime.decide_precision``); a local run's jobs run on
    this machine, so the login side can tell first, from ``/proc/cpuinfo`` (no torch). ``gpu`` and
    ``cpuinfo``: for tests (default: :func:`has_gpu`, this machine's flags).
    """
    from launch.cost.calibration import cpu_bf16_units

    if has_gpu() if gpu is None else gpu:
        return []
    units = cpu_bf16_units(cpuinfo)
    problems = []
    for m in cfg.methods:
        field = f"methods.{m.name}.precision"
        if m.kind == "few_shot":  # trains nothing; its examples are scored with the base model
            continue
        if m.precision == "fp16":
            problems.append(
                f"{field}: fp16, but this run has no GPU and on a CPU accelerate runs no fp16 autocast: the job "
                "would train in fp32 while its config says fp16 -> precision: auto or fp32"
                + (", or bf16 (this CPU has bf16 units)" if units else ", or submit to a GPU site")
            )
        elif m.precision == "bf16" and not units:
            problems.append(
                f"{field}: bf16, but this run has no GPU and this CPU has no bf16 matrix units (neither amx_bf16 "
                "nor avx512_bf16 in /proc/cpuinfo): torch would emulate bf16, 2-30x slower than fp32 "
                "(bench/bench_cpu_precision.py) -> precision: auto (fp32 on this CPU) or fp32, or submit to a GPU site"
            )
    return problems


def parallel_slots(cfg: ExperimentConfig) -> int:
    """How many training jobs run at once: one per GPU job, else CPU cores / threads per job."""
    if cfg.local.max_parallel:
        return cfg.local.max_parallel
    if has_gpu():
        return 1
    return max(1, (os.cpu_count() or 1) // cfg.local.threads_per_job)


def _executor(exp: ExperimentDir, time_min: int) -> tp.Any:
    import submitit

    ex = submitit.LocalExecutor(folder=str(exp.job_folder))
    ex.update_parameters(timeout_min=time_min, gpus_per_node=1 if has_gpu() else 0)
    return ex


def _no_op(signum: int, frame: tp.Any) -> None:
    """A SIGINT handler that does what SIG_IGN does, except that a program started meanwhile gets the default."""


def start_job(executor: tp.Any, job: tp.Callable[[], tp.Any]) -> tp.Any:
    """``executor.submit(job)``, with a controller that :func:`cancelled_on_exit` can stop.

    submitit's ``cancel`` is a SIGINT to the job's controller process. A process that a non-interactive shell
    starts in the background (``cyberft run ... &`` in a script, a CI step, ``nohup``) has SIGINT ignored, and an
    ignored signal stays ignored in every program it starts: that controller would go on after the cancel, and
    its job with it. While the controller starts, SIGINT gets a handler here instead (a handler, unlike an
    ignored signal, is reset to the default in a new program); this process still does nothing on SIGINT.
    """
    if (
        signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        or threading.current_thread() is not threading.main_thread()
    ):
        return executor.submit(job)
    signal.signal(signal.SIGINT, _no_op)
    try:
        return executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


Described = tuple[int, int, str]
"""(done, total, detail) of a job's progress."""


def describe_train(p: Progress | None) -> Described | None:
    """A training job's :class:`~launch.store.expdir.Progress` (None: it has written none yet)."""
    if p is None:
        return None
    return p.step, p.total_steps, f"step {p.step}/{p.total_steps} loss {p.loss:.4f}"


def describe_eval(p: EvalProgress | None) -> Described | None:
    """The evaluation job's :class:`~launch.store.expdir.EvalProgress` (None: it has written none yet)."""
    if p is None:
        return None
    scored = ", ".join(f"{f['model']} {f['accuracy']:.3f}" for f in p.finished)
    detail = f"model {p.index}/{p.models} ({p.model}): {p.done}/{p.total} questions"
    return p.done, p.total, detail + (f"; accuracy so far: {scored}" if scored else "")


def method_progress(exp: ExperimentDir, name: str) -> Described | None:
    return describe_train(exp.method(name).read_progress())


def eval_progress(exp: ExperimentDir) -> Described | None:
    return describe_eval(exp.eval.read_progress())


class _Progress:
    """Each job's progress, read from the progress file it writes.

    On a terminal: one tqdm bar per job. Elsewhere (CI, a log file, a pipe): a job's
    "starting" line once, then a line at most every ``LINE_EVERY_S`` seconds when its
    progress moved, and one when it ends, so logs stay readable.
    """

    LINE_EVERY_S = 15.0

    def __init__(self, enabled: bool, tty: bool | None = None) -> None:
        self.enabled = enabled
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.bars: dict[str, tp.Any] = {}
        self.last_line: dict[str, float] = {}
        self.last_text: dict[str, str] = {}

    def update(self, name: str, read: tp.Callable[[], Described | None], final: str = "") -> None:
        """Show job ``name``'s progress as ``read()`` finds it (a ``describe_*`` of the job's record)."""
        if not self.enabled:
            return
        try:
            p = read()
        except (ValueError, KeyError, TypeError):  # another writer's file: treat it as not started
            p = None
        if self.tty:
            self._bar(name, p, final)
            return
        # A job that ends without a progress record (few-shot loads no model) ends with its outcome alone.
        text = p[2] if p else ("" if final else "starting")
        due = time.monotonic() - self.last_line.get(name, float("-inf")) >= self.LINE_EVERY_S
        if final or (text != self.last_text.get(name) and (due or name not in self.last_text)):
            self.last_line[name], self.last_text[name] = time.monotonic(), text
            print(f"[cyberft] {name}: {' '.join(t for t in (text, final) if t)}", flush=True)

    def _bar(self, name: str, p: tuple[int, int, str] | None, final: str) -> None:
        from tqdm.auto import tqdm

        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=1, desc=f"{name:>10}", position=len(self.bars), file=sys.stdout)
        if p:
            bar.n, bar.total = p[0], p[1]
            bar.set_postfix_str(p[2].split(" ", 2)[-1] if p[2].startswith("step") else p[2], refresh=False)
        if final:
            bar.set_postfix_str(f"{bar.postfix or ''} {final}".strip(), refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def multi_device_warnings(cfg: ExperimentConfig) -> list[str]:
    """One warning per method whose resources ask for more than one device: locally it gets one process."""
    out = []
    for m in cfg.methods:
        r = m.resources
        world = r.nodes * max(1, r.gpus_per_node)
        if world > 1:
            out.append(
                f"{m.name}: resources ask for {r.nodes} node(s) x {r.gpus_per_node} GPU(s), but `cyberft run` runs "
                f"each method as one process on this machine (one device): its global batch is 1/{world} of the "
                "planned one and a model sized for several GPUs may not fit one -> `cyberft submit` for multi-GPU "
                f"methods, or set methods.{m.name}.resources.nodes=1 and gpus_per_node=1 (or 0) to silence this"
            )
    return out


def _exit_on_sigterm(signum: int, frame: tp.Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def cancelled_on_exit(running: dict[str, tp.Any]) -> tp.Iterator[None]:
    """Cancel the jobs in ``running`` that are not done when the block is left by an exception.

    SIGTERM is turned into ``SystemExit`` meanwhile (in the main thread), so a ``kill`` of
    ``cyberft run`` reaches here as Ctrl-C does. submitit's ``cancel`` sends SIGINT to the job's
    controller, which stops its task (SIGKILL after a second): the newest complete checkpoint stays.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield
    except BaseException:
        for name, job in running.items():
            if not job.done():
                job.cancel(check=False)
                print(f"[cyberft] {name}: cancelled (cyberft run was stopped)", file=sys.stderr, flush=True)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def run_training(cfg: ExperimentConfig, exp: ExperimentDir, progress: bool = True) -> dict[str, str]:
    """Run every training job (one per method, or per cell of a sweep: submitit's local executor has
    no arrays); return ``{address: state}`` (``completed`` or ``failed: ...``)."""
    for warning in multi_device_warnings(cfg):
        print(f"[cyberft] warning: {warning}", file=sys.stderr, flush=True)
    slots = parallel_slots(cfg)
    threads = None if has_gpu() else cfg.local.threads_per_job
    pending = [c for c in sweep.cells(cfg) if c.trains]
    running: dict[str, tp.Any] = {}
    states: dict[str, str] = {}
    bars = _Progress(progress)
    what = f"{len(pending)} cell(s) of a sweep" if cfg.sweep is not None else f"{len(pending)} method(s)"
    print(f"[cyberft] training {what}, {slots} at a time", flush=True)
    with cancelled_on_exit(running):
        while pending or running:
            while pending and len(running) < slots:
                cell = pending.pop(0)
                job = start_job(_executor(exp, cell.config.resources.time_min), TrainJob(exp.root, cell.id, threads))
                running[cell.id] = job
                exp.record_job(cell.id, JobRecord(job.job_id, executor="local"))
            for name, job in list(running.items()):
                read = functools.partial(method_progress, exp, name)
                bars.update(name, read)
                if job.done():
                    states[name] = _outcome(job)
                    bars.update(name, read, final=states[name].split(":")[0])
                    del running[name]
            time.sleep(POLL_S)
    bars.close()
    for name, state in states.items():
        if state != "completed":
            print(f"[cyberft] {name} {state}", file=sys.stderr, flush=True)
    return states


def _outcome(job: tp.Any) -> str:
    exc = job.exception()
    if exc is None:
        return "completed"
    last = str(exc).strip().splitlines()[-1:] or ["?"]
    return f"failed: {last[0][:300]} (log: {job.paths.stderr})"


def run_evaluation(cfg: ExperimentConfig, exp: ExperimentDir, progress: bool = True) -> list[dict]:
    """The evaluation job, after training, its progress shown as it scores; returns the report rows."""
    print("[cyberft] evaluating base and trained methods", flush=True)
    threads = None if has_gpu() else max(1, os.cpu_count() or 1)
    job = start_job(_executor(exp, cfg.eval.resources.time_min), EvalJob(exp.root, threads))
    exp.record_job("eval", JobRecord(job.job_id, executor="local"))
    bars, read = _Progress(progress), functools.partial(eval_progress, exp)
    with cancelled_on_exit({"eval": job}):
        while not job.done():
            bars.update("eval", read)
            time.sleep(POLL_S)
    bars.update("eval", read, final=_outcome(job).split(":")[0])
    bars.close()
    return job.result()


def run(cfg: ExperimentConfig, exp: ExperimentDir, progress: bool = True) -> tuple[list[dict], dict[str, str]]:
    """Training then evaluation; returns the report rows and the training states."""
    states = run_training(cfg, exp, progress)
    rows = run_evaluation(cfg, exp, progress)
    return rows, states
