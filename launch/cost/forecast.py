"""What a study will cost before it runs (GPU-hours, wall time, money), and how far off that was after.

Standard library only, on the login node: the model's shape comes from :func:`launch.cost.memory.model_shape`
(its ``config.json``, no torch), token counts from :func:`launch.cost.tokencount.count_tokens`.

How it works
------------
**Training FLOPs per token** (``N``: the weights of the decoder layers' linear projections,
:func:`matmul_params`; ``A``: the LoRA adapters' parameters; ``L`` layers, ``d`` = heads x head size,
``T`` the token-weighted mean example length; ``V x h`` the output layer):

=====================  ==========================================  ================
method                 per trained token                           per logit
=====================  ==========================================  ================
full SFT               ``6N + 12 L d T``                           ``6 V h``
LoRA, QLoRA            ``4N + 6A + 12 L d T``                      ``4 V h``
+ checkpointing        ``+ 2N (+ 2A) + 4 L d T``                   (not recomputed)
evaluation (forward)   ``2N + 4 L d T``                            ``2 V h``
=====================  ==========================================  ================

* ``6N``: a weight matrix costs 2 FLOPs per weight per token forward (multiply, add), and backward
  computes the gradient with respect to its input (2) and to itself (2): Kaplan et al. 2020, "Scaling
  Laws for Neural Language Models", §2.1 (C = 6N, N without embeddings); Hoffmann et al. 2022
  (Chinchilla), Appendix F, count operation by operation and find 6N close to the full count.
* ``4N`` for LoRA and QLoRA: the frozen weights still run forward (2N) and pass the gradient back to
  their input so that the adapters below them learn (2N), but no weight gradient is formed; the
  adapters themselves (``x A B``) cost 6 per parameter like any trained weight. QLoRA does the same
  matrix products on weights dequantised on the fly: same FLOPs, lower utilisation (below). (Layer
  0's q/k/v need no input gradient either, the embeddings being frozen: 0.2% of Llama 3 8B's step,
  counted anyway.)
* ``12 L d T``: attention's two matrix products (``Q K^T`` and ``softmax V``), ``2 x 2 d T`` per token
  and layer forward, three times for forward and backward, counted without the causal mask's saving:
  the convention of the PaLM paper's MFU (Chowdhery et al. 2022, Appendix B: ``6N + 12 L H Q T``) and
  torchtitan's ``get_num_flop_per_token``. ``T`` is the example's own length: packed examples never
  attend to each other (``train/packing.py``). For CyberMetric's ~150-token examples it is under 1%.
* Logits are computed only at the answer's positions (``train.packing.answer_loss`` passes
  ``logits_to_keep``) and, in the evaluation, at the last position of each question, so the output
  layer counts per logit position, not per token; the input embedding is a lookup (no FLOPs).
* Gradient checkpointing recomputes every layer's forward in backward: one more forward. torch's
  non-reentrant checkpoint stops recomputing once every tensor backward needs is back, so a layer's
  last projection (``down_proj`` of a pre-norm layer, whose output nothing keeps) is skipped: the
  formula overstates full SFT's checkpointed step by up to ~7% for Llama 3 8B (5% measured on the
  tiny Llama with torch's FLOP counter, tests/test_forecast.py); the calibration absorbs it.
* The evaluation computes the prompt prefix all questions share once per model, and scores the base
  model (``eval.include_base``) and every method.
* Each method kind is one row of :data:`KIND_MODELS` (:class:`KindModel`): whether the gradient runs back
  through the base (``4N`` instead of ``2N``), whether the base's weights are trained (``6N``), its extra
  trained parameters (``6A``), what its checkpoints weigh, whether it scales over GPUs, and whose
  published utilisation it borrows until it has its own. A new kind adds a row.

**Time** = FLOPs / (GPUs x peak x utilisation) + overhead. *Peak* is the GPU's dense 16-bit
tensor-core rate (:data:`GPU_PEAK_TFLOPS`; fp32 training uses the fp32 rate), or the profile's own
value: :data:`PROFILE_FIELD` (``gpu_tflops`` in ``launch/site/profiles.py``). *Utilisation* is counted
FLOPs (recompute included) over peak: the "hardware FLOPs utilisation" of Korthikanti et al. 2022,
not PaLM's MFU, which leaves the recompute out. Defaults per method kind and GPU type
(:data:`DEFAULT_UTILISATION`) come from published runs, each cited there; after a site has run
studies, :mod:`launch.cost.calibration` supplies its measured values instead (``source: calibrated from 3
runs``). *Overhead* per job: start-up, loading the weights (per attempt: a requeued job starts
again), intermediate checkpoints and the final save (:data:`STARTUP_S`, :data:`READ_GB_PER_S`,
:data:`WRITE_GB_PER_S`, assumptions scaled by the calibration's measured factor).

Example
-------
(:mod:`launch.cost.costcheck` does this for the dry run, ``submit``, ``run`` and the evaluation job.)

>>> shape = memory.model_shape(cfg.model.name_or_path)
>>> split = data.plan_splits(cfg.data)
>>> counts = tokencount.count_tokens(split.train, split.eval, cfg.model.name_or_path, cfg.model.max_seq_len)
>>> fc = forecast(cfg, shape, counts, gpu_type=profile.gpu_type, price_per_gpu_hour=profile.price_per_gpu_hour,
...               gpu_tflops=profile.gpu_tflops, max_time_min=profile.max_time_min,
...               calibration=calibration.load_for_profile(profile_path))
>>> print(fc.table())                   # the dry run; fc.warnings are notes, they do not stop the plan
>>> exp.write_forecast(fc.to_json())    # at submit time: EXP/forecast.json
>>> # after the run (report): each method's forecast next to its report row and memory estimate
>>> cmp = {name: compare(fc_json["methods"][name], row, est.total_gb) for ...}
>>> print(format_comparison(cmp))      # and summary.json["forecast_vs_actual"] = cmp
"""

from __future__ import annotations

import math
import re
import typing as tp
from dataclasses import asdict, dataclass, field

from launch.cost.memory import ModelShape, ia3_params, lora_params
from launch.cost.tokencount import SplitTokens, TokenCounts
from launch.spec.config import ConfigError, ExperimentConfig, MethodConfig

PROFILE_FIELD = "gpu_tflops"
"""The ``SlurmProfile`` field: the peak dense TFLOP/s of one GPU at the precision the methods train in
(null: :data:`GPU_PEAK_TFLOPS` by ``gpu_type``). A site with another GPU, a power-capped one, or the dev
cluster (one CPU core standing in for each fake GPU: 0.085, half the 2-core matmul rate) sets it."""

