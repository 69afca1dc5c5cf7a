"""``make gpu-check``: what the CPU test suite cannot show, on one NVIDIA GPU, in under 8 minutes, offline.

The single-GPU acceptance script of the GPU readiness work (docs/gpus.md):
bf16 full SFT with fp32 master weights, ZeRO-2/3 over NCCL with consolidated save, reload and resume, the
GPU-binding guard, LoRA merged against unmerged, QLoRA on bitsandbytes' CUDA kernels, packed attention
isolation per attention kernel, the evaluation's batch and prefix-cache invariance, throughput and peak memory
against ``launch/cost/memory.py``, and the CPU suite with CUDA hidden. Models are built here: the tiny Llama
(``train/tiny_model.py``) and a random ~1B Llama; a SmolLM2 directory under ``.cache/`` is used when present.

Each step runs in its own process with its own time limit; a step that fails, crashes or runs out of time is
reported and the next one runs. One table at the end; everything measured in ``bench/results/gpu-latest.json``.
Without a GPU it prints the plan and exits 0 (``--allow-cpu`` runs the steps that need no CUDA, to try the
runner itself).

    python bench/gpu_check.py                 # all steps (make gpu-check)
    python bench/gpu_check.py --plan          # what would run, with each step's time limit
    python bench/gpu_check.py --only zero3,lora --scale 1.5

Exit status: 0 when no step failed (skipped steps, e.g. a package missing, do not fail the run), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from launch.store.expdir import ExperimentDir  # noqa: E402  (standard library only)
from launch.store.fsio import atomic_write_json  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "gpu-latest.json"
TOTAL_S = 480
"""The whole run's limit: 8 minutes. A step starts only with at least half its own limit left."""
CPU_SUITE_MIN_S = 60
DATA = REPO / "data" / "sample" / "cyber_mcq.json"
TINY, LLAMA_1B = "tiny", "llama-1b"
LLAMA_1B_SIZES = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
}
"""TinyLlama-1.1B's shape with the tiny tokenizer's vocabulary: 0.98B parameters."""
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
"""``GPU_CHECK_DEVICE=cpu`` runs the steps' code on the CPU, to find mistakes in it without a GPU: the checks
that only a GPU can pass (nccl, the varlen kernel, bitsandbytes' CUDA library) then fail, as they should."""
SMALL = os.environ.get("GPU_CHECK_SMALL") == "1"
"""``GPU_CHECK_SMALL=1``: a small stand-in for the ~1B model (with ``GPU_CHECK_DEVICE=cpu``)."""
BF16_TOL = 2e-2
RESUME_LOSS_TOL = 5e-2
"""bf16 on a GPU is not bit-reproducible (atomic adds): a resumed run follows the uninterrupted one this closely."""
ISOLATION_TOL = 1e-3
AGREEMENT = 0.99


@dataclasses.dataclass(frozen=True)
class Step:
    """One check: its name, time limit, what it shows, the modules it needs, whether it needs CUDA."""

    name: str
    limit_s: int
    what: str
    needs: tuple[str, ...] = ()
    cuda: bool = True


STEPS = [
    Step(
        "env",
        20,
        "nvidia-smi; torch and CUDA versions, capability, native bf16; bitsandbytes' CUDA library; "
        "DeepSpeed's accelerator",
        cuda=False,
    ),
    Step(
        "models",
        30,
        "tiny Llama (50 pretraining steps) and a random ~1B Llama written locally; SmolLM2 from .cache/",
        ("transformers", "tokenizers"),
    ),
    Step(
        "a1_full_sft_bf16",
        35,
        "A1: full SFT without DeepSpeed, model.dtype bfloat16, precision bf16, lr 1e-5, "
        "30 steps: fp32 trainable weights, >95% of the projection weights changed",
        ("accelerate", "transformers"),
    ),
    Step(
        "a2_gpu_binding",
        20,
        "A2: two ranks of one node, CUDA_VISIBLE_DEVICES=0 each, ZeRO-2: both stop with the "
        "binding error, no 'invalid device ordinal'",
        ("accelerate", "transformers"),
        cuda=False,
    ),
    Step(
        "zero3",
        100,
        "ZeRO-3 over NCCL on 1 GPU, bf16, packed, checkpointing, 20 steps: nccl, cuda:0, fp32 master "
        "partitions, loss down, consolidated model reloads to the trained logits, tied embeddings; killed at step 12 "
        "and resumed from step 10, it ends like an uninterrupted run",
        ("deepspeed", "accelerate"),
    ),
    Step("zero2", 35, "ZeRO-2, 10 steps: the same checks without the resume", ("deepspeed", "accelerate")),
    Step(
        "lora",
        60,
        "LoRA bf16, packed, checkpointing, 30 steps: fp32 adapters on a bf16 base, loss down, adapter "
        "saved; merged vs unmerged evaluation agree on >=99% of 200 questions",
        ("peft", "accelerate"),
    ),
    Step(
        "qlora",
        50,
        "QLoRA on bitsandbytes' CUDA kernels: Linear4bit layers computing in bf16, non-zero adapter "
        "gradients in the first and last layer, 30 steps, loss down; the evaluation's 4-bit load scores finitely; "
        "with and without the train-time casts agree on >=99%",
        ("peft", "bitsandbytes", "accelerate"),
    ),
    Step(
        "packing",
        30,
        "packed attention isolation (sdpa through torch's varlen kernel, eager, flash_attention_2 if "
        "installed; SmolLM2 too): a changed neighbour changes nothing (1e-3), each example equals itself alone (2e-2)",
        ("transformers",),
    ),
    Step(
        "eval",
        30,
        "evaluation in bf16 on 200 questions (tiny model; SmolLM2 too): batch 1 vs 16, prefix cache on "
        "vs off: no NaN, >=99% agreement, ties counted",
        ("transformers",),
    ),
    Step(
        "throughput",
        70,
        "random ~1B Llama, packed, 10 steps of LoRA and of full SFT (no DeepSpeed): tokens/s, peak "
        "memory against launch/cost/memory.py's estimate; per-example SDPA loop vs varlen kernel: speed, and "
        "logits against an fp32 reference (as close as bf16 itself gets)",
        ("peft", "accelerate"),
    ),
    Step(
        "cpu_suite",
        0,
        f"the CPU suite with CUDA hidden (pytest -m 'not slow and not slurm'), in the time left "
        f"(at least {CPU_SUITE_MIN_S} s)",
        ("pytest",),
        cuda=False,
    ),
]
BY_NAME = {s.name: s for s in STEPS}


