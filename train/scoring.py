"""Scoring multiple-choice questions with a causal LM: batched, length-sorted, the shared prompt prefix run once.

``loglik`` (:func:`score_loglik`) reads the log-likelihood of each answer letter after
``ANSWER:``; ``generate`` (:func:`score_generate`) decodes greedily and parses ``ANSWER: X``
strictly. :mod:`train.evaluate` runs them over every model of an experiment.
"""

from __future__ import annotations

import copy
import os
import typing as tp

import torch

from launch.questions import prompting
from launch.spec.config import LETTERS

# --------------------------------------------------------------------------- batching


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Left-pad so every row ends at the last column; positions count real tokens only."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    # Explicit positions make a left-padded row compute exactly what it would alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def _batches(order: list[int], size: int) -> tp.Iterator[list[int]]:
    for i in range(0, len(order), size):
        yield order[i : i + size]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- scoring


SHARED_PREFIX_MIN = 8
"""Below this many shared tokens, the extra prefix forward and the per-batch cache copy are not worth it."""


def shared_prefix_len(contexts: list[list[int]]) -> int:
    """How many leading tokens every context shares, leaving each at least its last token.

    Every question's prompt starts with the same system turn and ``Question:``; their
    keys and values do not depend on the question, so they are computed once.
    """
    if len(contexts) < 2:
        return 0
    common = os.path.commonprefix(contexts)  # element-wise, so it works on lists of ids
    return min(len(common), min(len(c) for c in contexts) - 1)


class PrefixCache:
    """The KV cache of the shared prefix, computed once and copied into each batch.

    A copy per batch, because the forward appends the batch's own keys and values to
    the cache it is given. ``None`` from :meth:`build` means: score without it (no
    shared prefix worth caching, or a model whose cache cannot be repeated per row).
    """

    def __init__(self, prefix_ids: list[int], past: tp.Any) -> None:
        self.prefix_ids = prefix_ids
        self.past = past

    @classmethod
    def build(cls, model: tp.Any, contexts: list[list[int]]) -> PrefixCache | None:
        n = shared_prefix_len(contexts)
        # Under a sliding window the padding between the prefix and a row's own tokens would count as
        # distance: exact only while every context fits in the window (Mistral's 4096, Gemma's 4096).
        window = getattr(getattr(model, "config", None), "sliding_window", None)
        if n < SHARED_PREFIX_MIN or (window and max(map(len, contexts)) > window):
            return None
        prefix = contexts[0][:n]
        past = model(
            input_ids=torch.tensor([prefix], device=_device(model)), use_cache=True, logits_to_keep=1
        ).past_key_values
        if not hasattr(past, "batch_repeat_interleave"):
            return None
        return cls(prefix, past)

    def extend(self, batch: dict[str, torch.Tensor]) -> dict[str, tp.Any]:
        """``batch`` (the contexts without the prefix, left-padded) made to follow the cached prefix."""
        rows, n = batch["input_ids"].shape[0], len(self.prefix_ids)
        past = copy.deepcopy(self.past)
        past.batch_repeat_interleave(rows)
        mask = batch["attention_mask"]
        # Padding sits between the prefix and each row's own tokens: masked out, and the
        # positions continue from the prefix, so every row computes what it would alone.
        return {
            "input_ids": batch["input_ids"],
            "past_key_values": past,
            "use_cache": True,
            "attention_mask": torch.cat([mask.new_ones(rows, n), mask], dim=1),
            "position_ids": batch["position_ids"] + n,
        }


def letter_logprobs(
    model: tp.Any, rows: list[list[int]], pad_id: int, prefix: PrefixCache | None, letter_cols: list[int]
) -> torch.Tensor:
    """Log-probabilities of the answer letters after each context, (rows, 4) in float32; one forward.

    The letters' logits are the last hidden state projected onto their 4 rows of the output
    layer in fp32: a bf16 model's logits of 16-32 are 0.125 apart, so close letters would tie
    (and the first would win), and which ones tie would depend on the batch. The normaliser
    (logsumexp over the vocabulary) comes from the model's own logits, upcast: it is the same
    for the 4 letters, so its rounding never changes a prediction.
    """
    if prefix is None:
        batch: dict[str, tp.Any] = {**left_pad(rows, pad_id, _device(model)), "use_cache": False}
    else:
        n = len(prefix.prefix_ids)
        batch = prefix.extend(left_pad([r[n:] for r in rows], pad_id, _device(model)))
    head = _plain_output_layer(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, args, out: seen.append(args[0])) if head is not None else None
    try:
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :]
    finally:
        if hook is not None:
            hook.remove()
    lse = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
    if head is None or len(seen) != 1:
        return logits[:, letter_cols].float() - lse
    weight = head.weight[letter_cols].float()
    letters = seen[0][:, -1, :].float() @ weight.T
    if head.bias is not None:
        letters = letters + head.bias[letter_cols].float()
    return letters - lse