# --------------------------------------------------------------------------- hardware

GPU_PEAK_TFLOPS: dict[str, tuple[float, float, bool]] = {
    # gpu_type: (dense 16-bit tensor-core TFLOP/s, fp32 TFLOP/s without tensor cores, native bf16),
    # from NVIDIA's data sheets; "with sparsity" figures are twice these and never reached by training.
    "a100": (312.0, 19.5, True),  # A100 SXM4/PCIe: BF16 312 (624 sparse), FP32 19.5
    "h100": (989.0, 67.0, True),  # H100 SXM5: BF16 989 (1,979 sparse), FP32 67; PCIe 756/51, NVL 835/60
    "h200": (989.0, 67.0, True),  # H200 SXM: the H100 SXM's compute with more and faster memory
    "l40s": (362.0, 91.6, True),  # L40S: BF16 362 (733 sparse), FP32 91.6
    "a10g": (125.0, 31.2, True),  # the A10 data sheet's BF16 125 / FP32 31.2: AWS publishes no A10G sheet and
    # runs it at lower clocks; set gpu_tflops in the profile from a measurement
    "v100": (125.0, 15.7, False),  # V100 SXM2: FP16 tensor 125, FP32 15.7; no bf16 ("auto" trains in fp32)
}
"""Peak TFLOP/s per GPU type (matched on the profile's ``gpu_type`` prefix: ``a100-80gb`` is an a100)."""


def gpu_key(gpu_type: str) -> str:
    """A GPU type as tables and calibrations compare it: lower-case letters and digits (``A100-80GB``: ``a10080gb``)."""
    return re.sub(r"[^a-z0-9]", "", (gpu_type or "").lower())


def gpu_entry(gpu_type: str) -> tuple[float, float, bool] | None:
    """The :data:`GPU_PEAK_TFLOPS` row of ``gpu_type`` (case and punctuation ignored, longest prefix)."""
    key = gpu_key(gpu_type)
    hits = [k for k in GPU_PEAK_TFLOPS if key.startswith(k)]
    return GPU_PEAK_TFLOPS[max(hits, key=len)] if hits else None


def peak_tflops(gpu_type: str, precision: str, override: float | None = None) -> float | None:
    """Peak TFLOP/s of one GPU for a method's ``precision``; None when neither the profile nor the table knows.

    ``auto`` trains in bf16 on GPUs with native bf16 and in fp32 on the others (V100), as
    ``train.runtime.resolve_precision`` does; ``fp32`` runs without tensor cores (torch leaves TF32
    off for matrix products by default). The profile's :data:`PROFILE_FIELD` wins for every precision.
    """
    if override:
        return float(override)
    entry = gpu_entry(gpu_type)
    if entry is None:
        return None
    tensor16, fp32, bf16 = entry
    sixteen = precision in ("bf16", "fp16") or (precision == "auto" and bf16)
    return tensor16 if sixteen else fp32


# --------------------------------------------------------------------------- utilisation

DEFAULT_UTILISATION: dict[tuple[str, str], float] = {
    # Full SFT: torchtitan, Llama 3.1 8B, FSDP on 8 and 128 H100 GPUs, bf16, selective activation
    # checkpointing: "33% to 39% MFU" (benchmarks/llama3_h100_202412_torchtitan.md; the file pairs them
    # "with or without torch.compile, respectively", but compile raised 5,762 to 6,667 tokens/s per GPU,
    # so 33% is the eager run's; understated there, as it divides by the SXM peak on lower-power H100s).
    # Our stack (transformers eager + DeepSpeed ZeRO) has neither compile nor FSDP2's overlap: 0.33.
    ("full_sft", "*"): 0.33,
    # On A100s the same recipe reaches 57-58% MFU (torchtitan docs/performance.md: Llama 3 8B, 64 A100,
    # 2,904-2,973 tokens/s per GPU): A100s are less starved for memory bandwidth than H100s. Their 8,192-
    # token sequences count ~22% of FLOPs in attention without the causal saving; ours are short, and
    # eager: 0.45 taken. Megatron-LM reached 52% on A100 (Narayanan et al. 2021, 163 of 312 TFLOP/s).
    ("full_sft", "a100"): 0.45,
    # LoRA: the same utilisation as full SFT. Its FLOPs per token are 2/3 of full SFT's and measured
    # speed-ups match or beat that: torchtune's published Llama 3.1 8B table (1x A6000, packed 2,048,
    # compiled) gives 4,699 vs 2,579 tokens/s (1.8x), and our own CPU study (docs/studies.md, SmolLM2-135M)
    # 1.3-1.4x against the 1.5x the FLOPs predict, i.e. 0.9x full SFT's utilisation.
    ("lora", "*"): 0.33,
    ("lora", "a100"): 0.45,
    # QLoRA: LoRA's FLOPs on weights dequantised from NF4 at every use, a memory-bound extra pass:
    # LitGPT's Llama-2-7B and Mistral-7B on one A10G, same micro-batch, 512 tokens: QLoRA took 1.39x
    # and 1.44x LoRA's time (45.67 vs 32.82 min, 44.75 vs 31.01 min; config_hub/finetune/README.md).
    # LoRA's utilisation / 1.42.
    ("qlora", "*"): 0.23,
    ("qlora", "a100"): 0.32,
    # Evaluation: forward passes over batches of whole prompts, as compute-bound as training's
    # (our CPU benchmark, docs/benchmarks.md: evaluation 0.82x and training 0.78x of the matmul
    # ceiling); full SFT's figures taken.
    ("eval", "*"): 0.33,
    ("eval", "a100"): 0.45,
}
"""Default utilisation (counted FLOPs / peak) per (method kind, GPU type); ``*``: any other GPU."""


def default_utilisation(kind: str, gpu_type: str) -> float:
    """:data:`DEFAULT_UTILISATION` for ``kind`` on ``gpu_type`` (its own row, else the ``*`` row).

    A kind without rows of its own takes those of its :attr:`KindModel.utilisation_as`.
    """
    key = gpu_key(gpu_type)
    if (kind, "*") not in DEFAULT_UTILISATION and kind in KIND_MODELS:
        kind = KIND_MODELS[kind].utilisation_as or kind
    for (k, gpu), value in DEFAULT_UTILISATION.items():
        if k == kind and gpu != "*" and key.startswith(gpu):
            return value
    return DEFAULT_UTILISATION[(kind, "*")]


class Calibrated(tp.NamedTuple):
    """What a site's calibration says for one (kind, GPU type, model size)."""

    utilisation: float
    overhead_factor: float
    """Measured overhead / modelled overhead (start-up, load, checkpoints, save)."""
    runs: int


