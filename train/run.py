"""One training job in this process (:class:`TrainingRun`), and the atomic saves of what it trains.

Each entrypoint (``full_sft.py``, ``lora.py``, ``qlora.py``) spells out only what differs between
methods, how the model is built and saved, inside one ``with``::

    with TrainingRun(cfg, method_name, exp_dir, kind="lora", threads=threads) as run:
        tokenizer, examples = run.load_data()
        model = ...  # the method's own model
        result = run.train(model, examples, tokenizer)
        ...  # save into run.paths.model_dir or run.paths.adapter_dir
    return run.metrics.to_dict()

On success the run writes ``metrics.json`` (:class:`~launch.store.expdir.TrainMetrics`) and closes
its W&B run; on a failure it records the failure; on a stop to be requeued it records nothing
and leaves the W&B run to the next attempt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

from launch.site.gpus import check_gpu_binding
from launch.spec import sweep
from launch.spec.config import ExperimentConfig, TrackingConfig
from launch.store.expdir import ExperimentDir, TrainMetrics, now_iso
from launch.store.fsio import atomic_write_json, umask
from train import batches, loop, runtime
from train.checkpoint import Preempted
from train.tracking import Tracker


class TrainingRun:
    """State of one training job: config, accelerator, tracker, phase timers; a context manager.

    Parameters
    ----------
    cfg:
        The experiment's resolved config.
    method_name:
        The method this job trains, or the address of one cell of its sweep (``lora[3]``): the
        run then trains with the cell's seed and settings into the cell's folder.
    exp_dir:
        The experiment directory.
    kind:
        The method kind the calling entrypoint runs (a method of another kind is refused).
    threads:
        CPU threads for torch (None: torch's default).
    """

    def __init__(
        self, cfg: ExperimentConfig, method_name: str, exp_dir: str | os.PathLike, kind: str, threads: int | None
    ) -> None:
        # A method, or one cell of a sweep (``lora[3]``): its seed and its grid point's settings.
        self.cfg, self.cell = sweep.locate(cfg, method_name)
        self.exp = ExperimentDir(exp_dir)
        self.method = self.cell.config
        if self.method.kind != kind:
            raise ValueError(f"method {method_name!r} is kind {self.method.kind!r}, this entrypoint runs {kind!r}")
        self.address = self.cell.id
        self.paths = self.exp.method(self.address)
        cfg = self.cfg
        self.threads = threads or torch.get_num_threads()
        self.started_at = now_iso()
        self.phases: dict[str, float] = {}
        self.phase_peaks: dict[str, int] = {}
        """The peak memory (``runtime.peak_memory``) at the end of each phase: a peak reached while loading
        shows under ``load``, one reached by the steps under ``train``."""
        self._t, self._cpu = time.perf_counter(), time.process_time()
        self.phases_cpu: dict[str, float] = {}
        """CPU seconds of each phase, every thread of this process: ``cpu_share`` compares them to the wall's."""
        self.result: loop.TrainResult | None = None
        self.params: tuple[int | None, int | None] = (None, None)
        self.trainable_dtype: str | None = None
        self.task_examples: dict[str, int] | None = None
        """``multi_task``: examples of each task in the mixture (recorded in ``metrics.json``)."""
        self.metrics: TrainMetrics | None = None
        """The written record, once the run has ended well."""
        runtime.setup_runtime(cfg.seed, threads)
        self.base_mem = memory_now()  # taken again by baseline() once the libraries and the data are in
        try:
            check_gpu_binding()  # every rank sees its node's GPUs, or all stop here, before any CUDA call
            runtime.check_bf16(cfg.model.dtype, self.method.precision)
            size = lambda: runtime.model_params(cfg.model.name_or_path, cfg.model.trust_remote_code)  # noqa: E731
            self.precision = runtime.decide_precision(self.method, size)
            self.accelerator = runtime.make_accelerator(self.method, self.precision)
        except (ValueError, RuntimeError) as exc:  # emulated bf16, GPUs bound per task: say why in the report
            if os.environ.get("RANK", "0") == "0":  # no accelerator to ask yet; the environment's rank 0 writes
                self._write_failure(exc)
            raise
        if self.accelerator.is_main_process:  # what it computes in, before anything is loaded
            print(f"[{self.address}] {self.precision.line()}", flush=True)
        tracking = cfg.tracking if self.accelerator.is_main_process else TrackingConfig(backend="none")
        c = self.cell
        self.tracker = Tracker.start(
            tracking,
            run_dir=self.exp.root,
            name=self.address,
            group=self.exp.name,
            job_type="train",
            config={
                "experiment": self.exp.name,
                "model": cfg.model.name_or_path,
                "method": to_plain(self.method),
                "variant": self.method.variant,  # the kind with its LoRA options: lora+dora, lora(init=pissa)
                "precision": {"asked": self.precision.asked, **self.precision.record()},  # what it ran in
                # Flat, so W&B's runs table, scatter and parallel-coordinates panels can use each key.
                "cell": {"method": c.method, "index": c.index, "seed": c.seed, **c.point},
            },
            run_id=self.exp.wandb_run_id(self.address),
            tags=c.tags,
        )

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, exc_type: tp.Any, exc: BaseException | None, tb: tp.Any) -> bool:
        """Write ``metrics.json`` when the body ended well; record a failure otherwise (never swallowed)."""
        if exc is not None:
            self._end_badly(exc)
            return False
        try:
            self.metrics = self._finish()
        except BaseException as error:
            self._end_badly(error)
            raise
        return False

    # ------------------------------------------------------------------ the phases

    def mark(self, phase: str) -> None:
        """Close the current phase under ``phase`` and start timing the next."""
        t, cpu = time.perf_counter(), time.process_time()
        self.phases[phase] = self.phases.get(phase, 0.0) + t - self._t
        self.phases_cpu[phase] = self.phases_cpu.get(phase, 0.0) + cpu - self._cpu
        self.phase_peaks[phase] = runtime.peak_memory()[0]
        self._t, self._cpu = t, cpu

    def load_data(self) -> tuple[tp.Any, list[batches.Example]]:
        """Tokenizer and tokenised training examples."""
        tokenizer = batches.load_tokenizer(self.cfg.model.name_or_path)
        questions = batches.load_split(self.cfg, self.exp, "train", self.accelerator)
        main = self.accelerator.is_main_process
        encoded = batches.encode_examples(tokenizer, questions, self.cfg.model.max_seq_len, main)
        self.baseline()
        return tokenizer, encoded

    def baseline(self) -> None:
        """Take the memory in use as the job's baseline: call it with the libraries imported and the data read,
        before the model loads (:meth:`load_data` does). The memory estimate is checked above it: what a
        method holds, not the interpreter's, the libraries' (several hundred MiB) or the tokenizer's."""
        self.base_mem = memory_now()

    def train(
        self, model: torch.nn.Module, examples: list[batches.Example], tokenizer: tp.Any, tasks: tp.Sequence[str] = ()
    ) -> loop.TrainResult:
        """Run the loop; its time becomes the ``train`` phase. ``tasks``: see :func:`train.loop.train_loop`."""
        self.mark("load")
        result = loop.train_loop(
            model,
            examples,
            self.method,
            self.accelerator,
            tokenizer.pad_token_id,
            self.cfg.seed,
            paths=self.paths,
            log=self.tracker.log,
            tasks=tasks,
        )
        self.record(result, self.accelerator.unwrap_model(model))
        return result

    def record(self, result: loop.TrainResult, model: torch.nn.Module | None) -> None:
        """What was trained and how (``model``: what holds the trainable parameters, None for nothing); the
        time since the last phase becomes the ``train`` phase. :meth:`train` calls it; a kind that does
        not run the loop (few-shot, the feature head) calls it itself."""
        self.result = result
        if model is not None:
            self.params = runtime.param_counts(model)
            self.trainable_dtype = next((str(p.dtype) for p in model.parameters() if p.requires_grad), None)
        else:
            self.params = (0, None)
        self.mark("train")

    # ------------------------------------------------------------------ the end

    def _finish(self) -> TrainMetrics:
        """Write ``metrics.json``, remove the checkpoints, close the W&B run."""
        if self.result is None:
            raise RuntimeError(f"{self.method.name}: the training run ended before TrainingRun.train was called")
        self.mark("save")
        metrics = self._completed(self.result)
        if self.accelerator.is_main_process:
            self.paths.write_metrics(metrics)
            # The final model is saved and recorded: the resumable states (for a full SFT of a
            # large model, several times its size) have done their job.
            shutil.rmtree(self.paths.checkpoints_dir, ignore_errors=True)
        self.tracker.summary(metrics.to_dict())
        self.tracker.finish()
        return metrics

    def _completed(self, result: loop.TrainResult) -> TrainMetrics:
        """The record of this job: what it ran with, what it did, its own cost estimate."""
        peak, peak_kind = runtime.peak_memory()
        wall = sum(self.phases.values())
        n_devices, on_gpu = self.accelerator.num_processes, runtime.on_gpu()
        trainable, total = self.params
        return TrainMetrics(
            method=self.address,
            kind=self.method.kind,
            variant=self.method.variant,
            status="completed",
            device="cuda" if on_gpu else "cpu",
            n_devices=n_devices,
            threads=self.threads,
            **runtime.runtime_info(self.precision),
            phases_s={k: round(v, 3) for k, v in self.phases.items()},
            cpu_share=None if on_gpu else self.cpu_share(),
            wall_s=round(wall, 3),
            train_tokens=result.tokens,
            tokens_per_s=round(result.tokens / result.train_s, 1) if result.train_s else None,
            peak_mem_bytes=peak,
            peak_mem_kind=peak_kind,
            base_mem_bytes=self.base_mem,
            phase_peak_mem_bytes=dict(self.phase_peaks),
            trainable_params=trainable,
            total_params=total,
            final_loss=result.final_loss,
            steps=result.steps,
            gpu_hours=round(wall * n_devices / 3600, 6) if on_gpu else None,
            cpu_hours=round(wall * self.threads / 3600, 6),
            cost_source="local",
            started_at=self.started_at,
            ended_at=now_iso(),
            trainable_dtype=self.trainable_dtype,  # fp32 masters for full SFT without DeepSpeed
            task_losses=result.task_losses,
            task_examples=self.task_examples,
        )

    def cpu_share(self) -> float | None:
        """The training phase's CPU seconds over its wall seconds x threads (None when it was not timed)."""
        wall, cpu = self.phases.get("train"), self.phases_cpu.get("train")
        return round(cpu / (wall * self.threads), 3) if wall and cpu is not None else None

    def _end_badly(self, exc: BaseException) -> None:
        """Record the failure (metrics.json status failed) and close the W&B run.

        Stopping to be requeued (SIGUSR2 after a checkpoint: submitit exits with
        ``SystemExit``) is not a failure: nothing is recorded, and the W&B run is
        left to be resumed by the next attempt.
        """
        if isinstance(exc, (SystemExit, Preempted, KeyboardInterrupt)):
            self.tracker.finish(exit_code=0)
            progress = self.paths.read_progress()
            if self.accelerator.is_main_process and progress is not None:
                # Every step logged so far is now on disk: the next attempt need not log it again.
                self.paths.write_progress(dataclasses.replace(progress, flushed_step=progress.step))
            return
        if self.accelerator.is_main_process:
            self._write_failure(exc)
        self.tracker.finish(exit_code=1)

    def _write_failure(self, error: BaseException) -> None:
        """Record a failed job so the report still has its row."""
        failed = TrainMetrics(
            self.address,
            self.method.kind,
            variant=self.method.variant,
            status="failed",
            error=f"{type(error).__name__}: {error}"[:2000],
            started_at=self.started_at,
            ended_at=now_iso(),
        )
        self.paths.write_metrics(failed)


