"""Helpers shared by the training entrypoints: runtime, data, the loop, metrics.

Plain functions, composed by each entrypoint (``full_sft.py``, ``lora.py``,
``qlora.py``); no base class. Training code reads only the standard torch
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) through accelerate.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import resource
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import torch

from launch.config import ExperimentConfig, MethodConfig
from launch.fsio import atomic_write_json
from train import prompting


# --------------------------------------------------------------------------- runtime


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def setup_runtime(seed: int, threads: int | None = None) -> None:
    """Seed every RNG; cap CPU threads (several local jobs share the cores)."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for torch
        pass


def on_gpu() -> bool:
    return torch.cuda.is_available()


def resolve_precision(precision: str) -> str:
    """accelerate's ``mixed_precision`` for a config precision: bf16 on capable GPUs, fp32 on CPU."""
    if precision == "auto":
        return "bf16" if on_gpu() and torch.cuda.is_bf16_supported() else "no"
    if precision in ("bf16", "fp16") and not on_gpu():
        return "no"  # CPU autocast would only slow the tiny smoke models down
    return {"fp32": "no"}.get(precision, precision)


def resolve_dtype(dtype: str) -> torch.dtype:
    """Weights dtype for ``from_pretrained``."""
    if dtype == "auto":
        return torch.bfloat16 if on_gpu() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def make_accelerator(method: MethodConfig) -> tp.Any:
    """An accelerate ``Accelerator`` for this method (gloo on CPU when distributed)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    handlers = []
    if not on_gpu() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Without this accelerate finds no backend on CPU and every rank thinks it is rank 0 of 1.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(
        cpu=not on_gpu(),
        mixed_precision=resolve_precision(method.precision),
        gradient_accumulation_steps=method.grad_accum_steps,
        kwargs_handlers=handlers,
    )


def peak_memory() -> tuple[int, str]:
    """Peak memory in bytes: CUDA allocator peak on GPU, else the process's max RSS."""
    if on_gpu():
        return int(torch.cuda.max_memory_allocated()), "cuda"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "rss"


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


# --------------------------------------------------------------------------- data


def method_dir(exp_dir: Path, name: str) -> Path:
    return Path(exp_dir) / "methods" / name


def load_split(cfg: ExperimentConfig, exp_dir: Path, split: str) -> list:
    """The prepared ``train`` or ``eval`` questions; prepares them first when missing."""
    from launch.data import load_jsonl_questions, prepare_splits

    path = Path(exp_dir) / "data" / f"{split}.jsonl"
    if not path.exists():  # entrypoint run directly, without the launcher
        prepare_splits(cfg.data, Path(exp_dir) / "data", progress=False)
    return load_jsonl_questions(path)