class CalibrationSource(tp.Protocol):
    """Anything with ``lookup`` (:class:`launch.cost.calibration.Calibration`)."""

    def lookup(self, kind: str, gpu_type: str, n_params: int) -> Calibrated | None: ...


SIZE_BUCKETS: tuple[tuple[float, str], ...] = (
    (1e9, "<1B"),
    (4e9, "1-4B"),
    (16e9, "4-16B"),
    (64e9, "16-64B"),
    (math.inf, ">=64B"),
)
"""Model sizes a calibration keeps apart: utilisation grows with the width of the matrices."""


def size_bucket(n_params: int) -> str:
    """The :data:`SIZE_BUCKETS` label of a model with ``n_params`` parameters."""
    return next(label for limit, label in SIZE_BUCKETS if n_params < limit)


# --------------------------------------------------------------------------- method kinds


def _no_adapters(shape: ModelShape, method: MethodConfig) -> int:
    return 0


def _lora_adapters(shape: ModelShape, method: MethodConfig) -> int:
    return lora_params(shape, method.lora)[0]


def _ia3_adapters(shape: ModelShape, method: MethodConfig) -> int:
    return ia3_params(shape, method.ia3)


def _full_checkpoint(method: MethodConfig, shape: ModelShape, adapters: int) -> tuple[float, float]:
    """Full SFT: 16-bit weights + fp32 master weights and Adam moments (2 + 12 B per parameter; fp32
    training 4 + 8), and the 16-bit (fp32) model at the end."""
    fp32 = method.precision == "fp32"
    return (12.0 if fp32 else 14.0) * shape.n_params, (4.0 if fp32 else 2.0) * shape.n_params


def _adapter_checkpoint(method: MethodConfig, shape: ModelShape, adapters: int) -> tuple[float, float]:
    """LoRA, QLoRA: the adapters with their Adam state (16 B per adapter parameter), then the adapters alone (4)."""
    return 16.0 * adapters, 4.0 * adapters


def _no_checkpoint(method: MethodConfig, shape: ModelShape, adapters: int) -> tuple[float, float]:
    """Few-shot, prompt tuning, the feature head: nothing, or kilobytes to megabytes (none counted)."""
    return 0.0, 0.0


@dataclass(frozen=True)
class KindModel:
    """How the forecast counts one method kind: one row of :data:`KIND_MODELS`.

    A new kind adds a row (and, with published figures, its :data:`DEFAULT_UTILISATION` rows; without
    them it borrows ``utilisation_as``'s). Per token, each weight of the base's matrices costs 2 FLOPs
    forward, 2 more when the gradient flows back through it (``base_backward``: every kind that trains
    anything below the top of the model) and 2 more when it gets a gradient itself (``base_trained``).
    """

    checkpoint_bytes: tp.Callable[[MethodConfig, ModelShape, int], tuple[float, float]]
    """(bytes of one intermediate checkpoint, bytes of the final save), given the adapters' parameters."""
    base_trained: bool = False
    base_backward: bool = True
    adapters: tp.Callable[[ModelShape, MethodConfig], int] = _no_adapters
    """Trained parameters outside the base's matrices that every token multiplies (6 FLOPs each)."""
    utilisation_as: str = ""
    """The kind whose :data:`DEFAULT_UTILISATION` rows apply when this one has none (empty: its own)."""
    scales_with_gpus: bool = True
    """Data-parallel over GPUs: the time-limit warning may propose more of them (QLoRA runs on one)."""

    @property
    def weight_passes(self) -> float:
        """FLOPs per base weight per token: 2 forward, + 2 input gradient, + 2 weight gradient."""
        return 2.0 + 2.0 * self.base_backward + 2.0 * self.base_trained


KIND_MODELS: dict[str, KindModel] = {
    "full_sft": KindModel(_full_checkpoint, base_trained=True),
    # The frozen base passes the gradient back to the adapters below (no weight gradient of its own).
    "lora": KindModel(_adapter_checkpoint, adapters=_lora_adapters),
    # LoRA's products on weights dequantised on the fly: same FLOPs, lower utilisation (its own rows).
    "qlora": KindModel(_adapter_checkpoint, adapters=_lora_adapters, scales_with_gpus=False),
    # No training: the k examples are paid for in the evaluation (a longer shared prefix).
    "few_shot": KindModel(_no_checkpoint, base_backward=False, utilisation_as="eval", scales_with_gpus=False),
    # Soft prompts: LoRA's backward through the frozen base, no adapters in the layers; saves kilobytes.
    "prompt_tuning": KindModel(_no_checkpoint, utilisation_as="lora"),
    # One forward over the training split (the features), then a head trained in seconds on the cache.
    "feature_head": KindModel(_no_checkpoint, base_backward=False, utilisation_as="eval", scales_with_gpus=False),
    # Counted as what it adapts (MethodConfig.adapts: the full_sft or lora row) over its mixture's examples;
    # this row serves the calibration's kinds and the time-limit warning.
    "multi_task": KindModel(_adapter_checkpoint, adapters=_lora_adapters, utilisation_as="lora"),
    # (IA)^3: LoRA's backward through the frozen base; its vectors scale activations (no products to count).
    "ia3": KindModel(_adapter_checkpoint, adapters=_ia3_adapters, utilisation_as="lora"),
}
"""The throughput model of each method kind the forecast knows (``launch.spec.config.METHOD_KINDS`` lists
those the config accepts; a method of a kind missing here is left out of the forecast with a warning)."""


DORA_TIME_FACTOR = 1.3
"""Time of a DoRA step over a LoRA step (``lora.use_dora``), as a multiplier on the counted FLOPs. peft's DoRA
builds every adapted weight (dequantised for QLoRA) plus ``B A`` to take its norm at every forward, and rescales
the layer's output: work per step that grows with the weights, not with the tokens, plus passes over the outputs.
Measured on CPU (1 thread, r 16 on every linear, 16 rows of 100 tokens, steps of the two models alternated,
median of 35 ratios): 1.32 LoRA / 1.31 QLoRA on the tiny Llama (hidden 128), 1.21 / 1.19 at hidden 576
(SmolLM2-135M's width, 4 layers). The tiny model's figure is taken: the smoke and variant studies run it, and
a forecast that is long rather than short for wider models asks for a time limit that holds."""


def variant_factor(method: MethodConfig) -> float:
    """What a method's LoRA variant multiplies its training time by: :data:`DORA_TIME_FACTOR` with DoRA (peft
    recomputes every adapted weight's norm at every forward and rescales its output); 1 otherwise (rsLoRA
    changes a constant, and the ``init`` options run once before the first step, not counted)."""
    uses_lora = method.adapts in ("lora", "qlora")
    return DORA_TIME_FACTOR if uses_lora and method.lora.use_dora else 1.0


