"""Padding-free batching: the examples of a micro-batch laid end to end in one row.

What a micro-batch is does not change: ``micro_batch_size`` examples, drawn by the same
shuffled sampler (so the data order is still a function of the seed and the epoch, accelerate
still shards and skips whole micro-batches, and every rank gets one row per micro-batch). Only
the tensors differ. ``batching: padded`` (``collate``) right-pads the examples to the longest
one; ``batching: packed`` (:func:`collate_packed`) concatenates them::

    input_ids     [ a0 a1 a2 a3 | b0 b1 b2 | c0 c1 c2 c3 c4 ]        shape (1, 12), no padding
    position_ids  [ 0  1  2  3  | 0  1  2  | 0  1  2  3  4  ]        restart at every example
    labels        [ -100 ...  | -100 ... | -100 ...           ]      each example's first label -100

The first label of an example is never a target of its own (causal LMs shift labels by one), so
setting it to -100 only removes the one target that would cross a boundary: the last token of an
example predicting the first token of the next.

Attention stays within each example, from one of two places:

* **varlen attention** (this module, used when the model runs ``sdpa``): :func:`padding_free_attention`
  switches the model to :data:`VARLEN_SDPA` for the duration of training. On a CUDA GPU in
  bf16/fp16 (autocast included) it calls torch's variable-length flash kernel
  (``torch.nn.attention.varlen.varlen_attn``) once per layer on the whole packed row, with the
  examples' cumulative offsets (``cu_seq_lens_q``) that :func:`collate_packed` computed on the host,
  so no step waits for the GPU to find them. Elsewhere (CPU, fp32, a torch without the kernel) it
  cuts the row where ``position_ids`` restart and runs causal SDPA on every example separately.
  Either way no mask is built and no attention is computed across examples (the cost stays that
  of unpadded examples, not of one long row).
* **transformers' own packed-sequence masks** otherwise (``eager``, ``flex_attention``):
  ``masking_utils.find_packed_sequence_indices`` turns restarting ``position_ids`` into a
  block-diagonal causal mask, provided ``attention_mask`` is None and there is no KV cache.
  ``flash_attention_2/3`` read the same ``position_ids`` as varlen boundaries. Hence
  ``use_cache=False`` in :func:`answer_loss`: Llama defaults ``use_cache`` to the config's
  True, and with a cache transformers skips the packed-sequence detection and the examples
  would attend to each other.

:func:`answer_loss` also asks the model for logits only where a label is set (the answer
tokens, ``logits_to_keep``): the loss is the same mean cross-entropy over the micro-batch's
answer tokens as ``model(**batch).loss``, without projecting every prompt token onto the
vocabulary.
"""

from __future__ import annotations

import contextlib
import functools
import typing as tp

import torch
import torch.nn.functional as F

from train.batches import Example, task_ids

VARLEN_SDPA = "cyberft_varlen_sdpa"
"""Name of the per-example SDPA attention in transformers' ``AttentionInterface``."""

VARLEN_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
"""Example boundaries of a packed row under the names transformers' flash-attention kwargs use:
``flash_attention_2`` reads them as they are, and :func:`varlen_sdpa_forward` gets them the same way."""

MODEL_KEYS = ("input_ids", "attention_mask", "position_ids") + VARLEN_KEYS


# --------------------------------------------------------------------------- collate