# --------------------------------------------------------------------------- what a step records


class Record:
    """A step's checks and figures, written to its result file after each one (a killed step keeps what it had)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, tp.Any] = {"checks": [], "figures": {}, "status": "running"}

    def check(self, what: str, ok: bool, value: tp.Any = None) -> bool:
        self.data["checks"].append({"what": what, "ok": bool(ok), "value": _plain(value)})
        self._save()
        return bool(ok)

    def figure(self, **figures: tp.Any) -> None:
        self.data["figures"].update({k: _plain(v) for k, v in figures.items()})
        self._save()

    def skip(self, reason: str) -> None:
        self.data["status"] = f"skipped: {reason}"
        self._save()

    def finish(self, error: str | None = None) -> None:
        if self.data["status"] == "running":
            failed = error is not None or not all(c["ok"] for c in self.data["checks"])
            self.data["status"] = "failed" if failed else "passed"
        if error:
            self.data["error"] = error
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, self.data)


def _plain(value: tp.Any) -> tp.Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclasses.dataclass
class Ctx:
    """What a step gets: its work directory (shared by all steps of a run) and its record."""

    work: Path
    rec: Record

    def model(self, name: str) -> Path:
        path = self.work / name
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} missing: the models step did not build it")
        return path


# --------------------------------------------------------------------------- helpers shared by steps


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every step: offline, no leftover rendezvous variables, DeepSpeed left to find CUDA."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DS_ACCELERATOR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def make_experiment(ctx: Ctx, name: str, model: Path, method: str, *extra: str) -> ExperimentDir:
    """An experiment directory for ``method`` on ``model`` from configs/smoke.yaml with ``extra`` overrides."""
    from launch.questions.data import prepare_splits
    from launch.spec.config import load_config
    from launch.store import experiment

    overrides = [
        f"model.name_or_path={model}",
        f"output_dir={ctx.work / 'runs' / name}",
        "tracking.backend=none",
        "data.max_train=128",
        "data.max_eval=16",
        f"methods.{method}.checkpoint.every_min=0",
        *extra,
    ]
    cfg = experiment.resolve_paths(load_config(REPO / "configs" / "smoke.yaml", overrides))
    exp = experiment.create(cfg, str(REPO / "configs" / "smoke.yaml"), overrides)
    prepare_splits(cfg.data, exp.data.root, progress=False)
    return exp


def probe_input(vocab_size: int) -> tp.Any:
    import torch

    return torch.randint(3, vocab_size, (2, 24), generator=torch.Generator().manual_seed(1234))


def train_probe(exp_dir: str | os.PathLike, method: str, out: Path) -> None:
    """Run ``method``'s entrypoint (as the jobs do) and record, from the main process, what the checks need.

    ``out/probe.json``: losses, backend, device, dtypes of the trainable and of DeepSpeed's master
    weights, and with ``GPU_CHECK_CHANGED=1`` the share of weights training changed; ``out/logits.pt``: the
    trained model's logits on a fixed input (every rank computes them: under ZeRO-3 the forward is collective).
    """
    import torch

    from launch.jobs import ENTRYPOINTS
    from train import loop

    cfg = ExperimentDir(exp_dir).load_config()
    real = loop.train_loop

    def probed(model: tp.Any, examples: tp.Any, m: tp.Any, accelerator: tp.Any, *a: tp.Any, **k: tp.Any) -> tp.Any:
        result = real(model, examples, m, accelerator, *a, **k)
        engine = result.model
        engine.eval()
        with torch.no_grad():
            ids = probe_input(model.config.vocab_size).to(accelerator.device)
            logits = engine(input_ids=ids).logits.float().cpu()
        engine.train()
        opt = getattr(engine, "optimizer", None)
        masters = (
            getattr(opt, "fp32_partitioned_groups_flat", None)  # ZeRO-3
            or getattr(opt, "single_partition_of_fp32_groups", None)
        )  # ZeRO-1/2
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            torch.save(logits, out / "logits.pt")
            unwrapped = accelerator.unwrap_model(engine)
            # Only where asked (A1): it reloads the starting weights to compare.
            changed = None
            if os.environ.get("GPU_CHECK_CHANGED"):
                changed = changed_fraction(unwrapped, cfg.model.name_or_path)
            atomic_write_json(
                out / "probe.json",
                {
                    "changed_fraction": changed,
                    "losses": result.losses,
                    "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                    "device": str(accelerator.device),
                    "trainable_dtypes": sorted({str(p.dtype) for p in unwrapped.parameters() if p.requires_grad}),
                    "frozen_dtypes": sorted({str(p.dtype) for p in unwrapped.parameters() if not p.requires_grad}),
                    "master_dtypes": sorted({str(t.dtype) for t in masters}) if masters else None,
                },
            )
        return result

    loop.train_loop = probed
    try:
        importlib.import_module(ENTRYPOINTS[cfg.method(method).kind]).main(cfg, method, exp_dir, threads=None)
    finally:
        loop.train_loop = real


def changed_fraction(model: tp.Any, start: str) -> float:
    """Share of the decoder's projection weights that differ from ``start``'s (compared in the model's dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    before = dict(AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).named_parameters())
    changed = total = 0
    for name, w in model.named_parameters():
        if ".layers." in name and name.endswith("proj.weight") and name in before:
            changed += int((w.detach().cpu() != before[name].to(w.dtype)).sum())
            total += w.numel()
    return changed / max(1, total)


def run_probe(exp_dir: str | os.PathLike, method: str, out: Path, timeout: float, **env: str) -> tuple[int, str]:
    """:func:`train_probe` in a fresh process (what a job is); returns its exit status and output."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--train", str(exp_dir), method, str(out)]
    return _communicate(spawn(cmd, child_env(**env)), timeout)


_SPAWNED: list[subprocess.Popen] = []
"""This step's own processes: killed with it when the runner stops it (see :func:`child_main`)."""


def spawn(cmd: list[str], env: dict[str, str], output: bool = True) -> subprocess.Popen:
    """A process of this step, in its own process group (so that it and whatever it starts end together)."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _SPAWNED.append(proc)
    return proc


def _stop_spawned(signum: int, frame: tp.Any) -> None:
    for proc in _SPAWNED:
        _kill(proc)
    os._exit(128 + signum)


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        output, _ = proc.communicate()
        return -9, (output or "") + f"\n[gpu-check] killed after {timeout:.0f} s"
    return proc.returncode, output or ""


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def to_device(batch: dict) -> dict:
    """A collated batch's tensors on :data:`DEVICE` (its ints stay ints)."""
    return {k: v.to(DEVICE) if hasattr(v, "to") else v for k, v in batch.items()}


def tail(text: str, n: int = 1500) -> str:
    return text[-n:]


def read_probe(out: Path) -> dict:
    return json.loads((out / "probe.json").read_text())


def load_questions(n: int) -> list:
    from launch.questions.data import load_questions as load
    from launch.spec.config import DataSource

    return load(DataSource(path=str(DATA)))[:n]


def agreement(a: list[dict], b: list[dict]) -> float:
    return sum(x["pred"] == y["pred"] for x, y in zip(a, b)) / max(1, len(a))


def finite(rows: list[dict]) -> bool:
    return all(math.isfinite(v) for r in rows for v in r["logprobs"].values())


def smollm2() -> Path | None:
    """A SmolLM2 model directory under .cache/, if one was put there (nothing is downloaded)."""
    found = sorted(p.parent for p in (REPO / ".cache").glob("*/config.json") if "smollm2" in p.parent.name.lower())
    return found[0] if found else None


def losses_fall(losses: list[float]) -> bool:
    k = max(1, len(losses) // 4)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def synchronize() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- the steps


def step_env(ctx: Ctx) -> None:
    rec = ctx.rec
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        smi = f"not available ({exc})"
    import torch

    rec.figure(nvidia_smi=smi, torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0])
    for name in ("transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "flash_attn", "submitit", "wandb"):
        spec = importlib.util.find_spec(name)
        version = None
        if spec is not None:
            with contextlib.suppress(Exception):
                from importlib.metadata import version as dist_version

                version = dist_version(name.replace("_", "-"))
        rec.figure(**{name: version or ("installed" if spec else "missing")})
    if not torch.cuda.is_available():  # only with --allow-cpu: the runner does not start without a GPU
        rec.figure(gpu="none")
        return
    from train import runtime

    major, minor = torch.cuda.get_device_capability()
    rec.figure(
        gpu=torch.cuda.get_device_name(),
        capability=f"{major}.{minor}",
        bf16_native=runtime.bf16_native(),
        auto_precision=runtime.resolve_precision("auto"),
    )
    rec.check("torch sees a CUDA GPU", True, torch.cuda.get_device_name())
    if importlib.util.find_spec("bitsandbytes"):
        from bitsandbytes import cextension

        rec.check(
            "bitsandbytes loads its CUDA library",
            cextension.BNB_BACKEND == "CUDA" and getattr(cextension.lib, "compiled_with_cuda", False),
            cextension.BNB_BACKEND,
        )
    if importlib.util.find_spec("deepspeed"):
        from deepspeed.accelerator import get_accelerator

        name = get_accelerator().device_name()
        rec.check("DeepSpeed's accelerator is cuda", name == "cuda", name)


def step_models(ctx: Ctx) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from train.tiny_model import build_tiny_model

    t0 = time.perf_counter()
    with torch.device(DEVICE):  # its short pretraining on the GPU
        tiny = build_tiny_model(ctx.work / TINY, seed=0, pretrain_steps=50)
    ctx.rec.figure(tiny_s=round(time.perf_counter() - t0, 1))
    ctx.rec.check("tiny model written", (tiny / "config.json").is_file(), str(tiny))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tiny)
    sizes = LLAMA_1B_SIZES
    if SMALL:
        sizes = dict(sizes, hidden_size=256, intermediate_size=512, num_hidden_layers=2)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **sizes,
    )
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = ctx.work / LLAMA_1B
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    ctx.rec.figure(llama_1b_params=n, llama_1b_s=round(time.perf_counter() - t0, 1), smollm2=str(smollm2()))
    ctx.rec.check("~1B random Llama written", (SMALL or 0.9e9 < n < 1.2e9) and (out / "config.json").is_file(), n)


