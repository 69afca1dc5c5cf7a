"""One prompt template, shared by training, evaluation and the login side's token counts.

A contract module: ``train/`` builds every token id through it, and ``launch/cost/tokencount.py`` renders
the same text to count tokens for the cost forecast. Standard library only; the tokenizer is passed in.

The prompt follows CyberMetric's own evaluator (system prompt, ``Question:`` /
``Options:`` and the ``ANSWER: X`` instruction) and goes through the
tokenizer's chat template when it has one. Token ids are built by
concatenating separately tokenised pieces, so training and scoring see exactly
the same ids whatever the tokenizer merges across piece boundaries::

    prompt_ids + prefix_ids ("ANSWER:") + letter_ids (" B") + [eos]

Training puts the loss on ``prefix_ids + letter_ids + [eos]`` only; log-likelihood
scoring compares the four ``letter_ids`` after ``prompt_ids + prefix_ids``.

Few-shot prompts (``shots``: solved questions) put each example before the question as a prior
user turn (the question in the same template) and assistant turn (``ANSWER: X``), through the
chat template: the model reads its own earlier answers in the format it must answer in, as a chat
model sees a conversation (lm-eval's ``fewshot_as_multiturn`` does the same). Without a chat
template the same blocks follow each other in the plain prompt. The examples are the same for
every question, so they belong to the prefix the evaluation computes once.
"""

from __future__ import annotations

import re
import typing as tp

from launch.spec.config import LETTERS

SYSTEM_PROMPT = "You are a security expert who answers questions."
INSTRUCTION = "Choose the correct answer (A, B, C, or D) only. Always return in this format: 'ANSWER: X'"
ANSWER_PREFIX = "ANSWER:"
# Strict: the reply must start with ANSWER: and one letter; anything else is a parse failure.
ANSWER_RE = re.compile(r"^\s*ANSWER:\s*([ABCD])\b")


class QuestionLike(tp.Protocol):
    question: str
    answers: dict
    solution: str


def user_message(q: QuestionLike) -> str:
    """The user turn: question, options on one line, instruction."""
    options = ", ".join(f"{k}) {q.answers[k]}" for k in LETTERS)
    return f"Question: {q.question}\nOptions: {options}\n\n{INSTRUCTION}"


def answer_text(letter: str) -> str:
    """A solved example's answer as the model is asked to write it (``ANSWER: B``)."""
    return f"{ANSWER_PREFIX} {letter}"


def messages(q: QuestionLike, shots: tp.Sequence[QuestionLike] = ()) -> list[dict[str, str]]:
    """The chat: system prompt, each shot as a user and an assistant turn, then the question."""
    turns = [{"role": "system", "content": SYSTEM_PROMPT}]
    for shot in shots:
        turns += [
            {"role": "user", "content": user_message(shot)},
            {"role": "assistant", "content": answer_text(shot.solution)},
        ]
    return turns + [{"role": "user", "content": user_message(q)}]


def prompt_text(tokenizer: tp.Any, q: QuestionLike, shots: tp.Sequence[QuestionLike] = ()) -> str:
    """The full prompt as text, up to where the model's answer starts (``shots`` before the question)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages(q, shots), tokenize=False, add_generation_prompt=True)
    solved = "".join(f"{user_message(s)}\n\n{answer_text(s.solution)}\n\n" for s in shots)
    return f"{SYSTEM_PROMPT}\n\n{solved}{user_message(q)}\n\n"


def _encode(tokenizer: tp.Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_ids(tokenizer: tp.Any, q: QuestionLike, shots: tp.Sequence[QuestionLike] = ()) -> list[int]:
    """Token ids of the prompt. Chat templates write their own BOS; plain prompts get the tokenizer's."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return _encode(tokenizer, prompt_text(tokenizer, q, shots), special=not has_template)


class AnswerCodec:
    """Token ids of the answer prefix and of each letter, computed once per tokenizer."""

    def __init__(self, tokenizer: tp.Any) -> None:
        self.prefix_ids = _encode(tokenizer, ANSWER_PREFIX, special=False)
        self.letter_ids = {k: _encode(tokenizer, f" {k}", special=False) for k in LETTERS}
        self.eos_id = tokenizer.eos_token_id
        self.single_token = all(len(v) == 1 for v in self.letter_ids.values())

    def answer_ids(self, letter: str) -> list[int]:
        """What the model is trained to produce for ``letter``."""
        tail = [self.eos_id] if self.eos_id is not None else []
        return self.prefix_ids + self.letter_ids[letter] + tail


def encode_training_example(
    tokenizer: tp.Any, codec: AnswerCodec, q: QuestionLike, max_len: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` with the loss on the answer only.

    A prompt that does not fit keeps its last tokens: the question and options
    sit at the end of the prompt, the system text at the start.
    """
    answer = codec.answer_ids(q.solution)
    prompt = prompt_ids(tokenizer, q)
    room = max(max_len - len(answer), 1)
    prompt = prompt[-room:]
    return prompt + answer, [-100] * len(prompt) + answer


def scoring_room(codec: AnswerCodec, max_len: int) -> int:
    """Prompt tokens a scored context keeps: ``max_len`` less ``ANSWER:`` and the longest letter."""
    longest = max(len(v) for v in codec.letter_ids.values())
    return max(max_len - len(codec.prefix_ids) - longest, 1)


def scoring_context(
    tokenizer: tp.Any, codec: AnswerCodec, q: QuestionLike, max_len: int, shots: tp.Sequence[QuestionLike] = ()
) -> list[int]:
    """Ids after which the answer letter is scored: the prompt (``shots`` first) plus ``ANSWER:``."""
    return prompt_ids(tokenizer, q, shots)[-scoring_room(codec, max_len) :] + codec.prefix_ids


def parse_answer(text: str) -> str | None:
    """The letter of a generated reply, or None when it is not ``ANSWER: X``."""
    m = ANSWER_RE.match(text)
    return m.group(1) if m else None
