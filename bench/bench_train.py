"""Benchmark: our SFT loop (``train.loop.train_loop``, as ``full_sft`` runs it) vs HF ``Trainer`` and TRL.

Useful (non-padding) tokens per second of training, fp32 on CPU, the same model weights, the same
examples in the same micro-batches, the same effective batch, AdamW, linear warm-up/decay, gradient
clipping at 1.0; in one process, the contenders interleaved within every run:

* **HF Trainer, padded** (baseline): ``transformers.Trainer`` with ``DataCollatorForSeq2Seq`` (right
  padding to the longest example, labels -100), ``optim="adamw_torch"``, ``lr_scheduler_type="linear"``,
  ``train_sampling_strategy="sequential"`` over our epoch order, so that every micro-batch holds the
  examples ours holds; no packing. ``model.config.use_cache = False`` (the usual SFT setting; it only
  spares the Trainer building a KV cache it never reads).
* **TRL, padding-free**: ``trl.SFTTrainer`` (the ``bench`` extra) with ``padding_free=True`` (each
  micro-batch one row with ``position_ids``, what ``packing=True`` trains on too), the loss on the answer
  only (``completion_mask``), the tokenised rows as given, sequential order, and ``bf16=False``,
  ``gradient_checkpointing=False``: SFTConfig's defaults are bf16 and checkpointing, which on a CPU
  without bf16 units is emulated bf16, 7-8x slower than fp32 here (measured while writing this bench).
  TRL's packing bins (``bfd``) would put other examples in a step; this keeps every step's examples ours.
* **ours, packed** (the default, ``batching: packed``): ``train_loop`` with a real accelerate
  ``Accelerator``, a progress file written every step, the per-step log callback and a checkpoint
  directory (resumable-loop bookkeeping on; no checkpoint falls due in a short run).
* **ours, padded** (``batching: padded``, with ``--padded`` only): the same loop on right-padded
  micro-batches.
* **bare loop (ceiling)**: forward + backward + clip + AdamW + scheduler step in a plain torch loop over
  the very batches ours trains on (the packed rows, collated beforehand; the same forward: per-example
  SDPA, logits at answer tokens only). No accelerate, no logging, no checkpoint logic, no collate: no
  loop on this batching can be faster.

Each run trains ``--warmup`` + ``--steps`` optimizer steps of ``--micro-batch`` examples (no
accumulation, one process) from the same initial weights; the first ``--warmup`` steps are not timed
(step timestamps come from each loop's own per-step hook: train_loop's ``log``, a ``TrainerCallback``).
Tokens counted are the real tokens of the timed steps' examples, identical for every contender. One
untimed warm-up run of every contender comes first. The defaults (16 examples a step as in
``configs/smoke.yaml``, 1 + 4 steps) keep ``make bench`` to about 4-5 minutes on 2 cores; a step here
takes 2-4 s per contender.

Model: a randomly initialised Llama, hidden 512, 8 layers, 8 heads, MLP 1376 (about 26M parameters),
with the tiny model's tokenizer (``train.tiny_model.build_tokenizer``, vocabulary 2048). Data:
CyberMetric-500 from ``../shared/data/cybermetric`` (``data/sample/cyber_mcq.json`` when absent),
encoded by ``train.batches.encode_examples``, i.e. exactly as training encodes it.

    python bench/bench_train.py [--runs 5] [--steps 4] [--warmup 1] [--micro-batch 16] [--padded] [--json out.json]
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "TQDM_DISABLE": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
}.items():
    os.environ.setdefault(_k, _v)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MATMUL_N,
    REPO,
    Bench,
    Row,
    Target,
    bench_main,
    log,
    machine_info,
    matmul_gflops,
    matmul_params,
    parse_args,
)

sys.path.insert(0, str(REPO))

NAME = "train"
CM500 = REPO.parent / "shared" / "data" / "cybermetric" / "CyberMetric-500-v1.json"
SAMPLE = REPO / "data" / "sample" / "cyber_mcq.json"
MAX_LEN = 512
SEED = 0
LR = 1e-4
WARMUP_RATIO = 0.1
MAX_GRAD_NORM = 1.0
MICRO_BATCH = 16
WARMUP = 1
STEPS = 4
"""Defaults sized for ``make bench`` on 2 cores: a step of 16 examples is 2-4 s per contender here."""
SIZES = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=MAX_LEN,
)
"""The bench-sized model: the forward and backward dominate a step, as for a real model on a GPU."""


def data_file() -> Path:
    return CM500 if CM500.is_file() else SAMPLE


def build_setup(micro_batch: int, n_steps: int) -> dict:
    """Tokenizer, base model, encoded examples, and the examples of each micro-batch in our order."""
    import torch
    from torch.utils.data import DataLoader

    from launch.questions.data import load_questions
    from launch.spec.config import DataSource
    from train import batches
    from train.tiny_model import DEFAULT_DATA, _corpus, build_model, build_tokenizer

    tok = build_tokenizer(_corpus(DEFAULT_DATA))
    model = build_model(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=SEED, **SIZES)
    path = data_file()
    examples = batches.encode_examples(tok, load_questions(DataSource(path=str(path))), MAX_LEN, progress=False)
    if n_steps * micro_batch > len(examples):
        raise SystemExit(
            f"{n_steps} steps x {micro_batch} examples > the {len(examples)} examples of {path.name}: use fewer"
        )
    # train_loop's order for epoch 0: its shuffled DataLoader with the generator seeded seed + 0.
    order = DataLoader(
        range(len(examples)), batch_size=micro_batch, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    batches = [[examples[i] for i in b.tolist()] for b in order][:n_steps]
    return {"tok": tok, "model": model, "examples": examples, "batches": batches, "path": path}


def method_config(batching: str, micro_batch: int, n_steps: int) -> tp.Any:
    from launch.spec.config import MethodConfig

    return MethodConfig(
        name=f"bench_{batching}",
        kind="full_sft",
        learning_rate=LR,
        max_steps=n_steps,
        micro_batch_size=micro_batch,
        grad_accum_steps=1,
        warmup_ratio=WARMUP_RATIO,
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        precision="fp32",
        batching=batching,
    )


def window(stamps: dict[int, float], warmup: int, n_steps: int) -> float:
    """Seconds from the end of the last warm-up step to the end of the last step."""
    return stamps[n_steps] - stamps[warmup]


# --------------------------------------------------------------------------- contenders


def run_ours(
    setup: dict, batching: str, micro_batch: int, warmup: int, n_steps: int, tmp: Path
) -> tuple[float, tp.Any]:
    """(timed seconds, TrainResult) of train_loop as full_sft calls it."""
    from launch.store.expdir import MethodDir
    from train import loop, runtime

    model = copy.deepcopy(setup["model"])
    method = method_config(batching, micro_batch, n_steps)
    accelerator = runtime.make_accelerator(method)
    work = Path(tempfile.mkdtemp(prefix=f"ours-{batching}-", dir=tmp))
    stamps: dict[int, float] = {}

    def log_step(metrics: dict, step: int) -> None:  # train_loop calls it once per optimizer step
        stamps[step] = time.perf_counter()

    result = loop.train_loop(
        model,
        setup["examples"],
        method,
        accelerator,
        setup["tok"].pad_token_id,
        SEED,
        paths=MethodDir(work),
        log=log_step,
        progress=False,
    )
    shutil.rmtree(work, ignore_errors=True)
    return window(stamps, warmup, n_steps), result


def trainer_args(out: Path, micro_batch: int, n_steps: int) -> dict[str, tp.Any]:
    """The TrainingArguments HF Trainer and TRL share: our micro-batches in our order, AdamW, the linear
    schedule, clipping, one process on the CPU, nothing saved or reported."""
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=1,
        max_steps=n_steps,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=int(WARMUP_RATIO * n_steps),
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        optim="adamw_torch",
        use_cpu=True,
        seed=SEED,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run_trainer(setup: dict, micro_batch: int, warmup: int, n_steps: int, tmp: Path) -> float:
    """Timed seconds of transformers.Trainer over the same micro-batches, right-padded."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    model = copy.deepcopy(setup["model"])
    model.config.use_cache = False
    data = [{"input_ids": e.input_ids, "labels": e.labels} for b in setup["batches"] for e in b]
    stamps: dict[int, float] = {}

    class Stamp(TrainerCallback):
        def on_step_end(self, args: tp.Any, state: tp.Any, control: tp.Any, **kw: tp.Any) -> None:
            stamps[state.global_step] = time.perf_counter()

    out = Path(tempfile.mkdtemp(prefix="trainer-", dir=tmp))
    args = TrainingArguments(
        **trainer_args(out, micro_batch, n_steps),
        remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(setup["tok"], padding="longest", label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[Stamp()])
    trainer.remove_callback(PrinterCallback)  # its end-of-training metrics line, not part of the benchmark's output
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return window(stamps, warmup, n_steps)


def run_trl(setup: dict, micro_batch: int, warmup: int, n_steps: int, tmp: Path) -> tuple[float, list[float]]:
    """(timed seconds, losses) of TRL's ``SFTTrainer`` over the same micro-batches, padding-free.

    TRL's own way to train without padding (``padding_free=True``: each micro-batch flattened into one
    row with ``position_ids``, what ``packing=True`` with its default ``bfd`` strategy does too, here on
    our micro-batches rather than TRL's best-fit bins, so that the examples of each step are the same),
    the loss on the completion only (``completion_mask``: our answer tokens), the already tokenised rows
    (``skip_prepare_dataset``), sequential order, AdamW and the linear schedule as the others.
    """
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    model = copy.deepcopy(setup["model"])
    model.config.use_cache = False
    rows = [e for b in setup["batches"] for e in b]
    data = Dataset.from_list(
        [
            {"input_ids": e.input_ids, "labels": e.labels, "completion_mask": [int(x != -100) for x in e.labels]}
            for e in rows
        ]
    )
    stamps: dict[int, float] = {}
    losses: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: tp.Any, state: tp.Any, control: tp.Any, **kw: tp.Any) -> None:
            stamps[state.global_step] = time.perf_counter()

        def on_log(self, args: tp.Any, state: tp.Any, control: tp.Any, logs: tp.Any = None, **kw: tp.Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    out = Path(tempfile.mkdtemp(prefix="trl-", dir=tmp))
    args = SFTConfig(
        **trainer_args(out, micro_batch, n_steps),
        logging_steps=1,
        # SFTConfig's own defaults are bf16=True and gradient_checkpointing=True: on a CPU without bf16
        # units that is emulated bf16 (7-8x slower here) and recomputation; the same precision as ours.
        bf16=False,
        gradient_checkpointing=False,
        padding_free=True,
        completion_only_loss=True,
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=setup["tok"], callbacks=[Stamp()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return window(stamps, warmup, n_steps), losses


def _trl_version() -> str:
    import trl

    return trl.__version__


def run_ceiling(setup: dict, warmup: int, n_steps: int) -> tuple[float, list[float]]:
    """(timed seconds, losses): the bare torch loop over our packed micro-batches."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from train import packing

    model = copy.deepcopy(setup["model"]).train()
    batches = [packing.collate_packed(b) for b in setup["batches"]]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(WARMUP_RATIO * n_steps), n_steps)
    losses, stamps = [], {}
    with packing.padding_free_attention(model):
        for step, batch in enumerate(batches, 1):
            loss = packing.answer_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            stamps[step] = time.perf_counter()
    return window(stamps, warmup, n_steps), losses


# --------------------------------------------------------------------------- benchmark


def build(args: tp.Any) -> Bench:
    import torch

    from train import packing
    from train.batches import collate

    bench = Bench(NAME)
    bench.info["machine"] = machine_info()
    mb, warmup, steps = args.micro_batch, args.warmup, args.steps
    n_steps = warmup + steps
    t0 = time.perf_counter()
    setup = build_setup(mb, n_steps)
    batches = setup["batches"]
    tok = setup["tok"]
    timed = batches[warmup:]
    useful = sum(len(e.input_ids) for b in timed for e in b)
    padded_tokens = sum(mb * max(len(e.input_ids) for e in b) for b in timed)
    all_tokens = sum(len(e.input_ids) for b in batches for e in b)
    params = sum(p.numel() for p in setup["model"].parameters())

    # The same loss in both layouts (first micro-batch, initial weights): the contenders do the same work.
    model = copy.deepcopy(setup["model"]).train()
    with torch.no_grad():
        hf_loss = float(model(**collate(batches[0], tok.pad_token_id)).loss)
        with packing.padding_free_attention(model):
            packed_loss = float(packing.answer_loss(model, packing.collate_packed(batches[0])))
    del model
    log(
        NAME,
        f"{params / 1e6:.1f}M params (fp32, {torch.get_num_threads()} threads), {len(setup['examples'])} examples of "
        f"{setup['path'].name}; {warmup}+{steps} steps x {mb} examples; timed: {useful} useful tokens "
        f"({padded_tokens} with padding, {useful / padded_tokens:.0%} useful); first-batch loss HF padded "
        f"{hf_loss:.6f} "
        f"vs ours packed {packed_loss:.6f}; setup {time.perf_counter() - t0:.1f}s",
    )

    tmp = Path(tempfile.mkdtemp(prefix="cyberft-bench-train-"))
    contenders = ["trainer", "trl", "packed", "ceiling"] + (["padded"] if args.padded else [])
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    peak: list[float] = []
    flops = 6 * matmul_params(setup["model"]) * useful  # forward + backward matmuls over the useful tokens
    loss_diffs: list[float] = []
    trl_first: list[float] = []  # TRL's logged loss of its first step: the same examples, the same loss
    try:
        # Warm-up, untimed: imports, allocator, oneDNN kernels, the first Accelerator and Trainer.
        short = dict(setup, batches=batches[:2])
        run_trainer(short, mb, 1, 2, tmp)
        run_trl(short, mb, 1, 2, tmp)
        run_ceiling(short, 1, 2)
        for name in ("packed", "padded") if args.padded else ("packed",):
            run_ours(setup, name, mb, 1, 2, tmp)
        log(NAME, "warm-up done")
        for i in range(args.runs):
            # A different order each run, so no contender always follows the same one.
            k = i % len(contenders)
            turn = contenders[k:] + contenders[:k]
            seconds: dict[str, float] = {}
            peak.append(matmul_gflops())
            ours_losses: list[float] = []
            ceiling_losses: list[float] = []
            for name in turn:
                if name == "trainer":
                    seconds[name] = run_trainer(setup, mb, warmup, n_steps, tmp)
                elif name == "trl":
                    seconds[name], trl_losses = run_trl(setup, mb, warmup, n_steps, tmp)
                    trl_first.append(trl_losses[0] if trl_losses else float("nan"))
                elif name == "ceiling":
                    seconds[name], ceiling_losses = run_ceiling(setup, warmup, n_steps)
                else:
                    seconds[name], result = run_ours(setup, name, mb, warmup, n_steps, tmp)
                    if result.tokens != all_tokens:
                        raise RuntimeError(
                            f"ours ({name}) trained on {result.tokens} tokens, the bench expected "
                            f"{all_tokens}: its data order is not the one the other contenders got"
                        )
                    if name == "packed":
                        ours_losses = result.losses
            loss_diffs.append(max(abs(a - b) for a, b in zip(ours_losses, ceiling_losses)))
            for name, s in seconds.items():
                samples[name].append(useful / s)
            log(
                NAME,
                f"run {i + 1}/{args.runs}: "
                + ", ".join(f"{name} {useful / seconds[name]:.0f} tok/s ({seconds[name]:.1f}s)" for name in contenders)
                + f"; max |loss ours - bare loop| {loss_diffs[-1]:.1e}",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    bench.rows = [
        Row("trainer", "HF Trainer, padded (no packing)", "tok/s", samples["trainer"], True, baseline="trainer"),
        Row(
            "trl",
            f"TRL {_trl_version()} SFTTrainer, padding-free (packed rows), fp32",
            "tok/s",
            samples["trl"],
            True,
            baseline="trainer",
        ),
        Row(
            "ours",
            "ours: train_loop, batching packed",
            "tok/s",
            samples["packed"],
            True,
            baseline="trainer",
            targets=[
                Target(">=1.5x Trainer", "ratio_min", 1.5, ref="trainer"),
                Target(">=1.0x TRL packed", "ratio_min", 1.0, ref="trl"),
                Target(">=0.8x bare loop", "ratio_min", 0.8, ref="ceiling"),
            ],
        ),
        Row(
            "ceiling",
            "bare torch loop on ours' packed batches (ceiling)",
            "tok/s",
            samples["ceiling"],
            True,
            baseline="trainer",
        ),
        Row("peak", f"fp32 matmul {MATMUL_N}^3 (hardware ceiling)", "GFLOP/s", peak, True, baseline="peak"),
        Row(
            "ours_flops",
            "ours, model FLOP/s (vs = fraction of the matmul)",
            "GFLOP/s",
            [flops * tps / useful / 1e9 for tps in samples["packed"]],
            True,
            baseline="peak",
        ),
    ]
    if args.padded:
        bench.rows.insert(
            2,
            Row(
                "ours_padded", "ours: train_loop, batching padded", "tok/s", samples["padded"], True, baseline="trainer"
            ),
        )
    bench.info.update(
        {
            "data": str(setup["path"]),
            "examples": len(setup["examples"]),
            "micro_batch": mb,
            "grad_accum": 1,
            "warmup_steps_untimed": warmup,
            "timed_steps": steps,
            "timed_useful_tokens": useful,
            "timed_tokens_with_padding": padded_tokens,
            "padding_efficiency": useful / padded_tokens,
            "model": {
                "params": params,
                "dtype": "float32",
                **SIZES,
                "vocab_size": len(tok),
                "weights": f"random (seed {SEED})",
            },
            "optimizer": {
                "kind": "AdamW",
                "lr": LR,
                "schedule": "linear",
                "warmup_ratio": WARMUP_RATIO,
                "max_grad_norm": MAX_GRAD_NORM,
            },
            "first_batch_loss": {"hf_padded": hf_loss, "ours_packed": packed_loss, "trl_logged_per_run": trl_first},
            "max_abs_loss_diff_ours_vs_bare_loop_per_run": loss_diffs,
            "threads": torch.get_num_threads(),
            "matmul_gflops": peak,
            "model_flops_timed": flops,
        }
    )
    bench.notes.append(
        f"{steps} timed steps (after {warmup} untimed) of {mb} {setup['path'].name} examples each: "
        f"{useful} useful tokens, "
        f"{useful / padded_tokens:.0%} of the padded batches' tokens; all contenders start from the same weights and "
        f"train on the same micro-batches (first-batch loss {hf_loss:.6f} padded vs {packed_loss:.6f} packed vs "
        f"{trl_first[0] if trl_first else float('nan'):.6f} TRL; ours vs "
        f"bare loop per-step losses within {max(loss_diffs):.1e})"
    )
    bench.notes.append(
        "ceiling = the bare torch loop on ours' batching (packed rows, per-example SDPA, answer-only "
        "logits): ours/ceiling is the cost of accelerate, collate, logging and checkpoint bookkeeping"
    )
    return bench


def main(argv: tp.Sequence[str] | None = None) -> int:
    def extra(p: tp.Any) -> None:
        p.add_argument("--steps", type=int, default=STEPS, help=f"timed optimizer steps per run (default {STEPS})")
        p.add_argument(
            "--warmup", type=int, default=WARMUP, help=f"untimed optimizer steps before them (default {WARMUP})"
        )
        p.add_argument(
            "--micro-batch",
            type=int,
            default=MICRO_BATCH,
            help=f"examples per optimizer step (default {MICRO_BATCH}, as configs/smoke.yaml)",
        )
        p.add_argument("--padded", action="store_true", help="also time our loop with batching: padded")

    args = parse_args(NAME, __doc__.split("\n\n")[0], argv, extra)
    if args.steps < 1 or args.warmup < 1 or args.micro_batch < 1:
        raise SystemExit("--steps, --warmup and --micro-batch must be at least 1")
    return bench_main(build, args)


if __name__ == "__main__":
    raise SystemExit(main())
