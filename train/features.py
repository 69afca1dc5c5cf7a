"""The feature head: a frozen model's hidden state at the answer position, and a linear 4-way head on it.

Used by the ``feature_head`` training job (:mod:`train.feature_head`: extract, cache, fit) and by the
evaluation job (:func:`score_head`). A question's feature is the hidden state of the configured layer at
the last token of ``ANSWER:``, the position from which the letter would be predicted, computed on the
same scoring context as the log-likelihood evaluation (:func:`launch.questions.prompting.scoring_context`),
left-padded with explicit positions, so a batch gives each question what it would give alone.

The head (:class:`LetterHead`) maps the (optionally standardised) feature to four logits, one per
letter A-D; its log-softmax are the predictions' ``logprobs``.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import torch

from launch.questions import prompting
from launch.spec.config import LETTERS, FeatureHeadSettings
from launch.store.fsio import atomic_write_bytes
from train.scoring import count_ties, left_pad


def hidden_index(layer: int, num_layers: int, where: str) -> int:
    """The position of ``layer`` in transformers' ``hidden_states`` (0: embeddings .. ``num_layers``).

    Raises
    ------
    ValueError
        For a layer the model does not have (the preflight checks it too, when the model is local).
    """
    index = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= index <= num_layers:
        raise ValueError(
            f"{where}.feature_head.layer: {layer}, but the model has {num_layers} layers -> 0 (the embeddings) to "
            f"{num_layers} (the last layer), or -1 to -{num_layers + 1} counted from the end"
        )
    return index


def num_layers(model: tp.Any) -> int:
    """Decoder layers of a transformers causal LM (its text config's ``num_hidden_layers``)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers)


@torch.no_grad()
def extract(
    model: tp.Any,
    tokenizer: tp.Any,
    questions: list,
    index: int,
    batch_size: int,
    max_len: int,
    on_batch: tp.Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The float32 features (questions x hidden size), in the order of ``questions``; batched by length."""
    model.eval()
    codec = prompting.AnswerCodec(tokenizer)
    contexts = [prompting.scoring_context(tokenizer, codec, q, max_len) for q in questions]
    order = sorted(range(len(questions)), key=lambda i: len(contexts[i]))
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(questions)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = left_pad([contexts[i] for i in idx], tokenizer.pad_token_id, device)
        states = model(**batch, use_cache=False, logits_to_keep=1, output_hidden_states=True).hidden_states
        for row, i in enumerate(idx):
            out[i] = states[index][row, -1].float().cpu()
        if on_batch is not None:
            on_batch(len(idx))
    return torch.stack(tp.cast(list[torch.Tensor], out)) if out else torch.zeros(0, 0)


class LetterHead(torch.nn.Module):
    """Four logits (A-D) from one feature vector: a linear layer after a fixed standardisation."""

    def __init__(self, hidden: int, layer: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.layer = layer
        self.linear = torch.nn.Linear(hidden, len(LETTERS))
        self.register_buffer("mean", mean if mean is not None else torch.zeros(hidden))
        self.register_buffer("std", std if std is not None else torch.ones(hidden))

    @classmethod
    def for_features(cls, features: torch.Tensor, layer: int, settings: FeatureHeadSettings) -> LetterHead:
        """A fresh head for ``features``, standardised by their mean and deviation when ``settings.normalize``."""
        if not settings.normalize:
            return cls(features.shape[1], layer)
        std = features.std(dim=0, unbiased=False).clamp(min=1e-6)
        return cls(features.shape[1], layer, features.mean(dim=0), std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)

    def save(self, path: Path) -> None:
        """The head as safetensors (weights, bias, standardisation; the layer in the metadata), atomically."""
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write_bytes(path, save(tensors, metadata={"layer": str(self.layer)}))

    @classmethod
    def load(cls, path: Path) -> LetterHead:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            layer = int(f.metadata()["layer"])
        head = cls(tensors["mean"].numel(), layer)
        head.load_state_dict(tensors)
        return head


class HeadModel:
    """What the evaluation scores for a ``feature_head`` method: the frozen model and its head."""

    def __init__(self, model: tp.Any, head: LetterHead) -> None:
        self.model, self.head = model, head.to(next(model.parameters()).device)


@torch.no_grad()
def score_head(
    scored: HeadModel,
    tokenizer: tp.Any,
    questions: list,
    batch_size: int,
    max_len: int,
    on_batch: tp.Callable[[int], None] | None = None,
) -> list[dict]:
    """Each question scored by the head: ``pred``, ``logprobs`` (the head's log-softmax), ``tie``."""
    features = extract(scored.model, tokenizer, questions, scored.head.layer, batch_size, max_len, on_batch)
    logp = torch.log_softmax(scored.head(features.to(scored.head.mean.device)).float(), dim=-1)
    rows = []
    for scores in logp.tolist():
        pred = LETTERS[max(range(len(LETTERS)), key=scores.__getitem__)]
        rows.append({"pred": pred, "logprobs": dict(zip(LETTERS, scores)), "tie": count_ties(scores) > 1})
    return rows
