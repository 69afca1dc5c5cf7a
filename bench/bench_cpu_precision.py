"""bf16 against fp32 on this CPU: LoRA training tokens/s and scoring questions/s, measured in the same run.

    python bench/bench_cpu_precision.py [--runs 5] [--model .cache/smollm2-135m-instruct] [--json PATH]

What a job does with each precision (``train.runtime.decide_precision``, ``train.evaluate.eval_dtype``):
LoRA trains fp32 weights and fp32 adapters under ``torch.autocast("cpu", torch.bfloat16)`` (what
accelerate's ``mixed_precision="bf16"`` wraps the forward in); the evaluation scores bf16 weights, its
letters projected in fp32. Each run measures every row back to back, so the ratios are paired.

On a CPU with AMX-BF16 or AVX512-BF16 these are the figures behind ``precision: auto`` choosing bf16; on
one without (the flags are printed), bf16 is emulated, and the ratio is what an explicit ``precision:
bf16`` would cost there: why ``decide_precision`` refuses it. Without ``--model``: a random Llama of about
33M parameters (hidden 512, 8 layers, vocabulary 16k), random tokens; a run takes about 3 minutes on 2 AVX2
cores (emulated bf16 is the slow part), far less on a CPU with the units.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import Bench, Row, bench_main, log, parse_args  # noqa: E402

NAME = "cpu_precision"
SEED = 0
TRAIN_BATCH, TRAIN_LEN = 1, 64
"""Rows and tokens of a training step: small, because emulated bf16 runs a step of the default model
20-30x slower than fp32 (36-56 s for 2 x 128 tokens on 2 AVX2 cores), and the run must stay near 3 minutes."""
EVAL_BATCH, EVAL_LEN = 4, 64
"""Questions per scoring forward and their tokens (kept small for the same reason)."""
STEPS = 1
"""Timed LoRA steps per run and row (one untimed step first)."""


def build_model(path: str | None) -> tp.Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if path:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=16384,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).float()


def lora(model: tp.Any) -> tp.Any:
    """The model with LoRA adapters as ``train.lora`` puts them (the config's defaults: r, alpha, targets)."""
    from peft import get_peft_model

    from launch.spec.config import LoraSettings
    from train.lora import lora_config

    return get_peft_model(copy.deepcopy(model), lora_config(LoraSettings()))


def train_seconds(model: tp.Any, opt: tp.Any, ids: tp.Any, bf16: bool, steps: int) -> float:
    """Seconds of ``steps`` LoRA steps (forward, backward, AdamW), under bf16 autocast or not."""
    import torch

    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def score_seconds(model: tp.Any, ids: tp.Any, autocast: bool) -> float:
    """Seconds of one scoring forward (the last position's logits, as ``train.scoring`` asks)."""
    import torch

    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - t


def build(args: argparse.Namespace) -> Bench:
    import torch

    from train import runtime

    bench = Bench(NAME)
    flags = runtime.cpu_bf16_flags()
    native = runtime.cpu_bf16_native(flags)
    seen = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
    log(NAME, f"CPU flags seen by torch {torch.__version__}: {seen} -> bf16 {'native' if native else 'EMULATED'}")
    base = build_model(args.model)
    n_params = sum(p.numel() for p in base.parameters())
    log(
        NAME,
        f"model: {args.model or 'random Llama'}, {n_params / 1e6:.1f}M parameters, {torch.get_num_threads()} threads",
    )
    bench.info.update(
        cpu_flags=flags,
        bf16_native=native,
        model=args.model or "random Llama (hidden 512, 8 layers, vocab 16384)",
        n_params=n_params,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        train_tokens_per_step=TRAIN_BATCH * TRAIN_LEN,
        eval_questions_per_forward=EVAL_BATCH,
    )
    g = torch.Generator().manual_seed(SEED)
    vocab = base.config.vocab_size
    train_ids = torch.randint(0, vocab, (TRAIN_BATCH, TRAIN_LEN), generator=g)
    eval_ids = torch.randint(0, vocab, (EVAL_BATCH, EVAL_LEN), generator=g)

    trainers = {}
    for key in ("fp32", "bf16"):
        model = lora(base).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        train_seconds(model, opt, train_ids, key == "bf16", 1)  # warm-up: oneDNN kernel choice, AdamW states
        trainers[key] = (model, opt)
    scorers = {"fp32": (base.eval(), False), "bf16_autocast": (base, True)}
    scorers["bf16_weights"] = (copy.deepcopy(base).to(torch.bfloat16).eval(), False)
    for model, autocast in scorers.values():
        score_seconds(model, eval_ids, autocast)  # warm-up

    tokens = TRAIN_BATCH * TRAIN_LEN * STEPS
    samples: dict[str, list[float]] = {k: [] for k in ("train_fp32", "train_bf16", *(f"eval_{k}" for k in scorers))}
    for run in range(args.runs):
        for key, (model, opt) in trainers.items():
            samples[f"train_{key}"].append(tokens / train_seconds(model, opt, train_ids, key == "bf16", STEPS))
        for key, (model, autocast) in scorers.items():
            samples[f"eval_{key}"].append(EVAL_BATCH / score_seconds(model, eval_ids, autocast))
        log(NAME, f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items()))

    kind = "native" if native else "emulated"
    bench.rows += [
        Row("train_fp32", "LoRA training, fp32", "tok/s", samples["train_fp32"], True, baseline="train_fp32"),
        Row(
            "train_bf16",
            f"LoRA training, bf16 autocast ({kind})",
            "tok/s",
            samples["train_bf16"],
            True,
            baseline="train_fp32",
        ),
        Row("eval_fp32", "scoring, fp32", "q/s", samples["eval_fp32"], True, baseline="eval_fp32"),
        Row(
            "eval_bf16_autocast",
            f"scoring, bf16 autocast ({kind})",
            "q/s",
            samples["eval_bf16_autocast"],
            True,
            baseline="eval_fp32",
        ),
        Row(
            "eval_bf16_weights",
            f"scoring, bf16 weights ({kind})",
            "q/s",
            samples["eval_bf16_weights"],
            True,
            baseline="eval_fp32",
        ),
    ]
    bench.notes.append(f"CPU flags seen by torch: {seen}; bf16 is {kind} here")
    if not native:
        bench.notes.append(
            "no AMX-BF16/AVX512-BF16: the bf16 rows are what an explicit precision: bf16 would cost on this CPU "
            "(train.runtime.decide_precision refuses it; auto stays fp32)"
        )
    return bench


def extra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="a local model folder (e.g. .cache/smollm2-135m-instruct) instead of the random Llama"
    )


if __name__ == "__main__":
    raise SystemExit(bench_main(build, parse_args(NAME, __doc__.split("\n\n")[0], extra=extra_args)))