def step_a1_full_sft_bf16(ctx: Ctx) -> None:
    tiny = ctx.model(TINY)
    exp = make_experiment(
        ctx,
        "a1",
        tiny,
        "full_sft",
        "model.dtype=bfloat16",
        "methods.full_sft.precision=bf16",
        "methods.full_sft.learning_rate=1e-5",
        "methods.full_sft.max_steps=30",
        "methods.full_sft.micro_batch_size=8",
        "methods.full_sft.warmup_ratio=0",
    )
    out = ctx.work / "a1-probe"
    code, output = run_probe(exp, "full_sft", out, timeout=time_left(), GPU_CHECK_CHANGED="1")
    if not ctx.rec.check("run completed", code == 0, tail(output)):
        return
    probe = read_probe(out)
    ctx.rec.check(
        "trainable weights are fp32 masters", probe["trainable_dtypes"] == ["torch.float32"], probe["trainable_dtypes"]
    )
    metrics = json.loads(exp.method("full_sft").metrics_file.read_text())
    ctx.rec.figure(mixed_precision=metrics.get("mixed_precision"), tokens_per_s=metrics.get("tokens_per_s"))
    changed = probe["changed_fraction"]  # the in-memory weights: the saved bf16 copy rounds 1e-5 updates away again
    ctx.rec.check(">95% of projection weights changed", changed is not None and changed > 0.95, changed)