def memory_now() -> int:
    """Memory in use now, as ``runtime.peak_memory`` counts it (the allocator's, else the resident set): before
    the model loads, the baseline (interpreter, libraries) the memory estimate is checked above."""
    if runtime.on_gpu():
        return int(torch.cuda.memory_allocated())
    with open("/proc/self/statm") as f:  # Linux, as the jobs are; fields: size, resident, ... in pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def to_plain(obj: tp.Any) -> tp.Any:
    """A dataclass config as plain data (for W&B config and JSON)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# --------------------------------------------------------------------------- saving


def _usual_permissions(directory: Path) -> None:
    """Give ``directory`` and its files the umask's usual modes, as :mod:`launch.store.fsio` gives its files.

    ``mkdtemp`` makes the directory 0700 and safetensors writes 0600: the
    evaluation job, on another node or as another user of the shared storage,
    could not read the model.
    """
    mask = umask()
    directory.chmod(0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


def save_model_atomic(
    model: tp.Any,
    tokenizer: tp.Any,
    out: Path,
    config_dtype: torch.dtype | None = None,
    verify: tp.Callable[[Path], None] | None = None,
    **save_kwargs: tp.Any,
) -> Path:
    """``save_pretrained`` model (or adapter) and tokenizer into ``out`` via a temp dir + rename.

    ``config_dtype``: the dtype of the tensors in ``save_kwargs["state_dict"]`` when it is not the
    model's own (``save_pretrained`` records the model's in config.json, which ``dtype="auto"`` loads).
    ``verify(tmp_dir)``, when given, checks the written directory before it replaces ``out`` (and may
    add files to it); if it raises, ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True, **save_kwargs)
        if config_dtype is not None:
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            atomic_write_json(tmp / "config.json", dict(config, dtype=str(config_dtype).removeprefix("torch.")))
        tokenizer.save_pretrained(tmp)
        if verify is not None:
            verify(tmp)
        _usual_permissions(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_consolidated(
    accelerator: tp.Any, model: tp.Any, tokenizer: tp.Any, out: Path, dtype: torch.dtype | None = None
) -> None:
    """Save one full model + tokenizer into ``out``, however it was trained; every rank calls it.

    ``model`` is the prepared model. ``get_state_dict`` is collective: under
    ZeRO-3 it gathers every rank's shard into a full state dict in the
    training dtype on the main process (``stage3_gather_16bit_weights_on_model_save``
    in the JSON); only the main process writes. ``save_pretrained`` then drops
    the tied ``lm_head`` copy of the embeddings, which safetensors refuses.
    ``dtype``: floating-point tensors are saved in it (``model.dtype``: the fp32 master
    weights of a run without DeepSpeed are not what the evaluation loads).
    """
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_model_atomic(accelerator.unwrap_model(model), tokenizer, out, config_dtype=dtype, state_dict=state)
    accelerator.wait_for_everyone()  # nobody reports success before the model is on disk


def save_adapter(accelerator: tp.Any, model: tp.Any, tokenizer: tp.Any, out: Path) -> None:
    """Save the adapter of a LoRA/QLoRA model (+ tokenizer) into ``out``; every rank calls it."""
    if accelerator.is_main_process:
        save_model_atomic(accelerator.unwrap_model(model), tokenizer, out)
    accelerator.wait_for_everyone()
