"""Per-GPU memory estimate of a fine-tuning method, on the login node, before submitting.

Standard library only (no torch, transformers or deepspeed): the model's shape
comes from its ``config.json`` (a local directory, or the Hugging Face cache) or
from a small built-in table, never from the network. The estimate adds up, per
GPU:

* **weights**, **grads**, **optimizer**: bytes per parameter by method and
  precision, partitioned over the GPUs by DeepSpeed ZeRO (stage 1 the optimizer,
  2 also the gradients, 3 also the weights) and moved to host memory by the
  DeepSpeed JSON's ``offload_optimizer`` / ``offload_param``;
* **activations**: what autograd keeps for backward in a Llama-style decoder
  (per token, per layer, plus the logits), much less with gradient checkpointing;
* **overhead**: CUDA context, library workspaces, NCCL buffers.

:func:`fit_problems` compares the total with the GPU's memory (minus a safety
margin) and, when it does not fit, names the changes that would, each one
re-estimated. "GB" is GiB (2**30 bytes) everywhere, as ``nvidia-smi`` and
DeepSpeed's own estimators count it; a "80 GB" GPU has 80 GiB.

Example
-------
>>> shape = model_shape("meta-llama/Meta-Llama-3-8B-Instruct")
>>> est = estimate(shape, cfg.method("full_sft"), cfg.model.max_seq_len)       # every example at max_seq_len
>>> print(est.line())
full_sft: 57.1 GB/GPU (weights 15.0, grads 1.9, optimizer 11.2, activations 27.0, overhead 2.0) on 8 GPUs, ZeRO-2
>>> lengths = launch.cost.costcheck.row_lengths(counts.train)                      # the split's own lengths
>>> print(estimate(shape, cfg.method("full_sft"), cfg.model.max_seq_len, lengths=lengths).line())
full_sft: 35.4 GB/GPU (weights 15.0, grads 1.9, optimizer 11.2, activations 5.4, overhead 2.0) on 8 GPUs, ZeRO-2
>>> fit_problems(est, profile.gpu_mem_gb, cfg.method("full_sft"))
[]

The activations are those of the largest micro-batch the split's example lengths make
(:class:`RowLengths`, :func:`peak_rows`), when the plan could count them; without them every
example is taken at ``max_seq_len``, a bound several times the peak on short questions. A site's
finished runs scale the estimate of each kind (``scales``: the largest measured peak / estimate
its calibration file holds, ``launch.cost.calibration.Calibration.memory_scale``): the model counts the
allocations, the scale what the site's allocator and libraries add to them. docs/cost.md#memory
has the measured fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from launch import REPO_ROOT
from launch.spec import hub
from launch.spec.config import LETTERS, METHOD_KINDS, MethodConfig

T = tp.TypeVar("T")

GB = 2**30
"""Bytes in one "GB" of every figure here: GiB, like nvidia-smi, DeepSpeed's estimators and
GPU data sheets (an "80 GB" A100/H100 has 80 GiB)."""

# --------------------------------------------------------------------------- constants: bytes per parameter

MIXED_WEIGHT_BYTES = 2
"""16-bit (bf16/fp16) working copy of each weight, what forward and backward read (ZeRO paper,
Rajbhandari et al. 2020, §3.1: "2Ψ" for fp16 parameters)."""

MIXED_GRAD_BYTES = 2
"""16-bit gradient of each trainable weight (ZeRO paper §3.1: "2Ψ" for fp16 gradients)."""

MIXED_OPTIMIZER_BYTES = 12
"""fp32 master weight (4) + Adam first moment m (4) + second moment v (4) per trainable weight
(ZeRO paper §3.1: K = 12 for mixed-precision Adam). DeepSpeed's estimator
(``estimate_zero3_model_states_mem_needs``) counts 18 = 2 + 16 per partitioned parameter: it
also counts the fp32 copy of the gradient partition made at the optimizer step. That copy is
freed after the step, when activations are already gone, so it is not added to the
forward/backward peak here (our model states come out ~10% below DeepSpeed's figure, see
tests/test_memory.py)."""

FP32_WEIGHT_BYTES = 4
"""precision: fp32: weights are fp32 and are their own master copy."""

FP32_GRAD_BYTES = 4
"""precision: fp32: fp32 gradients."""

FP32_OPTIMIZER_BYTES = 8
"""precision: fp32: Adam m and v only (no separate master weights)."""

AMP_CAST_BYTES = 2
"""Full SFT without DeepSpeed in bf16/fp16: the model holds fp32 master weights (4 + 4 + 8 B as in
fp32) and accelerate's autocast makes a 16-bit copy of each weight for the matmuls, which autograd
keeps until backward has used it (train/full_sft.py loads fp32 weights there; pure bf16 weights
under AdamW would round most updates of a 1e-5 learning rate away)."""

ADAPTER_BYTES = 16
"""Per LoRA adapter parameter: peft up-casts adapters to fp32 (``autocast_adapter_dtype=True``),
so fp32 weight (4) + fp32 gradient (4) + Adam m and v (8)."""

NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Per 4-bit quantised weight (bitsandbytes NF4 with double quantisation, as train/quant.py loads
it): 4-bit code (0.5 B) + one 8-bit absmax per block of 64 weights (1/64 B) + one fp32 constant per
256 such blocks (4/16384 B) = 0.5159 B, i.e. 4.127 bits (QLoRA paper, Dettmers et al. 2023, §3
"Double Quantization": constants cost 8/64 + 32/(64*256) = 0.127 bits per parameter)."""

QLORA_UNQUANTISED_BYTES = 4
"""QLoRA: parameters that are not in a quantised ``Linear`` (embeddings, lm_head, norms) are cast
to fp32 by peft's ``prepare_model_for_kbit_training`` (train/qlora.py calls it). For Llama-3 8B
that is 1.05 B parameters, 3.9 GB: more than half of the QLoRA model's weights."""

DDP_BUCKET_COPY = True
"""Plain accelerate (no DeepSpeed) on more than one GPU wraps the model in torch DDP, whose
all-reduce buckets hold a second copy of all gradients (``gradient_as_bucket_view=False``, the
default; torch DDP docs)."""

# --------------------------------------------------------------------------- constants: activations

ACT_HIDDEN_BYTES = 24
ACT_KV_BYTES = 8
ACT_MLP_BYTES = 8
"""Activations autograd keeps per token for one Llama decoder layer in 16-bit, in bytes:
``24*hidden + 8*kv_dim + 8*intermediate`` (kv_dim = num_kv_heads * head_dim). Counted from the
tensors HF's ``LlamaDecoderLayer`` saves: two RMSNorms (fp32 up-cast input 4h + normalised 16-bit
output 2h each = 12h), q with its RoPE copies (6h), k and v with RoPE copies (8kv), the attention
output and its contiguous copy for o_proj (4h), rounded up by 2h for the softmax statistics and
small tensors; SwiGLU MLP: gate output, SiLU output, up output and their product (4 x 2i = 8i).
Same reasoning as Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (34h per token-layer for GPT with a 4h MLP and dropout); memory-efficient
attention (SDPA/flash) removes their 5*a*s/h attention-score term, which is left out here.
Llama-3 8B: 54h = 216 KiB per token per layer. fp32 training doubles it."""

ACT_CHECKPOINT_BYTES = 2
"""With gradient checkpointing (HF checkpoints every decoder layer), per token and layer only the
layer's 16-bit input (2*hidden bytes) is kept, plus one layer's full activations while it is
recomputed in backward."""