def load_tokenizer(name_or_path: str) -> tp.Any:
    """The model's tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode_examples(tokenizer: tp.Any, questions: list, max_len: int, progress: bool = True) -> list[Example]:
    """Tokenise every training question once, with a progress bar."""
    from tqdm.auto import tqdm

    codec = prompting.AnswerCodec(tokenizer)
    out = []
    for q in tqdm(questions, desc="tokenize", disable=not progress, mininterval=1.0):
        ids, labels = prompting.encode_training_example(tokenizer, codec, q, max_len)
        out.append(Example(ids, labels))
    return out


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets label -100 and attention 0."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    final_loss: float | None = None
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)


def total_steps(method: MethodConfig, n_examples: int, world_size: int) -> int:
    """Optimizer steps: ``max_steps`` or epochs x batches per epoch / accumulation."""
    if method.max_steps is not None:
        return method.max_steps
    per_epoch = math.ceil(n_examples / (method.micro_batch_size * world_size))
    return max(1, math.ceil(method.epochs * per_epoch / method.grad_accum_steps))


def train_loop(
    model: torch.nn.Module,
    examples: list[Example],
    method: MethodConfig,
    accelerator: tp.Any,
    pad_id: int,
    seed: int,
    progress_path: Path | None = None,
    log: tp.Callable[[dict, int], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """AdamW + linear warm-up/decay over ``examples``; returns steps, tokens, losses.

    ``progress_path`` gets ``{"step", "total_steps", "loss"}`` atomically every
    few steps, so the launcher can show progress of a job it does not run.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    n_steps = total_steps(method, len(examples), accelerator.num_processes)
    loader = DataLoader(
        examples,
        batch_size=method.micro_batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=lambda b: collate(b, pad_id),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate, weight_decay=method.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(method.warmup_ratio * n_steps), n_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()

    result = TrainResult()
    every = max(1, n_steps // 50)
    bar = tqdm(total=n_steps, desc=f"train {method.name}", disable=not (progress and accelerator.is_main_process))
    t0 = time.perf_counter()
    window: list[float] = []
    while result.steps < n_steps:
        for batch in loader:
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and method.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, method.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            result.tokens += int(batch["attention_mask"].sum())
            window.append(float(out.loss.detach()))
            if not accelerator.sync_gradients:
                continue
            result.steps += 1
            loss = sum(window) / len(window)
            window.clear()
            result.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if log is not None:
                log({"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]}, result.steps)
            if progress_path is not None and (result.steps % every == 0 or result.steps == n_steps):
                atomic_write_json(progress_path, {"step": result.steps, "total_steps": n_steps, "loss": loss, "updated_at": now_iso()})
            if result.steps >= n_steps:
                break
    bar.close()
    result.train_s = time.perf_counter() - t0
    result.tokens = int(accelerator.reduce(torch.tensor(result.tokens, device=accelerator.device), "sum"))
    result.final_loss = sum(result.losses[-10:]) / max(1, len(result.losses[-10:]))
    return result


# --------------------------------------------------------------------------- metrics


def build_metrics(
    method: MethodConfig,
    phases: dict[str, float],
    result: TrainResult,
    trainable: int,
    total: int,
    n_devices: int,
    threads: int,
    started_at: str,
) -> dict:
    """The ``metrics.json`` record of one training job."""
    peak, kind = peak_memory()
    wall = sum(phases.values())
    return {
        "method": method.name,
        "kind": method.kind,
        "status": "completed",
        "device": "cuda" if on_gpu() else "cpu",
        "n_devices": n_devices,
        "threads": threads,
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "wall_s": round(wall, 3),
        "train_tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.train_s, 1) if result.train_s else None,
        "peak_mem_bytes": peak,
        "peak_mem_kind": kind,
        "trainable_params": trainable,
        "total_params": total,
        "final_loss": result.final_loss,
        "steps": result.steps,
        # Local estimate; on Slurm the report replaces it with sacct's figures.
        "gpu_hours": round(wall * n_devices / 3600, 6) if on_gpu() else None,
        "cpu_hours": round(wall * threads / 3600, 6),
        "cost_source": "local",
        "started_at": started_at,
        "ended_at": now_iso(),
    }


def write_failure(exp_dir: Path, method: MethodConfig, error: BaseException, started_at: str) -> None:
    """Record a failed job so the report still has its row."""
    atomic_write_json(
        method_dir(exp_dir, method.name) / "metrics.json",
        {
            "method": method.name,
            "kind": method.kind,
            "status": "failed",
            "error": f"{type(error).__name__}: {error}"[:2000],
            "started_at": started_at,
            "ended_at": now_iso(),
        },
    )


# --------------------------------------------------------------------------- one training job


def to_plain(obj: tp.Any) -> tp.Any:
    """A dataclass config as plain data (for W&B config and JSON)."""
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def save_model_atomic(model: tp.Any, tokenizer: tp.Any, out: Path, **save_kwargs: tp.Any) -> Path:
    """``save_pretrained`` model (or adapter) and tokenizer into ``out`` via a temp dir + rename."""
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True, **save_kwargs)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class Job:
    """State of one training job: config, accelerator, tracker, phase timers.

    The entrypoints use it so that each of them reads top to bottom and only
    spells out what differs between methods: how the model is built and saved.
    """

    def __init__(self, cfg: ExperimentConfig, method_name: str, exp_dir: str | Path, kind: str, threads: int | None) -> None:
        from train.tracking import Tracker
        from launch.config import TrackingConfig

        self.cfg = cfg
        self.exp_dir = Path(exp_dir)
        self.method = cfg.method(method_name)
        if self.method.kind != kind:
            raise ValueError(f"method {method_name!r} is kind {self.method.kind!r}, this entrypoint runs {kind!r}")
        self.out_dir = method_dir(self.exp_dir, self.method.name)
        self.threads = threads or torch.get_num_threads()
        self.started_at = now_iso()
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()
        setup_runtime(cfg.seed, threads)
        self.accelerator = make_accelerator(self.method)
        tracking = cfg.tracking if self.accelerator.is_main_process else TrackingConfig(backend="none")
        self.tracker = Tracker.start(
            tracking, run_dir=self.exp_dir, name=self.method.name, group=self.exp_dir.name, job_type="train",
            config={"experiment": self.exp_dir.name, "model": cfg.model.name_or_path, "method": to_plain(self.method)},
            run_id=f"{self.exp_dir.name}-{self.method.name}",
        )

    def mark(self, phase: str) -> None:
        """Close the current phase under ``phase`` and start timing the next."""
        t = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + t - self._t
        self._t = t

    def load_data(self) -> tuple[tp.Any, list[Example]]:
        """Tokenizer and tokenised training examples."""
        tokenizer = load_tokenizer(self.cfg.model.name_or_path)
        questions = load_split(self.cfg, self.exp_dir, "train")
        return tokenizer, encode_examples(tokenizer, questions, self.cfg.model.max_seq_len, self.accelerator.is_main_process)

    def train(self, model: torch.nn.Module, examples: list[Example], tokenizer: tp.Any) -> TrainResult:
        """Run the loop; its time becomes the ``train`` phase."""
        self.mark("load")
        result = train_loop(
            model, examples, self.method, self.accelerator, tokenizer.pad_token_id, self.cfg.seed,
            progress_path=self.out_dir / "progress.json" if self.accelerator.is_main_process else None,
            log=self.tracker.log,
        )
        self.params = param_counts(self.accelerator.unwrap_model(model))
        self.mark("train")
        return result

    def finish(self, result: TrainResult) -> dict:
        """Write ``metrics.json``, close the W&B run, return the metrics."""
        self.mark("save")
        metrics = build_metrics(
            self.method, self.phases, result, *self.params, self.accelerator.num_processes, self.threads, self.started_at
        )
        if self.accelerator.is_main_process:
            atomic_write_json(self.out_dir / "metrics.json", metrics)
        self.tracker.summary(metrics)
        self.tracker.finish()
        return metrics

    def fail(self, exc: BaseException) -> None:
        """Record the failure (metrics.json status failed) and close the W&B run."""
        if self.accelerator.is_main_process:
            write_failure(self.exp_dir, self.method, exc, self.started_at)
        self.tracker.finish(exit_code=1)