def time_left() -> float:
    """Seconds this step's processes may still run: until its deadline (from the runner), less a margin to report."""
    deadline = float(os.environ.get("GPU_CHECK_DEADLINE") or time.time() + 3600)
    return max(1.0, deadline - time.time() - 3.0)


def step_a2_gpu_binding(ctx: Ctx) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    tiny = _any_tiny(ctx)
    exp = make_experiment(
        ctx,
        "a2",
        tiny,
        "full_sft",
        "methods.full_sft.max_steps=2",
        f"methods.full_sft.deepspeed={REPO / 'ds_configs' / 'zero2.json'}",
    )
    procs = []
    for rank in (0, 1):
        env = child_env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            CUDA_VISIBLE_DEVICES="0",
        )
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--train",
            str(exp),
            "full_sft",
            str(ctx.work / "a2-probe"),
        ]
        procs.append(spawn(cmd, env))
    results = [_communicate(p, time_left()) for p in procs]
    for rank, (code, output) in enumerate(results):
        ctx.rec.check(
            f"rank {rank} stops with the binding error",
            code != 0 and "GpuBindingError" in output and f"LOCAL_RANK={rank} of 2 tasks" in output,
            tail(output, 600),
        )
        ctx.rec.check(
            f"rank {rank}: no CUDA 'invalid device ordinal'", "CUDA error: invalid device ordinal" not in output
        )


def _any_tiny(ctx: Ctx) -> Path:
    """The tiny model of the models step, or a random one built here (the check needs no trained weights)."""
    if (ctx.work / TINY / "config.json").is_file():
        return ctx.work / TINY
    from train.tiny_model import build_tiny_model

    random_tiny = ctx.work / "tiny-random"
    return random_tiny if (random_tiny / "config.json").is_file() else build_tiny_model(random_tiny, pretrain_steps=0)


def _zero_run(ctx: Ctx, stage: int, steps: int, resume: bool) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tiny = ctx.model(TINY)
    settings = [
        f"methods.full_sft.deepspeed={REPO / 'ds_configs' / f'zero{stage}.json'}",
        "model.dtype=bfloat16",
        "methods.full_sft.precision=bf16",
        "methods.full_sft.gradient_checkpointing=true",
        f"methods.full_sft.max_steps={steps}",
        "methods.full_sft.micro_batch_size=4",
        "methods.full_sft.checkpoint.every_steps=5",
    ]
    exp = make_experiment(ctx, f"zero{stage}", tiny, "full_sft", *settings)
    out = ctx.work / f"zero{stage}-probe"
    code, output = run_probe(exp, "full_sft", out, timeout=time_left())
    if not ctx.rec.check("run completed", code == 0, tail(output)):
        return
    probe = read_probe(out)
    ctx.rec.figure(losses_first_last=[probe["losses"][0], probe["losses"][-1]], master_dtypes=probe["master_dtypes"])
    ctx.rec.check("process group is nccl", probe["backend"] == "nccl", probe["backend"])
    ctx.rec.check("device is cuda:0", probe["device"] == "cuda:0", probe["device"])
    ctx.rec.check(
        "DeepSpeed keeps fp32 master partitions", probe["master_dtypes"] == ["torch.float32"], probe["master_dtypes"]
    )
    ctx.rec.check("loss goes down", losses_fall(probe["losses"]), probe["losses"])
    model_dir = exp.method("full_sft").model_dir
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(DEVICE).eval()
    with torch.no_grad():
        logits = reloaded(input_ids=probe_input(reloaded.config.vocab_size).to(DEVICE)).logits.float().cpu()
    trained = torch.load(out / "logits.pt")
    diff = float((logits - trained).abs().max())
    ctx.rec.check("reloaded model gives the trained logits", diff <= BF16_TOL * (1 + float(trained.abs().max())), diff)
    tied = reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    ctx.rec.check("tied embeddings survive the consolidated save", tied and reloaded.config.tie_word_embeddings)
    if not resume:
        return
    exp2 = make_experiment(ctx, f"zero{stage}-resume", tiny, "full_sft", *settings)
    killed = _run_until(exp2, "full_sft", ctx.work / "resume-1", step=12, timeout=time_left())
    ctx.rec.check("first attempt killed after step 12", killed >= 12, killed)
    code, output = run_probe(exp2, "full_sft", ctx.work / "resume-2", timeout=time_left())
    import re

    found = re.search(rf"resumed from \S+ \(step (\d+)/{steps}\)", output)
    resumed = int(found.group(1)) if found else None
    # Checkpoints every 5 steps: the newest complete one before the kill (10, or 15 if the kill came late).
    ctx.rec.check(
        "second attempt resumed from the last checkpoint and completed",
        code == 0 and resumed is not None and resumed % 5 == 0 and 10 <= resumed <= killed,
        tail(output, 800),
    )
    if code != 0:
        return
    again = read_probe(ctx.work / "resume-2")["losses"]
    loss_diff = max(abs(a - b) for a, b in zip(again, probe["losses"]))
    ctx.rec.check(
        f"resumed losses follow the uninterrupted run (<= {RESUME_LOSS_TOL})",
        len(again) == steps and loss_diff <= RESUME_LOSS_TOL,
        loss_diff,
    )
    a = load_file(str(model_dir / "model.safetensors"))
    b = load_file(str(exp2.method("full_sft").model_dir / "model.safetensors"))
    w_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    ctx.rec.figure(resume_loss_diff=loss_diff, resume_weight_diff=w_diff)