def kind_model(kind: str) -> KindModel:
    """The :data:`KIND_MODELS` row of ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return KIND_MODELS[kind]
    except KeyError:
        raise ValueError(f"kind: {kind!r} has no throughput model -> one of {', '.join(KIND_MODELS)}") from None


# --------------------------------------------------------------------------- overhead assumptions

STARTUP_S = 60.0
"""Per attempt of a job, before its first step apart from reading the weights: Python imports
from shared storage, CUDA and NCCL initialisation, DeepSpeed's engine, tokenising the data. An
assumption for a GPU site (no GPU run has measured it yet); a profile's ``job_startup_s`` replaces it,
and the calibration scales it by what the site measures."""

READ_GB_PER_S = 1.0
"""GB/s one job reads the weights at from shared storage (an assumption: parallel file systems
give one client 1-5 GB/s)."""

WRITE_GB_PER_S = 0.5
"""GB/s one job writes checkpoints and the final model at (an assumption, half the read rate)."""

SIGNAL_MARGIN_S = 120.0
"""Seconds before the time limit at which Slurm signals the job to checkpoint (``--signal=USR2@120``)."""

GB = 1e9


# --------------------------------------------------------------------------- FLOPs


def matmul_params(shape: ModelShape) -> int:
    """``N``: weights of the decoder layers' linear projections (what every token multiplies)."""
    return shape.num_layers * shape.linear_params_per_layer


def attention_flops(shape: ModelShape, context: float) -> float:
    """Forward FLOPs of attention per token at mean length ``context``: ``4 L d T`` (no causal saving)."""
    return 4.0 * shape.num_layers * shape.q_dim * context


def logit_flops(shape: ModelShape) -> float:
    """Forward FLOPs of the output layer per position whose logits are computed: ``2 V h``."""
    return 2.0 * shape.vocab_size * shape.hidden_size


@dataclass(frozen=True)
class Flops:
    """FLOPs of a job: ``per_token`` x tokens + ``per_logit`` x logit positions."""

    per_token: float
    per_logit: float

    def total(self, tokens: float, logit_tokens: float) -> float:
        return self.per_token * tokens + self.per_logit * logit_tokens


def train_flops(
    shape: ModelShape, kind: str, context: float, adapter_params: int = 0, checkpointing: bool = False
) -> Flops:
    """Training FLOPs per token and per logit position of one method (formulas in the module docstring).

    Parameters
    ----------
    kind:
        A method kind of :data:`KIND_MODELS` (``full_sft``, ``lora``, ``qlora``, ...); ``multi_task`` is given
        as what it adapts (:attr:`launch.spec.config.MethodConfig.adapts`); ``few_shot`` computes nothing in its own
        job (it pays in the evaluation, :func:`evaluation_forecast`).
    context:
        Token-weighted mean example length (:attr:`launch.cost.tokencount.SplitTokens.mean_context`).
    adapter_params:
        Trained parameters outside the base's matrices (LoRA/QLoRA adapters, :func:`launch.cost.memory.lora_params`);
        ignored by kinds whose :attr:`KindModel.adapters` counts none.
    checkpointing:
        ``gradient_checkpointing``: adds one forward of the layers (and adapters) to kinds with a backward pass.
    """
    model = kind_model(kind)
    n, attn, logit = matmul_params(shape), attention_flops(shape, context), logit_flops(shape)
    passes = model.weight_passes
    adapters = adapter_params if model.adapters is not _no_adapters else 0
    # Attention has no weights: forward, and the input gradient when the backward goes through it.
    attn_passes = 3 if model.base_backward else 1
    per_token = passes * n + 6.0 * adapters + attn_passes * attn
    per_logit = passes / 2 * logit
    if checkpointing and model.base_backward:
        per_token += 2.0 * n + 2.0 * adapters + attn
    return Flops(per_token, per_logit)


def eval_flops(shape: ModelShape, split: SplitTokens) -> float:
    """Forward FLOPs of scoring every question of ``split`` with one model, the shared prefix computed once."""
    computed = split.tokens - max(split.examples - 1, 0) * split.shared_prefix
    per_token = 2.0 * matmul_params(shape) + attention_flops(shape, split.mean_context)
    return per_token * computed + logit_flops(shape) * split.logit_tokens


# --------------------------------------------------------------------------- steps and tokens


def world_size(method: MethodConfig) -> int:
    """Processes of the job: nodes x GPUs per node (one on CPU)."""
    r = method.resources
    return max(r.nodes, 1) * max(r.gpus_per_node, 1)


def total_steps(method: MethodConfig, n_examples: int) -> int:
    """Optimizer steps, as ``train.loop.total_steps`` counts them (that module imports torch)."""
    if method.max_steps is not None:
        return method.max_steps
    per_epoch = math.ceil(n_examples / (method.micro_batch_size * world_size(method)))
    return max(1, math.ceil(method.epochs * per_epoch / method.grad_accum_steps))


def examples_seen(method: MethodConfig, n_examples: int, steps: int) -> int:
    """Examples the loop trains on in ``steps`` steps: whole epochs, then the part of the next.

    Every rank takes one micro-batch per micro-step; an epoch is ``ceil(n / (micro_batch x ranks))``
    micro-steps, its last micro-batches short of a full batch.
    """
    world = world_size(method)
    per_epoch = math.ceil(n_examples / (method.micro_batch_size * world))
    epochs, rest = divmod(steps * method.grad_accum_steps, per_epoch)
    return epochs * n_examples + min(rest * method.micro_batch_size * world, n_examples)


# --------------------------------------------------------------------------- the forecast