def collate_packed(batch: list[Example], pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """One row holding every example of ``batch`` (``pad_id`` unused: there is no padding).

    Also the examples' boundaries (:data:`VARLEN_KEYS`): int32 cumulative offsets
    ``[0, n0, n0 + n1, ...]`` and the longest example, as the varlen kernels take them.
    """
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    offsets = [0]
    for e in batch:
        n = len(e.input_ids)
        ids += e.input_ids
        labels += [-100] + list(e.labels[1:n])
        positions += range(n)
        offsets.append(offsets[-1] + n)
    cu = torch.tensor(offsets, dtype=torch.int32)
    longest = max(b - a for a, b in zip(offsets[:-1], offsets[1:]))
    label_row = torch.tensor([labels], dtype=torch.long)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": label_row,
        **task_ids(batch, label_row),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def batch_tokens(batch: dict[str, tp.Any]) -> torch.Tensor | int:
    """Real (non-padding) tokens of a padded (a tensor on the batch's device: no host sync) or packed batch (an int)."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    return int(batch["input_ids"].numel())


# --------------------------------------------------------------------------- loss


def answer_loss(model: tp.Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (answer) tokens of ``batch``.

    The same value as ``model(**batch).loss`` (transformers' causal-LM loss: labels shifted by
    one, -100 ignored, fp32 logits), but logits are computed at the labelled positions only.
    """
    logits, targets, _ = _answer_logits(model, batch)
    return F.cross_entropy(logits.float(), targets)


def answer_token_losses(model: tp.Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each labelled (answer) token of ``batch``, and each one's task (``task_ids``, else 0)."""
    logits, targets, keep = _answer_logits(model, batch)
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    # Position t predicts t + 1 of the same example (across a boundary the target is -100), so its task is t's.
    tasks = batch["task_ids"].to(keep.device)[keep] if "task_ids" in batch else torch.zeros_like(targets)
    return losses, tasks


def _answer_logits(model: tp.Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at the labelled positions only, their targets, and where they are in the batch."""
    labels = batch["labels"]
    targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # what position t must predict
    keep = targets != -100
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    if logits.dim() == 3:  # a model that ignores logits_to_keep returns every position
        logits = logits[keep]
    return logits, targets[keep], keep


# --------------------------------------------------------------------------- attention


_bounds_cache: list[tp.Any] = [None, None]  # (position_ids tensor, its segment bounds): one forward's layers share them


def segment_bounds(position_ids: torch.Tensor) -> list[int]:
    """Start offsets of the examples in a one-row ``position_ids``, plus its length."""
    if _bounds_cache[0] is position_ids:
        return _bounds_cache[1]
    row = position_ids[0]
    starts = torch.nonzero(row[1:] != row[:-1] + 1).flatten().add(1).tolist()
    bounds = [0] + starts + [row.numel()]
    _bounds_cache[0], _bounds_cache[1] = position_ids, bounds
    return bounds


def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: tp.Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each example of a packed row: torch's varlen kernel, else SDPA per example.

    Examples are delimited by ``cu_seq_lens_q`` / ``max_length_q`` when the batch brings them
    (:func:`collate_packed`), else where ``position_ids`` stop counting up by one (as
    ``find_packed_sequence_indices`` does). Anything else (a mask, no position ids, several rows,
    a KV cache) goes to the stock SDPA attention unchanged.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if (
        attention_mask is not None
        or position_ids is None
        or query.shape[0] != 1
        or query.shape[2] != key.shape[2]
        or not getattr(module, "is_causal", True)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if position_ids.dim() == 1:
        position_ids = position_ids[None]
    dtype = compute_dtype(query)
    kernel = varlen_kernel(query.device, dtype) if dropout == 0.0 else None
    if kernel is not None:
        cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
        if cu is None or longest is None:
            cu, longest = _offsets(segment_bounds(position_ids), query.device)
        q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
        return call_varlen(kernel, q, k, v, cu.to(query.device), int(longest), scaling), None
    bounds = segment_bounds(position_ids)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    # split, not slicing: its backward is one concatenation, not a zero-filled copy per example
    outs = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling)
        for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None  # (1, seq, heads, head_dim), like sdpa_attention_forward


def _offsets(bounds: list[int], device: torch.device) -> tuple[torch.Tensor, int]:
    """Cumulative offsets (int32, on ``device``) and the longest example, from segment bounds."""
    return torch.tensor(bounds, dtype=torch.int32, device=device), max(b - a for a, b in zip(bounds[:-1], bounds[1:]))


def compute_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in: autocast's, when it is on for the query's device.

    With fp32 weights under autocast (full SFT's master weights) RoPE leaves q and k in fp32;
    SDPA is on autocast's list and would run in bf16, the varlen kernel is not, so it is cast here.
    """
    if torch.is_autocast_enabled(query.device.type):
        return torch.get_autocast_dtype(query.device.type)
    return query.dtype


FLASH_DTYPES = (torch.float16, torch.bfloat16)
"""What the flash kernel behind ``varlen_attn`` computes in."""

FLASH_MIN_CAPABILITY = (8, 0)
"""torch's flash attention needs an Ampere (sm80) or newer GPU."""


@functools.cache
def _flash_capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= FLASH_MIN_CAPABILITY


def varlen_kernel(device: torch.device, dtype: torch.dtype) -> tp.Callable[..., torch.Tensor] | None:
    """torch's ``varlen_attn`` where it runs (a CUDA GPU of sm80 or newer, bf16/fp16), else None.

    It has no CPU kernel (``aten::_flash_attention_forward`` is CUDA only) and no fp32 one.
    """
    if device.type != "cuda" or dtype not in FLASH_DTYPES:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # a torch before the varlen API
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return varlen_attn if _flash_capable(index) else None


def call_varlen(
    kernel: tp.Callable[..., torch.Tensor],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu: torch.Tensor,
    longest: int,
    scaling: float | None,
) -> torch.Tensor:
    """``kernel`` (``varlen_attn``'s signature) on one packed row in transformers' layout.

    Takes (1, heads, tokens, head_dim) tensors as attention functions get them and returns
    (1, tokens, heads, head_dim) as they return it. Causal is ``window_size=(-1, 0)`` from torch
    2.11 (``is_causal=True`` in 2.10, where the API appeared); grouped-query K/V go in unrepeated
    (``enable_gqa``) where the signature has it, else are repeated first; a kernel without
    ``scale`` gets the query pre-scaled when the model's scaling is not the default.
    """
    params = _kernel_params(kernel)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, head_dim), last dim contiguous
    extra: dict[str, tp.Any] = {}
    default_scale = q.shape[-1] ** -0.5
    if "scale" in params:
        extra["scale"] = scaling
    elif scaling is not None and abs(scaling - default_scale) > 1e-6 * default_scale:
        q = q * (scaling / default_scale)  # a kernel without ``scale`` applies head_dim ** -0.5
    if "window_size" in params:
        extra["window_size"] = (-1, 0)  # a tuple: varlen_attn compares it with (-1, 0) to decide causality
    else:
        extra["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return kernel(q, k, v, cu, cu, longest, longest, **extra).unsqueeze(0)


@functools.cache
def _kernel_params(kernel: tp.Callable[..., torch.Tensor]) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(kernel).parameters)


def register() -> None:
    """Make :data:`VARLEN_SDPA` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_forward)


def _hf_model(model: tp.Any) -> tp.Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def varlen_applies(model: tp.Any) -> bool:
    """Whether the per-example SDPA can stand in for this model's attention.

    Only for models running ``sdpa`` whose attention is plain causal attention over the whole
    example: no sliding window, no logit soft-capping (those need transformers' masks).
    """
    hf = _hf_model(model)
    config = getattr(hf, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "attn_logit_softcapping", None):
        return False
    return callable(getattr(hf, "set_attn_implementation", None))


@contextlib.contextmanager
def padding_free_attention(model: tp.Any, enabled: bool = True) -> tp.Iterator[bool]:
    """Run ``model`` with per-example SDPA inside the block (when it applies); yields whether it does.

    The model's own implementation is restored on exit, so what is saved afterwards (and the
    evaluation that loads it) sees the original ``sdpa``. Models it does not apply to keep their
    attention and isolate packed examples through transformers' masks (see the module docstring).

    Inside the block transformers builds no attention mask (it has none for this implementation
    name): feed it packed rows or unpadded sequences only, as the training loop does.
    """
    if not enabled or not varlen_applies(model):
        yield False
        return
    register()
    hf = _hf_model(model)
    original = hf.config._attn_implementation
    try:
        hf.set_attn_implementation(VARLEN_SDPA)
    except (ValueError, TypeError, AttributeError):  # a model class that refuses custom attention functions
        yield False
        return
    if hf.config._attn_implementation != VARLEN_SDPA:  # refused with a warning only
        yield False
        return
    try:
        yield True
    finally:
        hf.set_attn_implementation(original)
        _bounds_cache[0] = _bounds_cache[1] = None