def _run_until(exp: ExperimentDir, method: str, out: Path, step: int, timeout: float) -> int:
    """Start a run, SIGKILL it once progress.json passes ``step``; return the step it had reached."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--train", str(exp), method, str(out)]
    proc = spawn(cmd, child_env(CYBERFT_PROGRESS_EVERY_S="0"), output=False)
    progress = exp.method(method).progress_file
    deadline = time.monotonic() + timeout
    reached = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                reached = json.loads(progress.read_text())["step"]
            if reached >= step:
                break
            time.sleep(0.02)
    finally:
        _kill(proc)
    return reached


def step_zero3(ctx: Ctx) -> None:
    _zero_run(ctx, 3, steps=20, resume=True)


def step_zero2(ctx: Ctx) -> None:
    _zero_run(ctx, 2, steps=10, resume=False)


def step_lora(ctx: Ctx) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train import batches, scoring

    tiny = ctx.model(TINY)
    trained = _train_adapter(ctx, "lora", tiny)
    if trained is None:
        return
    probe, adapter = trained
    ctx.rec.check(
        "adapters fp32, base bf16",
        probe["trainable_dtypes"] == ["torch.float32"] and "torch.bfloat16" in probe["frozen_dtypes"],
        [probe["trainable_dtypes"], probe["frozen_dtypes"]],
    )
    tok = batches.load_tokenizer(str(tiny))
    questions = load_questions(200)

    def base() -> tp.Any:
        return AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16).to(DEVICE)

    unmerged = scoring.score_loglik(PeftModel.from_pretrained(base(), adapter), tok, questions, 16, 256, progress=False)
    merged = scoring.score_loglik(
        PeftModel.from_pretrained(base(), adapter).merge_and_unload(), tok, questions, 16, 256, progress=False
    )
    agree = agreement(merged, unmerged)
    ctx.rec.check(f"merged vs unmerged agree on >={AGREEMENT:.0%}", agree >= AGREEMENT, agree)


def _train_adapter(ctx: Ctx, kind: str, model: Path) -> tuple[dict, Path] | None:
    """30 steps of ``kind`` (lora or qlora) in bf16, packed, checkpointing on: (probe, adapter), or None on failure."""
    exp = make_experiment(
        ctx,
        kind,
        model,
        kind,
        "model.dtype=bfloat16",
        f"methods.{kind}.precision=bf16",
        f"methods.{kind}.gradient_checkpointing=true",
        f"methods.{kind}.max_steps=30",
        f"methods.{kind}.micro_batch_size=8",
    )
    out = ctx.work / f"{kind}-probe"
    code, output = run_probe(exp, kind, out, timeout=time_left())
    if not ctx.rec.check("run completed", code == 0, tail(output)):
        return None
    probe = read_probe(out)
    ctx.rec.check("loss goes down", losses_fall(probe["losses"]), probe["losses"][::5])
    adapter = exp.method(kind).adapter_dir
    ctx.rec.check("adapter saved", (adapter / "adapter_model.safetensors").is_file())
    return probe, adapter


def step_qlora(ctx: Ctx) -> None:
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from launch.spec.config import LoraSettings
    from train import batches, quant, scoring
    from train.lora import lora_config

    tiny = ctx.model(TINY)
    tok = batches.load_tokenizer(str(tiny))
    model = quant.load_4bit(str(tiny), torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    ctx.rec.check(
        "Linear4bit layers, computing in bf16",
        layers and all(m.compute_dtype == torch.bfloat16 for m in layers),
        len(layers),
    )
    model = get_peft_model(
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False),
        lora_config(LoraSettings(r=8, alpha=16)),
    )
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B: with B = 0 (peft's init) lora_A gets no gradient at all
            p.data.normal_(0.0, 0.05)
    batch = {k: v.to(DEVICE) for k, v in _train_batch(tok).items()}
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        model(**batch).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_A" in n and p.grad is not None}
    n_layers = model.config.num_hidden_layers
    for layer in (0, n_layers - 1):
        g = [v for n, v in grads.items() if f"layers.{layer}." in n]
        ctx.rec.check(
            f"lora_A gradients non-zero and finite in layer {layer}",
            g and all(bool(torch.isfinite(x).all()) and float(x.abs().sum()) > 0 for x in g),
            len(g),
        )
    del model
    trained = _train_adapter(ctx, "qlora", tiny)
    if trained is None:
        return
    _, adapter = trained
    questions = load_questions(200)
    as_evaluated = PeftModel.from_pretrained(quant.load_4bit(str(tiny), torch.bfloat16), adapter)
    plain = scoring.score_loglik(as_evaluated, tok, questions, 16, 256, progress=False)
    ctx.rec.check("evaluation's 4-bit load scores finitely", finite(plain))
    train_like = PeftModel.from_pretrained(
        prepare_model_for_kbit_training(quant.load_4bit(str(tiny), torch.bfloat16), use_gradient_checkpointing=False),
        adapter,
    )
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        cast = scoring.score_loglik(train_like, tok, questions, 16, 256, progress=False)
    agree = agreement(plain, cast)
    ctx.rec.check(f"with vs without train-time casts agree on >={AGREEMENT:.0%}", agree >= AGREEMENT, agree)


def _train_batch(tok: tp.Any) -> dict:
    from train import batches

    questions = load_questions(8)
    return batches.collate(batches.encode_examples(tok, questions, 256, progress=False), tok.pad_token_id)


def step_packing(ctx: Ctx) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from train import batches, packing

    models = [("tiny", ctx.model(TINY))] + ([("smollm2", smollm2())] if smollm2() else [])
    impls = ["sdpa", "eager"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    ctx.rec.figure(implementations=impls)
    for label, path in models:
        tok = batches.load_tokenizer(str(path))
        examples = batches.encode_examples(tok, load_questions(3), 256, progress=False)
        changed = list(examples)
        changed[1] = batches.Example([tok.eos_token_id] * len(examples[1].input_ids), examples[1].labels)
        for impl in impls:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=impl)
            model = model.to(DEVICE).eval()
            calls = []
            real = packing.call_varlen
            packing.call_varlen = lambda *a, _calls=calls, _real=real, **k: _calls.append(1) or _real(*a, **k)
            try:
                with torch.no_grad(), packing.padding_free_attention(model, enabled=impl == "sdpa") as varlen:
                    a, b = (_packed_logits(model, exs, tok) for exs in (examples, changed))
            finally:
                packing.call_varlen = real
            n0, n1 = len(examples[0].input_ids), len(examples[1].input_ids)
            iso = max(float((a[:n0] - b[:n0]).abs().max()), float((a[n0 + n1 :] - b[n0 + n1 :]).abs().max()))
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([examples[2].input_ids]).to(DEVICE)).logits[0].float()
            self_diff = float((a[n0 + n1 :] - alone).abs().max())
            where = f"{label}/{impl}"
            if impl == "sdpa":
                ctx.rec.check(
                    f"{where}: varlen kernel used (once per layer and forward)",
                    varlen and len(calls) == 2 * model.config.num_hidden_layers,
                    len(calls),
                )
            ctx.rec.check(f"{where}: neighbours unchanged (<= {ISOLATION_TOL})", iso <= ISOLATION_TOL, iso)
            ctx.rec.check(f"{where}: example equals itself alone (<= {BF16_TOL})", self_diff <= BF16_TOL, self_diff)


def _packed_logits(model: tp.Any, examples: list, tok: tp.Any) -> tp.Any:
    from train import packing

    batch = to_device(packing.collate_packed(examples, tok.pad_token_id))
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", *packing.VARLEN_KEYS)}
    return model(**inputs, use_cache=False).logits[0].float()


def step_eval(ctx: Ctx) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from train import batches, scoring

    questions = load_questions(200)
    for label, path in [("tiny", ctx.model(TINY))] + ([("smollm2", smollm2())] if smollm2() else []):
        tok = batches.load_tokenizer(str(path))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(DEVICE).eval()
        runs = {}
        for batch, prefix in ((1, False), (16, False), (16, True)):
            t0 = time.perf_counter()
            runs[(batch, prefix)] = scoring.score_loglik(
                model, tok, questions, batch, 512, progress=False, share_prefix=prefix
            )
            ctx.rec.figure(
                **{
                    f"{label}_q_per_s_b{batch}{'_prefix' if prefix else ''}": round(
                        len(questions) / (time.perf_counter() - t0), 1
                    )
                }
            )
        ref = runs[(1, False)]
        ctx.rec.check(f"{label}: no NaN", all(finite(r) for r in runs.values()))
        ctx.rec.check(
            f"{label}: batch 16 agrees with batch 1",
            agreement(runs[(16, False)], ref) >= AGREEMENT,
            agreement(runs[(16, False)], ref),
        )
        ctx.rec.check(
            f"{label}: prefix cache agrees",
            agreement(runs[(16, True)], runs[(16, False)]) >= AGREEMENT,
            agreement(runs[(16, True)], runs[(16, False)]),
        )
        ctx.rec.figure(
            **{
                f"{label}_ties": {
                    f"b{b}{'_prefix' if p else ''}": sum(r.get("tie", False) for r in rows)
                    for (b, p), rows in runs.items()
                }
            }
        )


def step_throughput(ctx: Ctx) -> None:

    from launch.cost import costcheck, memory, tokencount
    from launch.questions.data import load_jsonl_questions

    big = ctx.model(LLAMA_1B)
    shape = memory.model_shape(str(big))
    for method in ("lora", "full_sft"):
        exp = make_experiment(
            ctx,
            f"tp-{method}",
            big,
            method,
            "model.dtype=bfloat16",
            "model.max_seq_len=512",
            f"methods.{method}.precision=bf16",
            f"methods.{method}.max_steps=10",
            f"methods.{method}.micro_batch_size=8",
        )
        code, output = run_probe(exp, method, ctx.work / f"tp-{method}-probe", timeout=time_left())
        if not ctx.rec.check(f"{method}: run completed", code == 0, tail(output)):
            continue
        metrics = json.loads(exp.method(method).metrics_file.read_text())
        cfg = exp.load_config()
        # The estimate as the plan makes it: micro-batches sized by the staged split's example lengths.
        train = load_jsonl_questions(exp.data.train_file)
        counts = tokencount.count_tokens(train, [], cfg.model.name_or_path, cfg.model.max_seq_len, mode="count")
        est = memory.estimate(shape, cfg.method(method), 512, lengths=costcheck.row_lengths(counts.train))
        # The allocator's peak above what it held before loading, against the estimate without CUDA context.
        own = (metrics["peak_mem_bytes"] - (metrics.get("base_mem_bytes") or 0)) / 2**30
        error = (est.own_gb - own) / own * 100 if own > 0 else float("nan")
        ctx.rec.figure(
            **{
                f"{method}_tokens_per_s": metrics["tokens_per_s"],
                f"{method}_peak_gib": round(metrics["peak_mem_bytes"] / 2**30, 2),
                f"{method}_own_gib": round(own, 2),
                f"{method}_estimate_gib": round(est.own_gb, 2),
                f"{method}_estimate_error_pct": round(error, 1),
            }
        )
        ctx.rec.check(
            f"{method}: memory estimate within -10%/+25% of the peak",
            -10.0 <= error <= 25.0,
            f"estimate {est.own_gb:.2f} GiB, measured {own:.2f} GiB above the baseline ({error:+.0f}%)",
        )
    _varlen_speed(ctx, big)


def _varlen_speed(ctx: Ctx, path: Path) -> None:
    """Forward + backward of 8 packed examples of ~250 tokens on the 1B model: per-example loop vs varlen kernel."""
    import torch
    from transformers import AutoModelForCausalLM

    from train import batches, packing

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = model.to(DEVICE).train()
    gen = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(200, 300, (8,), generator=gen)]
    examples = [
        batches.Example(
            torch.randint(10, model.config.vocab_size, (n,), generator=gen).tolist(), [-100] * (n - 4) + [5, 6, 7, 8]
        )
        for n in lengths
    ]
    batch = to_device(packing.collate_packed(examples))
    speeds = {}
    real = packing.varlen_kernel
    for label, kernel in (("loop", lambda device, dtype: None), ("varlen", real)):
        packing.varlen_kernel = kernel
        try:
            with packing.padding_free_attention(model):
                for i in range(13):
                    if i == 3:
                        synchronize()
                        t0 = time.perf_counter()
                    packing.answer_loss(model, batch).backward()
                synchronize()
            speeds[label] = round(10 * sum(lengths) / (time.perf_counter() - t0))
        finally:
            packing.varlen_kernel = real
        model.zero_grad(set_to_none=True)
    ctx.rec.figure(packed_tokens_per_s=speeds, varlen_speedup=round(speeds["varlen"] / speeds["loop"], 2))
    ctx.rec.check("varlen kernel faster than the per-example loop", speeds["varlen"] > speeds["loop"], speeds)
    model.eval()
    ref = _fp32_reference(path, examples)
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([e.input_ids]).to(DEVICE)).logits[0].float() for e in examples])
    errors = {"bf16_alone": _rel_error(alone, ref)}
    errors.update({label: _packed_error(model, batch, ref, k) for label, k in (("loop", None), ("varlen", real))})
    ctx.rec.figure(logits_vs_fp32=errors)
    # Against an fp32 reference (METHOD: never judge bf16 against itself): the packed varlen path must be as
    # close to it as bf16 itself gets on each example alone. Max |difference| over 2,000 tokens x 32k logits of a
    # 22-layer bf16 model is a few ulps wherever logits are large, so the relative norm is the measure.
    ctx.rec.check(
        "varlen logits as close to fp32 as bf16 alone is (relative norm, x2)",
        errors["varlen"]["rel"] <= 2 * errors["bf16_alone"]["rel"],
        errors,
    )


def _fp32_reference(path: Path, examples: list) -> tp.Any:
    """Each example alone through an fp32 copy of the model: the reference the bf16 paths are measured against."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").to(DEVICE)
    with torch.no_grad():
        logits = torch.cat([ref.eval()(input_ids=torch.tensor([e.input_ids]).to(DEVICE)).logits[0] for e in examples])
    del ref
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return logits.float()