@dataclass(frozen=True)
class JobForecast:
    """The forecast of one job (a training method, or the evaluation: ``kind == "eval"``).

    Times in seconds, None when the GPU's peak is unknown (``peak_tflops`` None); ``cost`` None
    when the profile gives no price; ``attempts`` (jobs needed under ``time_min``) None when
    ``time_min`` leaves no time to train at all.
    """

    name: str
    kind: str
    gpus: int
    steps: int | None
    tokens: float
    flops: float
    utilisation: float
    source: str
    peak_tflops: float | None
    compute_s: float | None
    overhead_s: float | None
    modelled_overhead_s: float | None
    attempts: int | None
    wall_s: float | None
    gpu_hours: float | None
    cost: float | None
    time_limit_s: float
    max_timeouts: int
    n_params: int = 0
    models: int = 1
    runs: int = 1
    """Jobs of this forecast the plan runs: a method's cells in a sweep (each one job as forecast here,
    its own wall time, GPU-hours and cost); 1 otherwise."""
    variant: str = ""
    """The method's kind with its LoRA options (``lora+dora``...; :attr:`launch.spec.config.MethodConfig.variant`),
    shown in the kind column; empty for the evaluation."""

    @property
    def flops_per_token(self) -> float:
        """Counted FLOPs per token (logits included): what the calibration divides measured tokens by."""
        return self.flops / self.tokens if self.tokens else 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens per second of the compute alone, all GPUs together (as ``metrics.json`` reports them)."""
        return self.tokens / self.compute_s if self.compute_s else None


@dataclass
class Forecast:
    """Every job's forecast, the assumptions they share, and the warnings."""

    gpu_type: str
    price_per_gpu_hour: float
    tokens_source: str
    methods: list[JobForecast]
    evaluation: JobForecast
    warnings: list[str] = field(default_factory=list)
    device: str = "GPU"
    """What one of a job's ``gpus`` is: ``GPU``, or ``CPU thread`` (a local run on the CPU: CPU-hours)."""

    @property
    def jobs(self) -> list[JobForecast]:
        return [*self.methods, self.evaluation]

    def total(self, key: str) -> float | None:
        """Sum of ``gpu_hours`` or ``cost`` over every job (a sweep's cells each); None when one is unknown."""
        values = [getattr(j, key) for j in self.jobs]
        return None if any(v is None for v in values) else sum(v * j.runs for v, j in zip(values, self.jobs))

    def table(self) -> str:
        """The dry run's text: assumptions line, one row per job, the total, then each warning."""
        return format_forecast(self)

    def to_json(self) -> dict:
        """Plain data for ``EXP/forecast.json`` and ``summary.json``; :func:`compare` reads its ``methods``."""

        def job(j: JobForecast) -> dict:
            return {**asdict(j), "flops_per_token": j.flops_per_token, "tokens_per_s": j.tokens_per_s}

        return {
            "gpu_type": self.gpu_type,
            "device": self.device,
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "tokens_source": self.tokens_source,
            "methods": {j.name: job(j) for j in self.methods},
            "evaluation": job(self.evaluation),
            "total": {"gpu_hours": self.total("gpu_hours"), "cost": self.total("cost")},
            "warnings": list(self.warnings),
        }


def _weights_bytes(shape: ModelShape, dtype: str, precision: str) -> float:
    """Bytes of the checkpoint the jobs load: 2 per parameter in 16-bit, 4 in fp32."""
    wide = dtype == "float32" or (dtype == "auto" and precision == "fp32")
    return (4.0 if wide else 2.0) * shape.n_params