LOGITS_BYTES = 12
"""Per labelled token and vocabulary entry, at the end of forward / start of backward: the 16-bit logits
the model returns (2), the fp32 log-softmax that cross-entropy saves (4; the loss up-casts the logits
to fp32 first) and the fp32 gradient being formed in backward (4-8): 12 taken. Only the labelled
(answer) positions count: the trainer asks the model for logits there alone (``logits_to_keep``,
train/packing.py), a few tokens per example, not every token of the row."""

ANSWER_TOKENS = 4
"""Labelled tokens per training example when the split's were not counted (:class:`RowLengths`):
``launch.cost.tokencount.ANSWER_TOKENS``'s figure (``ANSWER:``, the letter, the end token)."""

INFERENCE_ACT_BYTES = 40
"""Per token, bytes of the largest activations a forward without autograd holds at once in one Llama
layer, in 16-bit: the layer's input and output (2h + 2h), q, k, v (2h + 4kv), the MLP's gate, up and
their product (6i), rounded: nothing is kept for backward, so one layer's worth is the peak. Used for
the kinds that only run the model forward (``few_shot``'s scoring, ``feature_head``'s features) as
``INFERENCE_ACT_BYTES x hidden`` (the MLP's 6i is about 16h in Llama's proportions); fp32 doubles it."""

LORA_DROPOUT_BYTES = 3
"""Per input feature of each adapted module when ``lora.dropout > 0``: peft applies a separate
dropout to each adapter's input, keeping a 16-bit copy (2) and a bool mask (1)."""

# --------------------------------------------------------------------------- constants: overhead and margin

OVERHEAD_GB = 1.5
"""Fixed per-GPU overhead: CUDA context and loaded kernels (0.5-1 GB with CUDA 12 lazy loading),
cuBLAS/cuDNN workspaces and allocator block rounding (~0.5 GB). Measured contexts on A100/H100
with torch 2.x are 0.5-0.9 GB; 1.5 leaves room for the rest."""

NCCL_OVERHEAD_GB = 0.5
"""Added when the job spans more than one GPU: NCCL communicator buffers and, under DeepSpeed,
its reduce / all-gather buckets."""

FIT_MARGIN = 0.10
"""A plan fits when its total is at most (1 - FIT_MARGIN) of the GPU's memory: 10% for allocator
fragmentation, memory other processes hold and the error of this estimate."""

OFFLOAD_HOST_FACTOR = 1.5
"""Host memory for ZeRO CPU offload is the offloaded states times this: DeepSpeed's
``additional_buffer_factor`` default (pinned staging buffers), from its own estimators."""

MAX_HOST_GB_PER_GPU = 256
"""Largest host memory per GPU an offload suggestion may ask for (a 2 TB node with 8 GPUs)."""

MAX_NODES = 32
"""Largest node count a "more GPUs" suggestion may propose."""

# --------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder that decide its memory.

    Parameters
    ----------
    hidden_size, num_layers, vocab_size, intermediate_size, num_heads, num_kv_heads:
        As in a Hugging Face ``config.json`` (``hidden_size``, ``num_hidden_layers``, ...).
    tie_embeddings:
        The lm_head shares the input embedding (``tie_word_embeddings``).
    source:
        Where the shape came from: the path of a ``config.json`` or ``builtin:<hub name>``.
    head_dim:
        Attention head size; 0: ``hidden_size // num_heads`` (Llama, Mistral).

    layout:
        How the layer's linear projections are laid out and named: ``llama`` (separate
        ``q/k/v/o_proj``, SwiGLU ``gate/up/down_proj``: Llama, Mistral, Qwen2/3, Gemma, OLMo 2),
        ``phi3`` (fused ``qkv_proj`` and ``gate_up_proj``) or ``gpt_neox`` (fused
        ``query_key_value``, ``dense``, a two-matrix GELU MLP ``dense_h_to_4h``/``dense_4h_to_h``).
    extra_params_per_layer:
        Parameters of one layer outside its linear weights: norms (and q/k norms), biases.
    final_norm_params:
        Parameters of the final norm (``hidden_size`` for RMSNorm, twice that for LayerNorm).

    Notes
    -----
    Dense decoders only: mixture-of-experts configs are not turned into shapes at all.
    """

    hidden_size: int
    num_layers: int
    vocab_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    tie_embeddings: bool
    source: str
    head_dim: int = 0
    layout: str = "llama"
    extra_params_per_layer: int | None = None
    final_norm_params: int | None = None

    @property
    def head_size(self) -> int:
        """Attention head size."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        """Output features of q_proj (input features of o_proj)."""
        return self.num_heads * self.head_size

    @property
    def kv_dim(self) -> int:
        """Output features of k_proj and of v_proj (grouped-query attention)."""
        return self.num_kv_heads * self.head_size

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear projection in one decoder layer, by module name."""
        h, i = self.hidden_size, self.intermediate_size
        if self.layout == "phi3":
            return {
                "qkv_proj": (h, self.q_dim + 2 * self.kv_dim),
                "o_proj": (self.q_dim, h),
                "gate_up_proj": (h, 2 * i),
                "down_proj": (i, h),
            }
        if self.layout == "gpt_neox":
            return {
                "query_key_value": (h, 3 * self.q_dim),
                "dense": (self.q_dim, h),
                "dense_h_to_4h": (h, i),
                "dense_4h_to_h": (i, h),
            }
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def gated_mlp(self) -> bool:
        """SwiGLU/GeGLU (three matrices, 8i bytes of activations) rather than a plain two-matrix MLP."""
        return self.layout != "gpt_neox"

    @property
    def linear_params_per_layer(self) -> int:
        """Weights of one layer's linear projections."""
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        """Input embedding (vocab x hidden); the lm_head is the same size."""
        return self.vocab_size * self.hidden_size

    @property
    def n_params(self) -> int:
        """Total parameters of the Llama-style model, each shared tensor counted once.

        Embedding (+ lm_head unless tied) + per layer (the linear projections, plus norms and biases:
        two RMSNorm weights for Llama) + the final norm. Llama-3 8B: 8,030,261,248.
        """
        extra = 2 * self.hidden_size if self.extra_params_per_layer is None else self.extra_params_per_layer
        final = self.hidden_size if self.final_norm_params is None else self.final_norm_params
        heads = self.embedding_params * (1 if self.tie_embeddings else 2)
        return heads + self.num_layers * (self.linear_params_per_layer + extra) + final

    @property
    def largest_layer_params(self) -> int:
        """Parameters of the largest single module, as DeepSpeed means it.

        DeepSpeed's ``estimate_zero3_model_states_mem_needs_all_live`` takes the maximum over
        modules of their own (non-recursive) parameters; for a Llama that is the embedding or
        the lm_head (vocab x hidden), else the biggest projection.
        """
        return max(self.embedding_params, *(a * b for a, b in self.linear_shapes().values()))


def shape_summary(shape: ModelShape) -> str:
    """One line: parameters, sizes and where the shape came from."""
    tie = "tied" if shape.tie_embeddings else "untied"
    return (
        f"{shape.n_params / 1e9:.2f}B params (hidden {shape.hidden_size}, {shape.num_layers} layers, "
        f"vocab {shape.vocab_size}, MLP {shape.intermediate_size}, {shape.num_heads} heads / "
        f"{shape.num_kv_heads} KV, {tie} embeddings; from {shape.source})"
    )