def _rel_error(out: tp.Any, ref: tp.Any) -> dict:
    diff = out[: len(ref)] - ref
    return {"rel": float(diff.norm() / ref.norm()), "max_abs": round(float(diff.abs().max()), 4)}


def _packed_error(model: tp.Any, batch: dict, ref: tp.Any, kernel: tp.Any) -> dict:
    """Packed logits through ``kernel`` (None: the per-example SDPA loop) against the fp32 reference."""
    import torch

    from train import packing

    real = packing.varlen_kernel
    packing.varlen_kernel = real if kernel is not None else (lambda device, dtype: None)
    try:
        with torch.no_grad(), packing.padding_free_attention(model):
            inputs = {k: batch[k] for k in ("input_ids", "position_ids", *packing.VARLEN_KEYS)}
            packed = model(**inputs, use_cache=False).logits[0].float()
    finally:
        packing.varlen_kernel = real
    return _rel_error(packed, ref)


def step_cpu_suite(ctx: Ctx) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "not slow and not slurm",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "tests",
    ]
    code, output = _communicate(spawn(cmd, child_env(CUDA_VISIBLE_DEVICES="")), time_left())
    last = [line for line in output.splitlines() if " passed" in line or " failed" in line or " error" in line]
    ctx.rec.figure(summary=last[-1] if last else tail(output, 300))
    ctx.rec.check("CPU suite passes with CUDA hidden", code == 0, tail(output, 1200))