def _checkpoints(method: MethodConfig, steps: int, compute_s: float) -> int:
    """Intermediate checkpoints the loop writes (every ``every_steps`` steps or ``every_min`` minutes)."""
    by_steps = (steps - 1) // method.checkpoint.every_steps if method.checkpoint.every_steps else 0
    by_time = int(compute_s // (method.checkpoint.every_min * 60)) if method.checkpoint.every_min else 0
    return max(by_steps, by_time)


def _attempts(work_s: float, per_attempt_s: float, time_limit_s: float) -> int | None:
    """Jobs needed to do ``work_s`` when each loses ``per_attempt_s`` to start-up and stops at the limit.

    None when the limit leaves no time to work at all (the time-limit warning says so).
    """
    usable = time_limit_s - per_attempt_s - SIGNAL_MARGIN_S
    return max(1, math.ceil(work_s / usable)) if usable > 0 else None


def _util(
    kind: str,
    gpu_type: str,
    n_params: int,
    calibration: CalibrationSource | None,
    default_as: str = "",
    method: MethodConfig | None = None,
) -> tuple[float, float, str]:
    """(utilisation, overhead factor, source) from the calibration when it has runs of ``kind``, else the
    defaults of ``default_as or kind`` (``multi_task`` gives what it adapts; a kind's
    :attr:`KindModel.utilisation_as` applies from there). A calibration that can be keyed on ``method``'s
    precision (:meth:`launch.cost.calibration.Calibration.keyed`) is: bf16 runs never calibrate fp32 ones."""
    if method is not None and hasattr(calibration, "keyed"):
        calibration = calibration.keyed(method.precision, bool(method.deepspeed))
    found = calibration.lookup(kind, gpu_type, n_params) if calibration is not None else None
    if found is not None and found.runs > 0:
        return found.utilisation, found.overhead_factor, f"calibrated from {found.runs} run{'s' * (found.runs != 1)}"
    return default_utilisation(default_as or kind, gpu_type), 1.0, "default"


def _compute_s(flops: float, peak: float | None, utilisation: float, gpus: int) -> float | None:
    """Seconds of pure compute: FLOPs / (GPUs x peak x utilisation); None when the peak is unknown."""
    return None if peak is None else flops / (peak * 1e12 * utilisation * max(gpus, 1))


def _timed(job: dict, per_attempt_s: float, tail_s: float, factor: float) -> dict:
    """``job`` (a :class:`JobForecast`'s keyword arguments, ``compute_s`` set) with its overhead, wall time
    and GPU-hours: ``per_attempt_s`` is paid by every attempt, ``tail_s`` once; both scaled by ``factor``."""
    compute = job["compute_s"]
    if compute is None:
        return {
            **job,
            "overhead_s": None,
            "modelled_overhead_s": None,
            "attempts": None,
            "wall_s": None,
            "gpu_hours": None,
        }
    attempts = _attempts(compute + tail_s, per_attempt_s, job["time_limit_s"])
    modelled = (attempts or 1) * per_attempt_s + tail_s
    wall = compute + modelled * factor
    return {
        **job,
        "overhead_s": modelled * factor,
        "modelled_overhead_s": modelled,
        "attempts": attempts,
        "wall_s": wall,
        "gpu_hours": wall * job["gpus"] / 3600,
    }


def method_forecast(
    method: MethodConfig,
    cfg: ExperimentConfig,
    shape: ModelShape,
    counts: TokenCounts,
    gpu_type: str,
    gpu_tflops: float | None = None,
    calibration: CalibrationSource | None = None,
    devices: int | None = None,
    startup_s: float = STARTUP_S,
) -> JobForecast:
    """The forecast of one training method (no price: :func:`forecast` adds it).

    A ``multi_task`` mixture is taken as ``1 + sum(weights) / target_weight`` times the training split
    (its auxiliary examples as long as the target's on average) and counted as what it adapts; prompt
    tuning's rows are longer by the virtual tokens; the feature head reads the training split once,
    whatever its epochs (they are over the cached features); few-shot computes nothing in its own job.
    ``devices``: what the compute is divided over and the hours multiplied by, when not the method's
    GPUs (a local CPU run: its threads).
    """
    model = kind_model(method.adapts)
    steps, tokens, logits, context = _train_work(method, counts)
    adapters = model.adapters(shape, method)
    flops = train_flops(shape, method.adapts, context, adapters, method.gradient_checkpointing).total(tokens, logits)
    # DoRA's extra work counted as FLOPs at the kind's utilisation, so a calibration from LoRA runs applies to it
    # and one from DoRA runs measures the same utilisation.
    flops *= variant_factor(method)
    util, factor, source = _util(method.kind, gpu_type, shape.n_params, calibration, method.adapts, method)
    gpus = devices if devices is not None else method.resources.nodes * method.resources.gpus_per_node
    peak = peak_tflops(gpu_type, method.precision, gpu_tflops)
    compute = _compute_s(flops, peak, util, gpus)
    job = dict(
        name=method.name or method.kind,
        kind=method.kind,
        variant=method.variant,
        gpus=gpus,
        steps=steps,
        tokens=tokens,
        flops=flops,
        utilisation=util,
        source=source,
        peak_tflops=peak,
        compute_s=compute,
        time_limit_s=method.resources.time_min * 60.0,
        max_timeouts=method.resources.max_timeouts,
        n_params=shape.n_params,
        cost=None,
    )
    write = WRITE_GB_PER_S * GB
    ckpt, final = model.checkpoint_bytes(method, shape, adapters)
    saves = _checkpoints(method, steps, compute) * ckpt if compute is not None else 0.0
    load = _weights_bytes(shape, cfg.model.dtype, method.precision) / (READ_GB_PER_S * GB)
    if method.kind == "few_shot":  # the tokenizer only
        load = 0.0
    return JobForecast(**_timed(job, startup_s + load, (saves + final) / write, factor))


def _train_work(method: MethodConfig, counts: TokenCounts) -> tuple[int, float, float, float]:
    """(steps, tokens, logit positions, mean context) of a method's own job (see :func:`method_forecast`)."""
    train = counts.train
    if method.kind == "few_shot":
        return 0, 0.0, 0.0, 0.0
    if method.kind == "feature_head":  # one forward per question, the last position's logits
        return total_steps(method, train.examples), train.tokens, float(train.examples), train.mean_context
    mix = _mixture_factor(method)
    extra = method.prompt_tuning.num_virtual_tokens if method.kind == "prompt_tuning" else 0
    n = round(train.examples * mix)
    steps = total_steps(method, n)
    share = (examples_seen(method, n, steps) / n if n else 0.0) * mix
    return (
        steps,
        (train.tokens + extra * train.examples) * share,
        train.logit_tokens * share,
        train.mean_context + extra,
    )


def _mixture_factor(method: MethodConfig) -> float:
    """How many times the training split a ``multi_task`` mixture is (1 for other kinds)."""
    if method.kind != "multi_task":
        return 1.0
    mt = method.multi_task
    return 1.0 + sum(t.weight for t in mt.tasks) / mt.target_weight


def shared_prefix_extra(method: MethodConfig, counts: TokenCounts) -> float:
    """Tokens a method adds to the prefix every question shares when it is scored: few-shot's ``k`` examples
    (each as long as a training example on average), prompt tuning's virtual tokens; 0 otherwise."""
    if method.kind == "few_shot":
        return method.few_shot.k * (counts.train.tokens / counts.train.examples if counts.train.examples else 0.0)
    if method.kind == "prompt_tuning":
        return float(method.prompt_tuning.num_virtual_tokens)
    return 0.0


def evaluation_forecast(
    cfg: ExperimentConfig,
    shape: ModelShape,
    counts: TokenCounts,
    gpu_type: str,
    gpu_tflops: float | None = None,
    calibration: CalibrationSource | None = None,
    devices: int | None = None,
    runs: tp.Mapping[str, int] | None = None,
    startup_s: float = STARTUP_S,
) -> JobForecast:
    """The shared evaluation job: every model (the base one too when ``eval.include_base``) scores every question.

    ``devices`` as in :func:`method_forecast`; ``runs``: method -> its cells in a sweep (:func:`runs_per_method`),
    each scored as a model of its own.
    """
    runs = runs or {}
    models = sum(runs.get(m.name, 1) for m in cfg.methods) + (1 if cfg.eval.include_base else 0)
    flops = models * eval_flops(shape, counts.eval)
    for m in cfg.methods:  # a longer shared prefix: computed once, then attended to by every question's tokens
        prefix = shared_prefix_extra(m, counts)
        extra = 2.0 * matmul_params(shape) * prefix + attention_flops(shape, prefix) * counts.eval.tokens
        flops += runs.get(m.name, 1) * extra
    if cfg.eval.mode == "generate":  # decoding: one forward of one token per new token and question
        flops += models * counts.eval.examples * cfg.eval.max_new_tokens * 2.0 * matmul_params(shape)
    util, factor, source = _util("eval", gpu_type, shape.n_params, calibration)
    r = cfg.eval.resources
    gpus = devices if devices is not None else r.nodes * r.gpus_per_node
    peak = peak_tflops(gpu_type, "auto", gpu_tflops)
    job = dict(
        name="eval",
        kind="eval",
        gpus=gpus,
        steps=None,
        tokens=models * counts.eval.tokens,
        flops=flops,
        utilisation=util,
        source=source,
        peak_tflops=peak,
        compute_s=_compute_s(flops, peak, util, gpus),
        time_limit_s=r.time_min * 60.0,
        max_timeouts=r.max_timeouts,
        n_params=shape.n_params,
        models=models,
        cost=None,
    )
    load = models * _weights_bytes(shape, cfg.model.dtype, "auto") / (READ_GB_PER_S * GB)
    return JobForecast(**_timed(job, startup_s, load, factor))


def _priced(job: JobForecast, price: float, runs: int = 1) -> JobForecast:
    cost = job.gpu_hours * price if job.gpu_hours is not None and price else None
    return JobForecast(**{**asdict(job), "cost": cost, "runs": runs})


def runs_per_method(cfg: ExperimentConfig) -> dict[str, int]:
    """Method -> the cells its sweep runs it as (1 each without a sweep).

    Each cell is forecast as the method's own settings: a grid over the learning rate or the seed
    changes no FLOPs; one over ``max_steps`` or ``micro_batch_size`` makes the cells differ from it.
    """
    counts = dict.fromkeys((m.name for m in cfg.methods), 1)
    if cfg.sweep is None:
        return counts
    from launch.spec import sweep  # the expansion validates every grid point: read only when there is a sweep

    try:
        per_method = sweep.arrays(sweep.cells(cfg))
    except ConfigError:  # the sweep's own problems are reported by the preflight
        return counts
    return {**counts, **{name: len(cells) for name, cells in per_method.items()}}


def forecast(
    cfg: ExperimentConfig,
    shape: ModelShape,
    counts: TokenCounts,
    gpu_type: str,
    price_per_gpu_hour: float = 0.0,
    gpu_tflops: float | None = None,
    max_time_min: int | None = None,
    calibration: CalibrationSource | None = None,
    devices: tuple[int, int] | None = None,
    device: str = "GPU",
    startup_s: float | None = None,
) -> Forecast:
    """The cost forecast of every method and of the evaluation.

    Parameters
    ----------
    cfg:
        The validated experiment config.
    shape:
        :func:`launch.cost.memory.model_shape` of ``cfg.model.name_or_path`` (the caller skips the forecast,
        with a note, when it is None, as the memory estimate does).
    counts:
        :func:`launch.cost.tokencount.count_tokens` of the planned split.
    gpu_type:
        The profile's ``gpu_type`` (``""`` or ``"cpu"`` for local runs: give ``gpu_tflops`` then).
    price_per_gpu_hour:
        The profile's price; 0: no money column.
    gpu_tflops:
        The profile's :data:`PROFILE_FIELD`, overriding :data:`GPU_PEAK_TFLOPS`.
    max_time_min:
        The profile's ``max_time_min``: a warning proposes a longer ``time_min`` only within it.
    calibration:
        :func:`launch.cost.calibration.load` of the profile's calibration file; None: the defaults.
    devices:
        (devices of each training job, of the evaluation) in place of the config's GPUs: a local run
        on the CPU gives its threads (``gpu_tflops`` then is one thread's peak), so the hours are CPU-hours.
    device:
        What one device is, for the table's words (``GPU``, ``CPU thread``).
    startup_s:
        Seconds each job attempt takes before its first step, apart from reading the weights (the
        profile's ``job_startup_s``); None: :data:`STARTUP_S`.

    Returns
    -------
    Forecast
        With a warning per job whose wall time exceeds ``time_min x (max_timeouts + 1)``, one when the
        peak of ``gpu_type`` is unknown, and one per method whose kind has no :data:`KIND_MODELS` row
        (left out of the forecast).
    """
    train_devices, eval_devices = devices if devices is not None else (None, None)
    known = [m for m in cfg.methods if m.kind in KIND_MODELS]
    runs = runs_per_method(cfg)
    startup = STARTUP_S if startup_s is None else startup_s
    methods = [
        _priced(
            method_forecast(m, cfg, shape, counts, gpu_type, gpu_tflops, calibration, train_devices, startup),
            price_per_gpu_hour,
            runs[m.name],
        )
        for m in known
    ]
    evaluation = evaluation_forecast(cfg, shape, counts, gpu_type, gpu_tflops, calibration, eval_devices, runs, startup)
    fc = Forecast(
        gpu_type, price_per_gpu_hour, counts.source, methods, _priced(evaluation, price_per_gpu_hour), device=device
    )
    for m in cfg.methods:
        if m.kind not in KIND_MODELS:
            fc.warnings.append(
                f"methods.{m.name}: kind {m.kind!r} has no throughput model, so it is not forecast -> add its row to "
                "launch.cost.forecast.KIND_MODELS"
            )
    if any(j.peak_tflops is None for j in fc.jobs):
        fc.warnings.append(
            f"{PROFILE_FIELD}: no peak TFLOP/s known for GPU type {gpu_type or '(none)'!r}, so no wall time, "
            f"GPU-hours or cost -> set {PROFILE_FIELD} in the profile (dense bf16 TFLOP/s of one GPU; known types: "
            f"{', '.join(GPU_PEAK_TFLOPS)})"
        )
    for job, method in zip(methods, known):
        note = time_warning(job, f"methods.{job.name}.resources", max_time_min, method.kind)
        if note:
            fc.warnings.append(note)
    note = time_warning(evaluation, "eval.resources", max_time_min, "eval")
    if note:
        fc.warnings.append(note)
    return fc


# --------------------------------------------------------------------------- the time-limit warning


def time_warning(job: JobForecast, where: str, max_time_min: int | None = None, kind: str = "") -> str | None:
    """A note when ``job``'s forecast wall time exceeds ``time_min x (max_timeouts + 1)``, with what would fix it.

    Fixes, each computed for this job: ``max_timeouts`` high enough at the current ``time_min`` (each
    requeue starts and loads again), a ``time_min`` that covers the run within the current requeues
    (only up to the partition's ``max_time_min`` when known), and, for kinds that scale over GPUs
    (:attr:`KindModel.scales_with_gpus`: full SFT and LoRA), the GPUs that would bring the compute time
    within the limit (assuming linear scaling).
    """
    if job.wall_s is None:
        return None
    limit = job.time_limit_s * (job.max_timeouts + 1)
    if job.attempts is None:
        needed = math.ceil((job.wall_s + SIGNAL_MARGIN_S) / 60)
        return (
            f"{where}.time_min: {job.time_limit_s / 60:g} min leaves no time to train after start-up and loading "
            f"and the checkpoint signal {SIGNAL_MARGIN_S:g} s before the limit -> {where}.time_min: {needed} "
            "(the whole job in one attempt)"
        )
    if job.wall_s <= limit:
        return None
    per_attempt = (job.modelled_overhead_s or 0.0) / max(job.attempts, 1)
    fixes = [f"{where}.max_timeouts: {job.attempts - 1} ({job.attempts} attempts of {job.time_limit_s / 60:g} min)"]
    needed = math.ceil((job.wall_s / (job.max_timeouts + 1) + SIGNAL_MARGIN_S) / 60)
    if max_time_min is None or needed <= max_time_min:
        fixes.append(f"{where}.time_min: {needed}")
    if kind in KIND_MODELS and KIND_MODELS[kind].scales_with_gpus and job.compute_s:
        room = limit - (job.max_timeouts + 1) * per_attempt - SIGNAL_MARGIN_S * (job.max_timeouts + 1)
        if room > 0:
            gpus = math.ceil(max(job.gpus, 1) * job.compute_s / room)
            fixes.append(f"about {gpus} GPUs ({where}.nodes x gpus_per_node; linear scaling assumed)")
    fix = "; or ".join(fixes) if fixes else "use a smaller model or less data: nothing within the partition's limit"
    return (
        f"{where}: forecast wall time {duration(job.wall_s)} exceeds time_min x (max_timeouts + 1) = "
        f"{job.time_limit_s / 60:g} min x {job.max_timeouts + 1} = {duration(limit)}; the job would stop "
        f"unfinished -> {fix}"
    )


# --------------------------------------------------------------------------- text


def duration(seconds: float | None) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def quantity(value: float | None) -> str:
    """``950``, ``12.3k``, ``4.56M``, ``7.89G`` ... ``1.2E`` (10^18), then ``3.4e+21``; ``?`` when unknown."""
    if value is None:
        return "?"
    if abs(value) >= 1e21:
        return f"{value:.2g}"
    for scale, suffix in ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"), (1e15, "P"), (1e18, "E")):
        if abs(value) < 999.5 * scale:  # what .3g would round up to 1e+03 goes to the next suffix
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.2g}"