# (hidden, layers, vocab, intermediate, heads, kv heads, tied), copied from each model's
# config.json on the Hugging Face hub.
_LLAMA3_8B = (4096, 32, 128256, 14336, 32, 8, False)
_LLAMA3_70B = (8192, 80, 128256, 28672, 64, 8, False)
_LLAMA2_7B = (4096, 32, 32000, 11008, 32, 32, False)
_LLAMA2_13B = (5120, 40, 32000, 13824, 40, 40, False)
_LLAMA2_70B = (8192, 80, 32000, 28672, 64, 8, False)
_MISTRAL_7B = (4096, 32, 32000, 14336, 32, 8, False)

BUILTIN_SHAPES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "meta-llama/Meta-Llama-3-8B": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3.1-8B": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-70B": _LLAMA3_70B,
    "meta-llama/Meta-Llama-3-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Meta-Llama-3.1-70B": _LLAMA3_70B,
    "meta-llama/Meta-Llama-3.1-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.1-70B": _LLAMA3_70B,
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.2-1B": (2048, 16, 128256, 8192, 32, 8, True),
    "meta-llama/Llama-3.2-1B-Instruct": (2048, 16, 128256, 8192, 32, 8, True),
    "meta-llama/Llama-3.2-3B": (3072, 28, 128256, 8192, 24, 8, True),
    "meta-llama/Llama-3.2-3B-Instruct": (3072, 28, 128256, 8192, 24, 8, True),
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-13b-hf": _LLAMA2_13B,
    "meta-llama/Llama-2-13b-chat-hf": _LLAMA2_13B,
    "meta-llama/Llama-2-70b-hf": _LLAMA2_70B,
    "meta-llama/Llama-2-70b-chat-hf": _LLAMA2_70B,
    "mistralai/Mistral-7B-v0.1": _MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.1": _MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": _MISTRAL_7B,
}
"""Well-known models, by hub name (matched case-insensitively, with or without the organisation),
for when neither a local directory nor the Hugging Face cache has the config."""


# Per model_type: the layout of the linear projections, the default of tie_word_embeddings when
# config.json leaves it out (the config class's), and what a layer holds besides its linear weights.
# h: hidden, q: q_dim, kv: kv_dim, d: head_dim, i: intermediate. Counted from transformers' modules.
_ARCH: dict[str, tuple[str, bool, tp.Callable[..., int], tp.Callable[..., int]]] = {
    # model_type: (layout, tied by default, extra params per layer (h, q, kv, d, i), final norm (h))
    "llama": ("llama", False, lambda h, q, kv, d, i: 2 * h, lambda h: h),
    "mistral": ("llama", False, lambda h, q, kv, d, i: 2 * h, lambda h: h),
    "qwen2": ("llama", False, lambda h, q, kv, d, i: 2 * h + q + 2 * kv, lambda h: h),  # q, k, v biases
    "qwen3": ("llama", False, lambda h, q, kv, d, i: 2 * h + 2 * d, lambda h: h),  # q/k RMSNorm per head
    "olmo2": ("llama", False, lambda h, q, kv, d, i: 2 * h + q + kv, lambda h: h),  # q/k RMSNorm over all heads
    "gemma": ("llama", True, lambda h, q, kv, d, i: 2 * h, lambda h: h),
    "gemma2": ("llama", True, lambda h, q, kv, d, i: 4 * h, lambda h: h),  # pre/post norms around both blocks
    "gemma3_text": ("llama", True, lambda h, q, kv, d, i: 4 * h + 2 * d, lambda h: h),
    "phi3": ("phi3", False, lambda h, q, kv, d, i: 2 * h, lambda h: h),
    # two LayerNorms (weight and bias) per layer, biases on every linear layer, a LayerNorm at the end
    "gpt_neox": ("gpt_neox", False, lambda h, q, kv, d, i: 4 * h + 3 * q + h + i + h, lambda h: 2 * h),
}
TESTED_MODEL_TYPES = tuple(_ARCH)
"""model_types whose parameter count this module reproduces exactly (tests/test_architectures.py)."""