def _plain_output_layer(model: tp.Any) -> torch.nn.Linear | None:
    """The model's output layer when its logits are exactly ``hidden @ W.T (+ b)``, else None.

    None for layers wrapped by peft (an adapter on ``lm_head``) or quantised, and for models that
    transform logits after the projection (soft-capping, a logit scale).
    """
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if type(head) is torch.nn.Linear else None


def count_ties(scores: list[float]) -> int:
    """How many letters share the best score (1: a clear winner)."""
    best = max(scores)
    return sum(x == best for x in scores)


@torch.no_grad()
def score_loglik(
    model: tp.Any,
    tokenizer: tp.Any,
    questions: list,
    batch_size: int,
    max_len: int,
    desc: str = "eval",
    progress: bool = True,
    share_prefix: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
    shots: tp.Sequence[tp.Any] = (),
) -> list[dict]:
    """Log-likelihood of each answer letter after ``ANSWER:``; the argmax is the prediction.

    Questions are batched by length (less padding), the prompt prefix they all share
    is run once and its KV cache reused (``share_prefix``), and only the last
    position's logits are computed (``logits_to_keep=1``): with a 128k vocabulary
    the full logits of a batch would take gigabytes. The letters are scored in fp32
    (:func:`letter_logprobs`); ``tie`` marks a question whose best score two letters
    share (the first of them is the prediction). ``on_batch(n)`` is told each batch's size.
    ``shots``: solved examples put before every question (few-shot); they join the shared prefix.
    """
    from tqdm.auto import tqdm

    model.eval()
    codec = prompting.AnswerCodec(tokenizer)
    contexts = [prompting.scoring_context(tokenizer, codec, q, max_len, shots) for q in questions]
    letter_rows = [codec.letter_ids[k] for k in LETTERS]
    letter_cols = [r[0] for r in letter_rows]
    prefix = PrefixCache.build(model, contexts) if share_prefix and codec.single_token else None
    out: list[dict | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(contexts[i]))
    bar = tqdm(total=len(questions), desc=desc, disable=not progress, mininterval=1.0)
    for idx in _batches(order, batch_size):
        rows = [contexts[i] for i in idx]
        if codec.single_token:
            logp = letter_logprobs(model, rows, tokenizer.pad_token_id, prefix, letter_cols)
        else:  # a tokenizer that splits " A": score each letter's tokens in full
            logp = _multi_token_logp(model, rows, letter_rows, tokenizer.pad_token_id)
        for row, i in enumerate(idx):
            scores = [float(x) for x in logp[row]]
            pred = LETTERS[max(range(4), key=scores.__getitem__)]
            out[i] = {"pred": pred, "logprobs": dict(zip(LETTERS, scores)), "tie": count_ties(scores) > 1}
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    bar.close()
    return tp.cast(list[dict], out)


def _multi_token_logp(model: tp.Any, contexts: list[list[int]], letters: list[list[int]], pad_id: int) -> torch.Tensor:
    """Summed log-probabilities of multi-token continuations, one forward per letter."""
    cols = []
    for cont in letters:
        batch = left_pad([c + cont for c in contexts], pad_id, _device(model))
        logits = model(**batch, logits_to_keep=len(cont) + 1).logits[:, :-1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(cont, device=logp.device).expand(len(contexts), -1)
        cols.append(logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(cols, dim=1)


@torch.no_grad()
def score_generate(
    model: tp.Any,
    tokenizer: tp.Any,
    questions: list,
    batch_size: int,
    max_len: int,
    max_new_tokens: int,
    desc: str = "eval",
    progress: bool = True,
    on_batch: tp.Callable[[int], None] | None = None,
    shots: tp.Sequence[tp.Any] = (),
) -> list[dict]:
    """Greedy generation parsed strictly as ``ANSWER: X``; ``pred`` is None on a parse failure.

    ``shots``: solved examples put before every question (few-shot).
    """
    from tqdm.auto import tqdm

    model.eval()
    prompts = [prompting.prompt_ids(tokenizer, q, shots)[-max_len:] for q in questions]
    out: list[dict | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(questions), desc=desc, disable=not progress, mininterval=1.0)
    for idx in _batches(order, batch_size):
        batch = left_pad([prompts[i] for i in idx], tokenizer.pad_token_id, _device(model))
        batch.pop("position_ids")  # generate() derives positions from the mask itself
        gen = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new = gen[:, batch["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            text = tokenizer.decode(new[row], skip_special_tokens=True)
            out[i] = {"pred": prompting.parse_answer(text), "generated": text}
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(len(idx))
    bar.close()
    return tp.cast(list[dict], out)