def text_table(headers: list[str], rows: list[list[str]], left: tp.Collection[int] = (0,)) -> str:
    """Columns padded to their widest cell: those numbered in ``left`` left-aligned (text), the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def _money(value: float | None, price: float) -> str:
    if not price:
        return "-"
    return "?" if value is None else f"{value:,.2f}"


def device_words(device: str) -> tuple[str, str]:
    """(count header, hours header) for a device: ``GPUs``, ``GPU-h``; a CPU thread: ``threads``, ``CPU-h``."""
    return ("GPUs", "GPU-h") if device == "GPU" else ("threads", "CPU-h")


def format_forecast(fc: Forecast) -> str:
    """The forecast as the dry run prints it."""
    peaks = sorted({j.peak_tflops for j in fc.jobs if j.peak_tflops is not None})
    peak = "/".join(f"{p:g}" for p in peaks) or "?"
    count, hours = device_words(fc.device)
    price = (
        f"{fc.price_per_gpu_hour:g} per {hours.removesuffix('-h')}-hour"
        if fc.price_per_gpu_hour
        else "no price in the profile"
    )
    head = (
        f"cost forecast: {fc.gpu_type or 'unknown GPU'}, peak {peak} TFLOP/s per {fc.device}, {price}; "
        f"{fc.tokens_source}"
    )
    headers = ["job", "kind", count, "steps", "tokens", "FLOPs", "util", "util source", "wall", hours, "cost"]

    def times(value: float | None, runs: int) -> float | None:
        return None if value is None else value * runs

    rows = [
        [
            j.name if j.runs == 1 else f"{j.name} x{j.runs}",
            j.variant or j.kind,
            str(j.gpus),
            "-" if j.steps is None else f"{j.steps:,}",
            quantity(j.tokens),
            quantity(j.flops),
            f"{j.utilisation:.2f}",
            j.source,
            duration(j.wall_s),
            _hours(times(j.gpu_hours, j.runs)),
            _money(times(j.cost, j.runs), fc.price_per_gpu_hour),
        ]
        for j in fc.jobs
    ]
    rows.append(
        [
            "total",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            _hours(fc.total("gpu_hours")),
            _money(fc.total("cost"), fc.price_per_gpu_hour),
        ]
    )
    table = text_table(headers, rows, left=(0, 1, 7))
    notes = [f"warning: {w}" for w in fc.warnings]
    if any(j.runs > 1 for j in fc.methods):
        notes.insert(
            0,
            f"sweep: a job 'x N' runs as N cells; steps, tokens, FLOPs and wall time are one cell's, {hours} and "
            "cost all N together",
        )
    return "\n".join([head, table, *notes])


# --------------------------------------------------------------------------- forecast against actual


COMPARED = (
    ("gpu_hours", "GPU-h"),
    ("wall_s", "wall s"),
    ("tokens_per_s", "tok/s"),
    ("peak_mem_gb", "peak GiB"),
)
"""Quantities :func:`compare` puts side by side, with their column labels."""


def error_pct(forecast_value: float | None, actual: float | None) -> float | None:
    """``(forecast - actual) / actual`` in percent (positive: the forecast was too high); None without both."""
    if forecast_value is None or actual is None or not actual:
        return None
    return (forecast_value - actual) / actual * 100.0


def compare(job: tp.Mapping[str, tp.Any], row: tp.Mapping[str, tp.Any], memory_gb: float | None = None) -> dict:
    """One method's forecast next to what it measured.

    Parameters
    ----------
    job:
        Its entry in :meth:`Forecast.to_json` ``["methods"]`` (as saved in ``EXP/forecast.json``).
    row:
        Its row of ``launch.results.report.build_rows``: ``gpu_hours`` (sacct's on Slurm), ``elapsed_s`` (sacct,
        every attempt) or else ``wall_s`` (the job's own timers), ``tokens_per_s``, ``peak_mem_gb``.
    memory_gb:
        The memory estimate per GPU (``launch.cost.memory.estimate(...).total_gb``), compared with the peak.

    Returns
    -------
    dict
        ``{quantity: {"forecast", "actual", "error_pct"}}`` for each of :data:`COMPARED`; a value that is
        unknown on either side is None (JSON null), and so is its error.
    """
    actual_wall = row.get("elapsed_s") or row.get("wall_s")
    pairs = {
        "gpu_hours": (job.get("gpu_hours"), row.get("gpu_hours")),
        "wall_s": (job.get("wall_s"), actual_wall),
        "tokens_per_s": (job.get("tokens_per_s"), row.get("tokens_per_s")),
        "peak_mem_gb": (memory_gb, row.get("peak_mem_gb")),
    }
    return {k: {"forecast": f, "actual": a, "error_pct": error_pct(f, a)} for k, (f, a) in pairs.items()}


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if key in ("gpu_hours", "peak_mem_gb") else f"{value:,.0f}"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}%"


def format_comparison(comparisons: tp.Mapping[str, tp.Mapping[str, dict]], hours: str = "GPU-h") -> str:
    """A text table: per method, each quantity's forecast, actual and error (``+12%``: forecast too high).

    ``hours``: the label of the hours (``CPU-h`` for a local run on the CPU).
    """
    headers = ["method"]
    for key, label in COMPARED:
        label = hours if key == "gpu_hours" else label
        headers += [f"{label} fc", label, "err"]
    rows = []
    for name, cmp in comparisons.items():
        cells = [name]
        for key, _ in COMPARED:
            c = cmp.get(key) or {}
            cells += [_cell(c.get("forecast"), key), _cell(c.get("actual"), key), _err(c.get("error_pct"))]
        rows.append(cells)
    return (
        "forecast against actual (err = (forecast - actual) / actual; peak GiB fc = the memory estimate)\n"
        + text_table(headers, rows)
    )