STEP_FUNCS: dict[str, tp.Callable[[Ctx], None]] = {s.name: globals()[f"step_{s.name}"] for s in STEPS}


# --------------------------------------------------------------------------- the runner


def missing(step: Step) -> list[str]:
    return [m for m in step.needs if importlib.util.find_spec(m) is None]


def have_cuda() -> bool:
    if DEVICE == "cpu":  # trying the steps' code without a GPU
        return True
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def plan_text(steps: list[Step], scale: float) -> str:
    lines = [
        f"make gpu-check: {len(steps)} step(s), each in its own process with its own time limit; "
        f"{TOTAL_S * scale:.0f} s in all",
        "",
    ]
    for s in steps:
        limit = "rest" if not s.limit_s else f"{s.limit_s * scale:.0f} s"
        lines.append(f"  {s.name:<18} {limit:>6}  {s.what}")
    return "\n".join(lines)


def run_step(step: Step, work: Path, limit_s: float) -> dict:
    """One step in a child process; its result, also when it crashed or ran out of time."""
    result = work / f"{step.name}.json"
    log = work / f"{step.name}.log"
    t0 = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step.name, "--work", str(work)]
    if "--allow-cpu" in sys.argv:
        cmd.append("--allow-cpu")
    env = child_env(GPU_CHECK_DEADLINE=str(time.time() + limit_s))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=limit_s)
            why = None if proc.returncode == 0 else f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            why = f"timed out after {limit_s:.0f} s"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the step ends the processes it started (_stop_spawned)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        finally:
            _kill(proc)
    data = json.loads(result.read_text()) if result.is_file() else {"checks": [], "figures": {}, "status": "failed"}
    if why and not str(data.get("status", "")).startswith("skipped"):
        data["status"] = "failed"
        data["error"] = (data.get("error") or "") + f" [{why}] " + log.read_text(errors="replace")[-1500:]
    data.update(name=step.name, seconds=round(time.perf_counter() - t0, 1), limit_s=round(limit_s))
    return data


