"""Training data as the model sees it: the prepared split, the tokenizer, encoded examples, padded batches.

:mod:`train.packing` builds the packed layout from the same :class:`Example` objects.
"""

from __future__ import annotations

import typing as tp
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from launch.questions import prompting
from launch.spec.config import ExperimentConfig
from launch.store.expdir import ExperimentDir


def load_split(
    cfg: ExperimentConfig, exp: ExperimentDir, split: tp.Literal["train", "eval"], accelerator: tp.Any = None
) -> list:
    """The prepared ``train`` or ``eval`` questions; prepares them first when missing.

    With several processes only the main one prepares a missing split (the
    others wait, then read it), so no two ranks write the same files.
    """
    from launch.questions.data import load_jsonl_questions, prepare_splits

    path = exp.data.split(split)
    with accelerator.main_process_first() if accelerator is not None else nullcontext():
        if not path.exists():  # entrypoint run directly, without the launcher
            prepare_splits(cfg.data, exp.data.root, progress=False)
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
    """One tokenised training question: its ids, and labels that are -100 except on the answer."""

    input_ids: list[int]
    labels: list[int]
    task: int = 0
    """Its task in a ``multi_task`` mixture (0: the target task)."""


def task_ids(batch: list[Example], layout: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"task_ids": ...}``, each token's task shaped like ``layout`` (the labels), when a task other than
    the target is in ``batch``; ``{}`` otherwise (the loop then counts every token as the target's)."""
    if not any(e.task for e in batch):
        return {}
    if layout.shape[0] == len(batch):  # one row per example
        ids = torch.tensor([e.task for e in batch], dtype=torch.long)[:, None].expand_as(layout)
    else:  # one packed row
        ids = torch.tensor([[e.task for e in batch for _ in e.input_ids]], dtype=torch.long)
    return {"task_ids": ids.contiguous()}


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
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, **task_ids(batch, labels)}