def _shape_from_config(cfg: tp.Any, source: str) -> ModelShape | None:
    """A :class:`ModelShape` from a parsed config.json; None when it lacks a dense decoder's sizes.

    Known ``model_type`` values (:data:`TESTED_MODEL_TYPES`) get their own layout, tie default,
    norms and biases; any other config with Llama's size keys is read as a Llama-style decoder.
    """
    if not isinstance(cfg, dict):
        return None
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]  # multimodal wrappers keep the language model's sizes here
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if isinstance(cfg.get(key), int) and cfg[key] > 1:
            return None  # mixture of experts: the dense Llama count would be several times too small
    model_type = cfg.get("model_type")
    layout, tied_default, extra, final = _ARCH.get(model_type, _ARCH["llama"])
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or 0) or hidden // heads
        inter = int(cfg["intermediate_size"])
        return ModelShape(
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            vocab_size=int(cfg["vocab_size"]),
            intermediate_size=inter,
            num_heads=heads,
            num_kv_heads=kv_heads,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", tied_default)),
            source=source,
            head_dim=int(cfg.get("head_dim") or 0),
            layout=layout,
            extra_params_per_layer=extra(hidden, heads * head_dim, kv_heads * head_dim, head_dim, inter),
            final_norm_params=final(hidden),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _read_config(path: Path) -> ModelShape | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _shape_from_config(raw, str(path))


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, as ``huggingface_hub`` resolves it."""
    return hub.hub_cache()


def _cached_config(repo_id: str) -> Path | None:
    """``config.json`` of ``repo_id`` in the hub cache: the ``refs/main`` snapshot, else the newest."""
    snap = hub.snapshot_dir(repo_id, hf_hub_cache())
    return snap / "config.json" if snap is not None else None


def model_shape(name_or_path: str) -> ModelShape | None:
    """The shape of a model, without touching the network.

    Parameters
    ----------
    name_or_path:
        A local directory (or its ``config.json``), or a Hugging Face hub name.

    Returns
    -------
    ModelShape or None
        From ``<path>/config.json`` for a local directory; else from the Hugging Face cache
        (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``:
        ``models--org--name/snapshots/*/config.json``); else from :data:`BUILTIN_SHAPES`;
        else None (unknown: the caller skips the memory check with a note). A config without
        the Llama-style sizes also gives None.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return _read_config(p / "config.json") if (p / "config.json").is_file() else None
    if p.is_file():
        return _read_config(p) if p.name.endswith(".json") else None
    if not hub.looks_like_hub_id(name_or_path):
        return None  # a path that does not exist
    cached = _cached_config(name_or_path)
    if cached is not None:
        shape = _read_config(cached)
        if shape is not None:
            return shape
    key = name_or_path.lower()
    for name, sizes in BUILTIN_SHAPES.items():
        if key in (name.lower(), name.split("/")[-1].lower()):
            return ModelShape(*sizes, source=f"builtin:{name}")
    return None


# --------------------------------------------------------------------------- DeepSpeed configs


@dataclass(frozen=True)
class ZeroSettings:
    """What a DeepSpeed JSON says about memory."""

    stage: int
    offload_optimizer: bool
    offload_params: bool
    path: Path


def _resolve(path: str, repo_root: Path | None) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (repo_root, Path.cwd(), REPO_ROOT):
        if base is not None and (Path(base) / p).is_file():
            return Path(base) / p
    return (Path(repo_root) if repo_root is not None else Path.cwd()) / p


def read_zero(path: str, repo_root: Path | None = None) -> ZeroSettings:
    """ZeRO stage and offloads of a DeepSpeed JSON.

    Parameters
    ----------
    path:
        ``method.deepspeed``; relative paths are resolved against ``repo_root`` (then the
        current directory, then this repository).

    Raises
    ------
    ValueError
        When the file cannot be read or is not JSON (config validation checks it exists).
    """
    p = _resolve(path, repo_root)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"deepspeed config {path!r} cannot be read ({p}): {exc}") from None
    zero = raw.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    stage = int(stage) if isinstance(stage, (int, float)) or str(stage).isdigit() else 0

    def on(key: str) -> bool:
        dev = (zero.get(key) or {}).get("device", "none")
        return str(dev).lower() in ("cpu", "nvme")

    # DeepSpeed offloads the optimizer from stage 1 and parameters only under stage 3.
    return ZeroSettings(stage, on("offload_optimizer") and stage >= 1, on("offload_param") and stage == 3, p)


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of one method, in GB (GiB), by component.

    ``world_size`` is nodes x gpus_per_node. ``zero_stage`` is None without DeepSpeed.
    ``offloaded_gb`` is host memory per GPU taken by ZeRO CPU offload. The last fields keep what
    :func:`fit_problems` needs to re-estimate alternatives.
    """

    method: str
    kind: str
    zero_stage: int | None
    offload_optimizer: bool
    offload_params: bool
    world_size: int
    n_params: int
    trainable_params: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    offloaded_gb: float = 0.0
    variant: str = ""
    """The method's kind with its LoRA options (``lora+dora``...; :attr:`launch.spec.config.MethodConfig.variant`)."""
    shape: ModelShape | None = field(default=None, repr=False, compare=False)
    max_seq_len: int = field(default=0, repr=False, compare=False)
    repo_root: Path | None = field(default=None, repr=False, compare=False)
    lengths: RowLengths | None = field(default=None, repr=False, compare=False)
    scales: tp.Mapping[str, float] | None = field(default=None, repr=False, compare=False)
    scale: float = 1.0
    """The site's calibration factor applied to this estimate (1: none; :func:`estimate`'s ``scales``)."""

    @property
    def own_gb(self) -> float:
        """What the method itself holds, without the fixed CUDA/NCCL overhead: what a job's measured peak
        above its memory before loading is compared with."""
        return self.total_gb - self.overhead_gb

    @property
    def model_states_gb(self) -> float:
        """Weights + gradients + optimizer states, per GPU."""
        return self.weights_gb + self.grads_gb + self.optimizer_gb

    @property
    def total_gb(self) -> float:
        """Everything, per GPU."""
        return self.model_states_gb + self.activations_gb + self.overhead_gb

    @property
    def setup(self) -> str:
        """How the model is spread: ``ZeRO-3 with CPU offload (optimizer, params)``, ``LoRA``..."""
        options = f", {self.variant}" if self.variant not in ("", self.kind) else ""  # lora+dora, lora(init=pissa)
        if self.kind == "lora":
            return f"LoRA{options} ({_count(self.trainable_params)} trainable)"
        if self.kind == "qlora":
            return f"QLoRA, 4-bit base{options} ({_count(self.trainable_params)} trainable)"
        if self.kind == "ia3":
            return f"(IA)^3 ({_count(self.trainable_params)} trainable)"
        if self.kind in FORWARD_ONLY_SETUP:
            return FORWARD_ONLY_SETUP[self.kind]
        if self.kind == "prompt_tuning":
            return f"soft prompt ({_count(self.trainable_params)} trainable)"
        if self.zero_stage is None:
            return "no DeepSpeed (DDP)" if self.world_size > 1 else "no DeepSpeed"
        off = [n for n, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params)) if on]
        return f"ZeRO-{self.zero_stage}" + (f" with CPU offload ({', '.join(off)})" if off else "")

    def line(self) -> str:
        """One human line.

        Example: ``full_sft: 15.3 GB/GPU (weights 1.9, grads 1.9, optimizer 5.6, activations 3.9,
        overhead 2.0) on 16 GPUs, ZeRO-3``.
        """
        gpus = f"{self.world_size} GPU" + ("s" if self.world_size != 1 else "")
        host = f"; {self.offloaded_gb:.1f} GB/GPU of host memory" if self.offloaded_gb else ""
        return (
            f"{self.method}: {self.total_gb:.1f} GB/GPU (weights {self.weights_gb:.1f}, grads {self.grads_gb:.1f}, "
            f"optimizer {self.optimizer_gb:.1f}, activations {self.activations_gb:.1f}, overhead "
            f"{self.overhead_gb:.1f}) on {gpus}, {self.setup}{host}"
        )


FORWARD_ONLY_SETUP = {
    "few_shot": "few-shot: the base model scoring k examples + a question in the evaluation job (its own job "
    "loads no model)",
    "feature_head": "feature head: forward passes of the frozen model (all hidden states kept), a head of hidden x 4",
}
"""How the kinds that train no model weights use the GPU (:attr:`MemoryEstimate.setup`)."""


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _world(method: MethodConfig) -> int:
    r = method.resources
    return max(r.nodes, 1) * max(r.gpus_per_node, 1)


def lora_params(shape: ModelShape, lora: tp.Any) -> tuple[int, int]:
    """(adapter parameters, input features of all adapted modules per layer) for LoRA settings.

    ``r * (in + out)`` per adapted linear per layer. ``all-linear`` adapts every linear layer of
    the decoder (:meth:`ModelShape.linear_shapes`, by the architecture's own names), as peft does.
    Names are matched like peft matches ``target_modules`` (the module name's last component);
    ``lm_head`` and ``embed_tokens`` are adapted once, not per layer. Other names (no such module in
    this architecture: the training job refuses them) add nothing.
    """
    linears = shape.linear_shapes()
    params = inputs = 0
    targets = list(linears) if lora.target_modules == "all-linear" else lora.target_modules
    for name in dict.fromkeys(targets):
        name = name.split(".")[-1]
        if name in linears:
            fan_in, fan_out = linears[name]
            params += shape.num_layers * lora.r * (fan_in + fan_out)
            inputs += fan_in
        elif name in ("lm_head", "embed_tokens"):
            params += lora.r * (shape.hidden_size + shape.vocab_size)
    return params, inputs


def dora_params(shape: ModelShape, lora: tp.Any) -> int:
    """DoRA's magnitudes: one trained number per output feature of every adapted linear (0 without DoRA)."""
    if not getattr(lora, "use_dora", False):
        return 0
    linears = shape.linear_shapes()
    targets = list(linears) if lora.target_modules == "all-linear" else lora.target_modules
    outs = [linears[n.split(".")[-1]][1] for n in dict.fromkeys(targets) if n.split(".")[-1] in linears]
    return shape.num_layers * sum(outs)


def dora_transient_bytes(shape: ModelShape, lora: tp.Any) -> int:
    """Bytes DoRA holds for a moment in each adapted layer's forward, the largest counted: peft builds the
    fp32 weight (dequantised for QLoRA), ``B A`` and their sum to take the norm (:data:`DORA_WEIGHT_COPIES`)."""
    if not getattr(lora, "use_dora", False):
        return 0
    linears = shape.linear_shapes()
    targets = list(linears) if lora.target_modules == "all-linear" else lora.target_modules
    sizes = [linears[n.split(".")[-1]] for n in dict.fromkeys(targets) if n.split(".")[-1] in linears]
    return DORA_WEIGHT_COPIES * 4 * max((i * o for i, o in sizes), default=0)


DORA_WEIGHT_COPIES = 3
"""fp32 copies of one adapted weight during DoRA's norm (peft ``DoraLinearLayer.forward``): the base weight
(dequantised for QLoRA), ``B A``, and their scaled sum."""

IA3_AUTO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llama": (("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    "gpt_neox": (("query_key_value", "dense_4h_to_h"), ("dense_4h_to_h",)),
}
"""(target, feed-forward) modules of ``ia3.target_modules: auto`` per :attr:`ModelShape.layout`: peft 0.21's
table for Llama and Mistral (Qwen2/3 take ``q_proj`` for ``k_proj``: the same count with grouped-query
attention off) and GPT-NeoX. Phi-3 has no entry in peft (the job asks for a list); counted as every linear."""


def ia3_params(shape: ModelShape, settings: tp.Any) -> int:
    """(IA)^3's vectors: per layer, the output features of each target module and the input features of each
    feed-forward one (peft's ``ia3_l`` scales a feed-forward layer's input, the others' output)."""
    linears = shape.linear_shapes()
    if settings.target_modules == "auto":
        targets, feedforward = IA3_AUTO.get(shape.layout, (tuple(linears), ()))
    else:
        targets, feedforward = tuple(settings.target_modules), tuple(settings.feedforward_modules)
    n = 0
    for name in dict.fromkeys(t.split(".")[-1] for t in targets):
        if name in linears:
            fan_in, fan_out = linears[name]
            n += fan_in if name in {f.split(".")[-1] for f in feedforward} else fan_out
    return shape.num_layers * n


def prompt_params(shape: ModelShape, settings: tp.Any) -> int:
    """Trainable parameters of a soft prompt: the virtual tokens' embeddings, and P-tuning's MLP
    (hidden -> encoder -> encoder -> hidden, with biases: peft's ``PromptEncoder``)."""
    h, n = shape.hidden_size, settings.num_virtual_tokens
    if settings.style != "p_tuning":
        return n * h
    e = settings.encoder_hidden_size
    return n * h + (h * e + e) + (e * e + e) + (e * h + h)


@dataclass(frozen=True)
class RowLengths:
    """Token lengths of the examples a job steps through: what sizes its activations.

    Built from the split's token counts (``launch.cost.costcheck.row_lengths`` of ``launch.cost.tokencount``'s
    :class:`~launch.cost.tokencount.SplitTokens`), each example cut at ``model.max_seq_len`` as the jobs cut it.
    Without them the estimate takes every example at ``max_seq_len``: a safe bound, several times the
    peak on short questions (CyberMetric's average 112 tokens under a ``max_seq_len`` of 1024).
    """

    examples: int
    mean: float
    """Mean tokens per example."""
    sd: float
    """Their standard deviation."""
    longest: float
    """The longest example (of those counted: a large split is counted on a sample)."""
    answer_tokens: float = ANSWER_TOKENS
    """Labelled tokens per example (where the training loss computes logits)."""


def peak_rows(
    lengths: RowLengths | None, rows: int, max_seq_len: int, packed: bool, extra_per_row: int = 0
) -> tuple[int, int]:
    """Tokens in the largest micro-batch of ``rows`` examples, and its labelled tokens.

    ``packed`` (examples end to end in one row, no padding): the largest of ``n`` micro-batch sums,
    ``rows x mean + z x sd x sqrt(rows)`` with ``z = sqrt(2 ln n)`` (the expected largest of ``n``
    near-normal sums; 2.4 for 20 micro-batches, 3.0 for 100), at most ``rows`` of the longest example.
    Padded (one row per example, padded to the longest in the micro-batch): the micro-batch that holds
    the longest example, ``rows x longest``. ``extra_per_row``: tokens put before every row (prompt
    tuning's virtual tokens). Without ``lengths``: ``rows x max_seq_len``.
    """
    rows = max(int(rows), 1)
    if lengths is None or lengths.examples <= 0:
        return rows * (max_seq_len + extra_per_row), rows * ANSWER_TOKENS
    longest = min(lengths.longest, max_seq_len)
    if packed:
        n = max(lengths.examples / rows, 2.0)
        per_batch = rows * lengths.mean + math.sqrt(2 * math.log(n)) * lengths.sd * math.sqrt(rows)
        tokens = min(per_batch, rows * longest)
    else:
        tokens = rows * longest
    return math.ceil(tokens + rows * extra_per_row), math.ceil(rows * lengths.answer_tokens)


def forward_bytes(shape: ModelShape, rows: int, tokens: int, fp32: bool, keep_hidden: bool = False) -> int:
    """Bytes a forward without autograd holds at its peak for ``rows`` rows of ``tokens`` tokens in all: one
    layer's activations (:data:`INFERENCE_ACT_BYTES`), the K/V cache of every layer (the evaluation's
    shared-prefix cache extends it to every row), the last position's logits per row, and with
    ``keep_hidden`` every layer's hidden states (``output_hidden_states``)."""
    width = 4 if fp32 else 2
    layer = tokens * INFERENCE_ACT_BYTES * shape.hidden_size * width // 2
    kv = tokens * shape.num_layers * 2 * shape.kv_dim * width
    hidden = tokens * (shape.num_layers + 1) * shape.hidden_size * width if keep_hidden else 0
    return layer + kv + hidden + rows * shape.vocab_size * 4


def activation_bytes(
    shape: ModelShape,
    tokens: int,
    gradient_checkpointing: bool,
    fp32: bool = False,
    lora_dropout_inputs: int = 0,
    logit_tokens: int | None = None,
) -> int:
    """Bytes autograd keeps for backward at the peak (end of forward), per GPU.

    Parameters
    ----------
    tokens:
        Tokens in the micro-batch (:func:`peak_rows`: its largest).
    lora_dropout_inputs:
        Sum of in_features of the modules whose adapter input gets its own dropout copy
        (LoRA/QLoRA with ``lora.dropout > 0``), per layer.
    logit_tokens:
        Positions whose logits are computed (the labelled answer tokens); None: every token.

    Notes
    -----
    Per token: layers x (24h + 8kv + 8i) bytes without checkpointing, or layers x 2h plus one
    layer's full activations with it; plus ``LOGITS_BYTES`` x vocab per logit position.
    ``fp32`` doubles the per-layer terms: fp32 training, and QLoRA, whose residual stream is fp32
    after ``prepare_model_for_kbit_training`` (fp32 embeddings and norms, and ``Linear4bit`` casts
    its output back to its input's dtype), with an fp32 lm_head and logits.
    """
    scale = 2 if fp32 else 1
    per_layer = (
        scale
        * (
            ACT_HIDDEN_BYTES * shape.hidden_size
            + ACT_KV_BYTES * shape.kv_dim
            + ACT_MLP_BYTES * shape.intermediate_size // (1 if shape.gated_mlp else 2)
        )
        + LORA_DROPOUT_BYTES * lora_dropout_inputs
    )
    if gradient_checkpointing:
        layers = shape.num_layers * scale * ACT_CHECKPOINT_BYTES * shape.hidden_size + per_layer
    else:
        layers = shape.num_layers * per_layer
    logits = (LOGITS_BYTES + (4 if fp32 else 0)) * shape.vocab_size
    return tokens * layers + (tokens if logit_tokens is None else logit_tokens) * logits


def calibrated_for(method: MethodConfig, table: tp.Mapping[str, T]) -> T | None:
    """``method``'s entry in a per-kind calibration ``table`` (:func:`estimate`'s ``scales``, or
    ``launch.cost.costcheck.memory_scales``' entries): its kind's; for ``multi_task`` without runs of its own, that
    of the kind it adapts; None without either."""
    if method.kind in table:
        return table[method.kind]
    return table.get(method.adapts) if method.kind == "multi_task" else None


def estimate(
    shape: ModelShape,
    method: MethodConfig,
    max_seq_len: int,
    repo_root: Path | None = None,
    lengths: RowLengths | None = None,
    scales: tp.Mapping[str, float] | None = None,
) -> MemoryEstimate:
    """Per-GPU memory of training ``method`` on a model of ``shape``.

    Parameters
    ----------
    shape:
        From :func:`model_shape`.
    method:
        The method: kind, precision, micro_batch_size, gradient_checkpointing, lora, deepspeed,
        resources (world size = nodes x gpus_per_node).
    max_seq_len:
        ``cfg.model.max_seq_len``.
    repo_root:
        Where relative ``method.deepspeed`` paths are resolved (default: the current directory,
        then this repository).
    lengths:
        The training split's example lengths (:class:`RowLengths`): the activations are those of its
        largest micro-batch (:func:`peak_rows`). None: every example at ``max_seq_len``.
    scales:
        Method kind -> the site's calibration of this estimate (measured peak / estimate of the
        finished runs, ``launch.cost.calibration.Calibration.memory_scale``), applied to every component but
        the fixed overhead. None or a kind not in it: 1.

    Returns
    -------
    MemoryEstimate

    Notes
    -----
    full_sft, mixed precision (bf16/fp16/auto): 2 B weights + 2 B grads + 12 B optimizer per
    parameter; fp32: 4 + 4 + 8. ZeRO partitions over the world size: stage 1 the optimizer,
    2 also the grads, 3 also the weights; ZeRO-3 also holds the largest module gathered
    (weights and gradient, as DeepSpeed's estimator counts it). offload_optimizer moves the
    optimizer (and, from stage 2, the gradient partition) to host memory; offload_param (stage 3)
    the weight partition. Without DeepSpeed on several GPUs, DDP adds a gradient copy.
    Without DeepSpeed in mixed precision the weights are fp32 masters under autocast:
    4 + 4 + 8 B plus :data:`AMP_CAST_BYTES` for autocast's 16-bit copies.

    lora: frozen 16-bit base (2 B/param; 4 in fp32) + adapters at 16 B/param (DoRA's magnitudes among them,
    :func:`dora_params`, and its weight copies while it takes a layer's norm, :func:`dora_transient_bytes`,
    among the activations; rsLoRA and the ``init`` options change no size). ia3: LoRA's frozen base with
    :func:`ia3_params` trained. qlora: quantised
    linears at :data:`NF4_BYTES`, the other parameters at 4 B (fp32), adapters as LoRA, activations
    at fp32 size (see :func:`activation_bytes`). LoRA and QLoRA replicate everything on every GPU
    (no ZeRO).

    prompt_tuning: as LoRA with the soft prompt (:func:`prompt_params`) as the trainable parameters,
    activations over each row + the virtual tokens (the gradient reaches the input, through
    every layer). multi_task: the estimate of what it adapts (``full_sft`` or ``lora``). few_shot and
    feature_head run the model forward only (:func:`forward_bytes`): few-shot's figure is its scoring
    in the evaluation job (``micro_batch_size`` rows of k solved examples and a question: set it to
    ``eval.batch_size``), the feature head's its extraction (``feature_head.extract_batch_size`` padded
    rows) plus a head of hidden x 4 (+ 4) parameters.
    """
    world = _world(method)
    P, L = shape.n_params, shape.largest_layer_params
    fp32 = method.precision == "fp32"
    wb, gb, ob = (
        (FP32_WEIGHT_BYTES, FP32_GRAD_BYTES, FP32_OPTIMIZER_BYTES)
        if fp32
        else (MIXED_WEIGHT_BYTES, MIXED_GRAD_BYTES, MIXED_OPTIMIZER_BYTES)
    )
    stage: int | None = None
    off_opt = off_par = False
    host = 0.0
    dropout_inputs = transient = extra = 0
    if method.kind == "full_sft":
        trainable = P
        if method.deepspeed:
            z = read_zero(method.deepspeed, repo_root)
            stage, off_opt, off_par = z.stage, z.offload_optimizer, z.offload_params
        elif not fp32:
            wb, gb, ob = FP32_WEIGHT_BYTES + AMP_CAST_BYTES, FP32_GRAD_BYTES, FP32_OPTIMIZER_BYTES
        s = stage or 0
        weights = wb * P / (world if s >= 3 else 1)
        grads = gb * P / (world if s >= 2 else 1)
        optimizer = ob * P / (world if s >= 1 else 1)
        if stage is None and world > 1 and DDP_BUCKET_COPY:
            grads += gb * P
        if off_opt:
            # The optimizer states and the fp32 gradient partition live in host memory.
            host += (ob + 4) * P / world
            optimizer = 0.0
            if s >= 2:
                grads = 0.0
        if off_par:
            host += wb * P / world
            weights = 0.0
        if s >= 3:
            # The largest module gathered whole for forward/backward, and its full gradient
            # before the reduce-scatter (DeepSpeed: largest_layer_memory = 4 * largest_layer_params).
            weights += wb * L
            grads += gb * L
        host *= OFFLOAD_HOST_FACTOR
    elif method.kind == "multi_task":  # what it adapts, over its mixture's examples (same micro-batches)
        # Its own runs calibrate it when there are some, else those of what it adapts.
        own = calibrated_for(method, scales or {})
        adapted = {**(scales or {}), **({method.adapts: own} if own is not None else {})}
        same = estimate(
            shape, dataclasses.replace(method, kind=method.adapts), max_seq_len, repo_root, lengths, adapted
        )
        return dataclasses.replace(same, method=method.name or method.kind, scales=scales)
    elif method.kind in ("few_shot", "feature_head"):
        trainable = len(LETTERS) * (shape.hidden_size + 1) if method.kind == "feature_head" else 0
        weights = (FP32_WEIGHT_BYTES if fp32 else MIXED_WEIGHT_BYTES) * P + 4 * trainable
        grads, optimizer = 4 * trainable, 8 * trainable
        head = method.kind == "feature_head"
        rows = method.feature_head.extract_batch_size if head else method.micro_batch_size
        scored = lengths
        if not head and lengths is not None:  # k solved examples before the question, in one context
            k = method.few_shot.k
            scored = dataclasses.replace(
                lengths, longest=k * lengths.mean + lengths.longest, mean=(k + 1) * lengths.mean
            )
        tokens, _ = peak_rows(scored, rows, max_seq_len, packed=False)
        forward = forward_bytes(shape, rows, tokens, fp32, keep_hidden=head)
    elif method.kind == "prompt_tuning":  # the frozen base as LoRA's, the virtual tokens in front of every row
        trainable = prompt_params(shape, method.prompt_tuning)
        weights = (FP32_WEIGHT_BYTES if fp32 else MIXED_WEIGHT_BYTES) * P + 4 * trainable
        grads, optimizer = 4 * trainable, (ADAPTER_BYTES - 8) * trainable
        extra = method.prompt_tuning.num_virtual_tokens
    elif method.kind in ("lora", "qlora", "ia3"):
        if method.kind == "ia3":  # vectors in a few layers: LoRA's frozen base, almost nothing trained
            trainable = ia3_params(shape, method.ia3)
        else:
            trainable, lora_inputs = lora_params(shape, method.lora)
            trainable += dora_params(shape, method.lora)
            transient = dora_transient_bytes(shape, method.lora)
            if method.lora.dropout > 0:
                dropout_inputs = lora_inputs
        if method.kind != "qlora":
            base = (FP32_WEIGHT_BYTES if fp32 else MIXED_WEIGHT_BYTES) * P
        else:
            quantised = shape.num_layers * shape.linear_params_per_layer
            base = NF4_BYTES * quantised + QLORA_UNQUANTISED_BYTES * (P - quantised)
        weights = base + 4 * trainable
        grads = 4 * trainable
        optimizer = (ADAPTER_BYTES - 8) * trainable
    else:
        raise ValueError(f"unknown method kind {method.kind!r}; expected one of {', '.join(METHOD_KINDS)}")
    if method.kind in ("few_shot", "feature_head"):
        act = forward
    else:
        tokens, labelled = peak_rows(lengths, method.micro_batch_size, max_seq_len, method.batching == "packed", extra)
        act = activation_bytes(
            shape,
            tokens,
            method.gradient_checkpointing,
            fp32 or method.kind == "qlora",
            dropout_inputs,
            labelled,
        )
        act += transient  # DoRA: one layer's weight copies during its norm
    f = float(calibrated_for(method, scales or {}) or 1.0)
    weights, grads, optimizer, act = weights * f, grads * f, optimizer * f, act * f
    return MemoryEstimate(
        method=method.name or method.kind,
        kind=method.kind,
        variant=method.variant,
        zero_stage=stage,
        offload_optimizer=off_opt,
        offload_params=off_par,
        world_size=world,
        n_params=P,
        trainable_params=trainable,
        weights_gb=weights / GB,
        grads_gb=grads / GB,
        optimizer_gb=optimizer / GB,
        activations_gb=act / GB,
        overhead_gb=OVERHEAD_GB + (NCCL_OVERHEAD_GB if world > 1 else 0.0),
        offloaded_gb=host / GB,
        shape=shape,
        max_seq_len=max_seq_len,
        repo_root=repo_root,
        lengths=lengths,
        scales=scales,
        scale=f,
    )


# --------------------------------------------------------------------------- fit check


def usable_gb(gpu_mem_gb: float) -> float:
    """GPU memory a plan may use: the GPU's memory minus the :data:`FIT_MARGIN` safety margin."""
    return gpu_mem_gb * (1 - FIT_MARGIN)


def _fits(est: MemoryEstimate, gpu_mem_gb: float, method: MethodConfig) -> tuple[bool, str]:
    """(fits, extra advice): also checks host memory for offload against resources.mem_gb_per_gpu."""
    if est.total_gb > usable_gb(gpu_mem_gb):
        return False, ""
    if est.offloaded_gb > method.resources.mem_gb_per_gpu:
        need = int(est.offloaded_gb) + 1
        if need > MAX_HOST_GB_PER_GPU:
            return False, ""
        return True, f", with resources.mem_gb_per_gpu: {need} for the offloaded states"
    return True, ""


def _ds_configs(root: Path) -> list[tuple[str, ZeroSettings]]:
    """Shipped DeepSpeed configs, least memory-saving first (stage, then offloads)."""
    out = []
    for p in sorted((root / "ds_configs").glob("*.json")):
        try:
            z = read_zero(str(p))
        except ValueError:
            continue
        out.append((f"ds_configs/{p.name}", z))
    return sorted(out, key=lambda t: (t[1].offload_optimizer or t[1].offload_params, t[1].stage, t[1].offload_params))


def _node_limit(max_nodes: int | None) -> int:
    """The most nodes a suggestion may use: the site's ``max_nodes``, never above :data:`MAX_NODES`."""
    return min(MAX_NODES, max_nodes or MAX_NODES)


def _layouts(nodes: int, gpus: int, gpus_max: int, max_nodes: int | None = None) -> list[tuple[int, int]]:
    """Bigger (nodes, gpus_per_node) layouts, fewest GPUs first, up to ``max_nodes`` (else :data:`MAX_NODES`)."""
    out = set()
    for g in range(gpus + 1, gpus_max + 1):
        out.add((nodes, g))
    for n in range(nodes + 1, _node_limit(max_nodes) + 1):
        out.add((n, gpus_max))
    return sorted(out, key=lambda t: (t[0] * t[1], t[0]))


def fitting_alternatives(
    est: MemoryEstimate,
    gpu_mem_gb: float,
    method: MethodConfig,
    gpus_per_node_max: int | None = None,
    max_nodes: int | None = None,
) -> list[tuple[str, MemoryEstimate]]:
    """Changes to ``method`` that would fit ``gpu_mem_gb``, each with its re-estimate.

    Tried one at a time, least disruptive first: gradient checkpointing, a smaller micro batch
    (same global batch), each shipped DeepSpeed config on the same GPUs (the lightest
    non-offload one and the lightest offload one that fit), more GPUs under ZeRO (same GPUs per
    node, or up to ``gpus_per_node_max``, at most ``max_nodes`` or :data:`MAX_NODES` nodes), ``kind: lora``,
    ``kind: qlora`` on one GPU. If none fits alone, each structural change is tried again with
    gradient checkpointing on and the largest micro batch that fits.

    Returns
    -------
    list of (description, estimate)
        Only changes whose estimate fits (offload ones also within :data:`MAX_HOST_GB_PER_GPU`).
    """
    shape = est.shape
    if shape is None:
        return []
    root = Path(est.repo_root) if est.repo_root is not None else REPO_ROOT
    r = method.resources
    g_max = max(gpus_per_node_max or r.gpus_per_node, r.gpus_per_node, 1)

    def redo(m: MethodConfig) -> MemoryEstimate:
        return estimate(shape, m, est.max_seq_len, est.repo_root, est.lengths, est.scales)

    def with_res(m: MethodConfig, **kw: int) -> MethodConfig:
        return dataclasses.replace(m, resources=dataclasses.replace(m.resources, **kw))

    def smaller_batches(m: MethodConfig) -> tp.Iterator[tuple[str, MethodConfig]]:
        mbs = m.micro_batch_size // 2
        while mbs >= 1:
            accum = max(1, round(m.micro_batch_size * m.grad_accum_steps / mbs))
            yield (
                f"micro_batch_size: {mbs} with grad_accum_steps: {accum} (same global batch)",
                dataclasses.replace(m, micro_batch_size=mbs, grad_accum_steps=accum),
            )
            mbs //= 2

    found: list[tuple[str, MemoryEstimate]] = []

    def first_fit(
        cands: tp.Iterable[tuple[str, MethodConfig]], describe: tp.Callable[[str, MemoryEstimate], str]
    ) -> bool:
        for text, m in cands:
            e = redo(m)
            ok, extra = _fits(e, gpu_mem_gb, m)
            if ok:
                found.append((describe(text, e) + extra, e))
                return True
        return False

    def gb(text: str, e: MemoryEstimate) -> str:
        return f"{text} ({e.total_gb:.1f} GB)"

    # --- lighter training of the same plan
    if not method.gradient_checkpointing:
        first_fit([("gradient_checkpointing: true", dataclasses.replace(method, gradient_checkpointing=True))], gb)
    first_fit(smaller_batches(method), gb)

    # --- structural changes: each a list of candidates, the first that fits is kept
    structural: list[tuple[list[tuple[str, MethodConfig]], tp.Callable[[str, MemoryEstimate], str]]] = []
    world = _world(method)
    where = f"the same {world} GPU" + ("s" if world != 1 else "")
    if method.kind == "full_sft":
        current = read_zero(method.deepspeed, est.repo_root) if method.deepspeed else None
        configs = [
            (p, z)
            for p, z in _ds_configs(root)
            if current is None
            or (z.stage, z.offload_optimizer, z.offload_params)
            != (current.stage, current.offload_optimizer, current.offload_params)
        ]
        for offload in (False, True):
            cands = [
                (
                    f"deepspeed: {p} (ZeRO-{z.stage}{' with CPU offload' if offload else ''} on {where}",
                    dataclasses.replace(method, deepspeed=p),
                )
                for p, z in configs
                if (z.offload_optimizer or z.offload_params) == offload
                and (current is None or z.stage > current.stage or (z.stage == current.stage and offload))
            ]
            structural.append((cands, lambda t, e: f"{t}, {e.total_gb:.1f} GB)"))
        # More GPUs help only when ZeRO partitions something: the current config, else zero3.
        ds = method.deepspeed if current is not None and current.stage >= 1 else None
        label = ""
        if ds is None:
            z3 = [p for p, z in _ds_configs(root) if z.stage == 3 and not (z.offload_optimizer or z.offload_params)]
            ds, label = (z3[0], f"deepspeed: {z3[0]} and ") if z3 else (None, "")
        if ds is not None:
            cands = [
                (
                    f"{label}more GPUs: {n} node{'s' if n > 1 else ''} x {g}",
                    with_res(dataclasses.replace(method, deepspeed=ds), nodes=n, gpus_per_node=g),
                )
                for n, g in _layouts(max(r.nodes, 1), max(r.gpus_per_node, 1), g_max, max_nodes)
            ]
            structural.append((cands, lambda t, e: f"{t} ({e.world_size} GPUs, {e.total_gb:.1f} GB)"))
    if method.kind == "full_sft":
        structural.append(
            (
                [
                    (
                        "kind: lora" + (", no deepspeed" if method.deepspeed else ""),
                        dataclasses.replace(method, kind="lora", deepspeed=None),
                    )
                ],
                gb,
            )
        )
    if method.kind in ("full_sft", "lora"):
        q = with_res(dataclasses.replace(method, kind="qlora", deepspeed=None), nodes=1, gpus_per_node=1)
        structural.append(([("kind: qlora on 1 GPU" + (", no deepspeed" if method.deepspeed else ""), q)], gb))

    failed = []
    for cands, describe in structural:
        if not first_fit(cands, describe):
            failed.append((cands, describe))
    if not found:
        # Nothing fits alone: combine each structural change with checkpointing and a smaller batch.
        for cands, describe in failed:
            for text, m in cands:
                light = dataclasses.replace(m, gradient_checkpointing=True)
                tries = [("", light)] + [(f", {t}", b) for t, b in smaller_batches(light)]
                ckpt = "" if method.gradient_checkpointing else ", gradient_checkpointing: true"
                if first_fit(((f"{text}{ckpt}{t2}", m2) for t2, m2 in tries), describe):
                    break
    return found


def fit_problems(
    est: MemoryEstimate,
    gpu_mem_gb: float,
    method: MethodConfig,
    gpus_per_node_max: int | None = None,
    max_nodes: int | None = None,
) -> list[str]:
    """Whether the estimate fits one GPU, as problem lines in the project's format.

    Parameters
    ----------
    est:
        From :func:`estimate` for ``method``.
    gpu_mem_gb:
        Memory of one GPU (``SlurmProfile.gpu_mem_gb``).
    method:
        The method estimated; its name labels the problem and alternatives are derived from it.
    gpus_per_node_max:
        GPUs in one node of the site (``SlurmProfile.gpus_per_node``), for "more GPUs" fixes;
        None: keep the method's gpus_per_node and add nodes.
    max_nodes:
        The most nodes a job may use at the site (``SlurmProfile.max_nodes``); None: :data:`MAX_NODES`.

    Returns
    -------
    list of str
        Empty when ``est.total_gb`` is at most ``gpu_mem_gb`` minus the :data:`FIT_MARGIN`
        margin (or the method runs on CPU); else one line
        ``methods.<name>.resources: does not fit in GPU memory (needs X GB per GPU of Y GB; ...)
        -> <fixes that would fit, with their figures>``, or a note that nothing tried fits.
    """
    if method.resources.gpus_per_node < 1:
        return []
    limit = usable_gb(gpu_mem_gb)
    if est.total_gb <= limit:
        return []
    gpus = f"{est.world_size} GPU" + ("s" if est.world_size != 1 else "")
    numbers = (
        f"needs {est.total_gb:.1f} GB per GPU of {gpu_mem_gb:g} GB, {limit:.1f} usable with a "
        f"{FIT_MARGIN:.0%} margin; weights {est.weights_gb:.1f}, grads {est.grads_gb:.1f}, optimizer "
        f"{est.optimizer_gb:.1f}, activations {est.activations_gb:.1f}, overhead {est.overhead_gb:.1f} "
        f"on {gpus}, {est.setup}"
    )
    found = fitting_alternatives(est, gpu_mem_gb, method, gpus_per_node_max, max_nodes)
    if found:
        fix = "would fit: " + "; or ".join(text for text, _ in found)
    elif est.shape is None:
        fix = (
            "use more GPUs with DeepSpeed ZeRO-3, gradient_checkpointing: true, a smaller micro_batch_size, "
            "or kind: qlora"
        )
    else:
        fix = (
            f"nothing tried fits on {gpu_mem_gb:g} GB GPUs (ZeRO-3, CPU offload, up to {_node_limit(max_nodes)} nodes, "
            "LoRA, QLoRA, gradient checkpointing, micro_batch_size 1): use GPUs with more memory or a smaller model"
        )
    return [f"methods.{method.name or method.kind}.resources: does not fit in GPU memory ({numbers}) -> {fix}"]


def checkpointing_advice(est: MemoryEstimate, gpu_mem_gb: float, method: MethodConfig) -> str | None:
    """A note when ``method`` turns gradient checkpointing on although its plan fits without it.

    Checkpointing recomputes every layer's forward in backward: about a third more compute per
    step, for memory the GPU has anyway. None when checkpointing is off, the method runs on CPU,
    or the plan would no longer fit (host memory for offload included).
    """
    if not method.gradient_checkpointing or method.resources.gpus_per_node < 1 or est.shape is None:
        return None
    off = dataclasses.replace(method, gradient_checkpointing=False)
    e = estimate(est.shape, off, est.max_seq_len, est.repo_root, est.lengths, est.scales)
    fits, extra = _fits(e, gpu_mem_gb, off)
    if not fits or extra:
        return None
    return (
        f"methods.{method.name or method.kind}.gradient_checkpointing: true, but the plan fits without it "
        f"({e.total_gb:.1f} GB per GPU of {usable_gb(gpu_mem_gb):.1f} usable, {est.total_gb:.1f} with it) -> "
        "gradient_checkpointing: false skips recomputing every layer in backward (about a third of a step's compute)"
    )