def child_main(name: str, work: Path) -> int:
    """Run one step in this process (the runner's child)."""
    step = BY_NAME[name]
    signal.signal(signal.SIGTERM, _stop_spawned)
    rec = Record(work / f"{name}.json")
    absent = missing(step)
    if absent:
        rec.skip(f"not installed: {', '.join(absent)}")
        return 0
    if step.cuda and not have_cuda():
        rec.skip("needs a CUDA GPU")
        return 0
    try:
        STEP_FUNCS[name](Ctx(work, rec))
    except Exception:  # the step's failure is its result; the runner goes on with the next step
        rec.finish(error=traceback.format_exc()[-3000:])
        return 0
    rec.finish()
    return 0


def summary_line(r: dict) -> str:
    figures = r.get("figures", {})
    failed = [c["what"] for c in r.get("checks", []) if not c["ok"]]
    if failed:
        return "failed: " + "; ".join(failed)[:90]
    if r.get("error"):
        return r["error"].strip().splitlines()[-1][:90]
    keys = [k for k in figures if not isinstance(figures[k], (dict, list)) or k.endswith("speedup")]
    text = ", ".join(f"{k}={figures[k]}" for k in keys[:4])
    return text[:90]


def table(results: list[dict]) -> str:
    lines = [f"{'step':<18} {'status':<8} {'s':>6} {'checks':>7}  figures / first failure", "-" * 100]
    for r in results:
        checks = r.get("checks", [])
        ok = sum(c["ok"] for c in checks)
        status = r["status"].split(":")[0]
        row = f"{r['name']:<18} {status:<8} {r.get('seconds', 0):>6} {ok:>3}/{len(checks):<3}"
        lines.append(f"{row}  {summary_line(r)}")
        if status == "skipped":
            lines[-1] += r["status"][len("skipped") :]
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", action="store_true", help="print the steps and their time limits, run nothing")
    parser.add_argument("--only", default="", help="comma-separated step names (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time limit (a slower machine)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON written at the end")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (models, runs, logs)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU: CUDA steps report skipped")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train", nargs=3, metavar=("EXP", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train:
        train_probe(Path(args.train[0]), args.train[1], Path(args.train[2]))
        return 0
    if args.step:
        return child_main(args.step, args.work)

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"--only: unknown step(s) {', '.join(unknown)} -> one of {', '.join(BY_NAME)}")
    steps = [s for s in STEPS if not names or s.name in names]
    if args.plan or not (have_cuda() or args.allow_cpu):
        print(plan_text(steps, args.scale))
        if not args.plan:
            print("\nno CUDA GPU here: nothing was run (on a GPU machine: make gpu-check)")
        return 0

    work = Path(tempfile.mkdtemp(prefix="cyberft-gpu-check-"))
    start = time.perf_counter()
    total = TOTAL_S * args.scale
    results = []
    try:
        for s in steps:
            left = total - (time.perf_counter() - start)
            limit = left if not s.limit_s else min(s.limit_s * args.scale, left)
            enough = left >= CPU_SUITE_MIN_S if not s.limit_s else left >= 0.5 * s.limit_s * args.scale
            if not enough:
                results.append(
                    {"name": s.name, "status": "skipped: out of time", "checks": [], "figures": {}, "seconds": 0}
                )
                continue
            print(f"[gpu-check] {s.name} (limit {limit:.0f} s)", flush=True)
            results.append(run_step(s, work, limit))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    wall = round(time.perf_counter() - start, 1)
    env = next((r["figures"] for r in results if r["name"] == "env"), {})
    atomic_write_json(
        args.out,
        {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "wall_s": wall,
            "limit_s": total,
            "gpu": env.get("gpu"),
            "env": env,
            "steps": results,
            "work_dir": str(work) if args.keep else None,
        },
    )
    print()
    print(table(results))
    failed = [r["name"] for r in results if r["status"].startswith("failed")]
    print(
        f"\n{len(results)} step(s) in {wall} s; {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
        f"results in {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
