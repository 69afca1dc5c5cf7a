"""How many tokens the jobs will train and score on, counted on the login node without torch.

The forecast (:mod:`launch.cost.forecast`) needs, per split, the number of tokens, the sum of the
squared example lengths (attention's cost grows with each example's own length: examples are
packed, never attended across) and the positions where logits are computed. Two ways:

* **counted** with the model's own ``tokenizer.json`` through the ``tokenizers`` package (Rust,
  no torch), the prompt built exactly as :mod:`launch.questions.prompting` builds it: the chat template
  rendered by jinja2 the way transformers renders it, then the pieces tokenised separately
  (prompt, ``ANSWER:``, `` X``, end token) and cut at ``model.max_seq_len`` as the jobs cut them.
  Large datasets are counted on a fixed random sample of :data:`SAMPLE` examples and scaled;
* **estimated from characters** (:data:`CHARS_PER_TOKEN`) when the tokenizer is not on disk here
  (a hub model not in this machine's cache), when it cannot be read, or when loading it would
  cost the dry run more than it has (:data:`TOKENIZER_BYTES_LIMIT`).

Every result says which it was (:attr:`TokenCounts.source`): ``tokens: counted with the tokenizer``,
``tokens: counted with the tokenizer on 128 of 9,000 training examples, scaled`` or ``tokens:
estimated from characters (3.6 characters per token)``.

Example
-------
>>> split = data.plan_splits(cfg.data)                 # what the preflight already computed
>>> counts = count_tokens(split.train, split.eval, cfg.model.name_or_path, cfg.model.max_seq_len)
>>> counts.train.tokens, counts.source
(1534112, 'tokens: estimated from characters (3.6 characters per token)')

Cost, measured on the 2-core development machine: ``import tokenizers`` 30 ms, ``import
jinja2.sandbox`` 33 ms, loading SmolLM2's 3.4 MiB ``tokenizer.json`` 75 ms; Llama 3's 8.7 MiB one
would take about 190 ms (scaled by size), too much for the dry run's 0.3 s, hence the limit.
Estimating from characters imports nothing.
"""

from __future__ import annotations

import json
import os
import random
import typing as tp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch import SAMPLE_DATA
from launch.questions.prompting import ANSWER_PREFIX, prompt_text
from launch.spec import hub
from launch.spec.config import LETTERS, DataConfig, DataSource

if tp.TYPE_CHECKING:  # pragma: no cover
    from launch.questions.data import Split

CHARS_PER_TOKEN = 3.6
"""Characters of the plain prompt (system prompt, question, options, instruction) per token of the
prompt the jobs build, chat template included. Measured with SmolLM2-135M-Instruct's tokenizer
and ChatML template over CyberMetric-500: 3.63 (tests/test_tokencount.py re-measures it when that
model is in ``.cache``). Byte-level BPE tokenizers of 32k-128k entries give 3.5-4.5 on English
prose; the options' short technical phrases tokenise denser than prose."""

ANSWER_TOKENS = 4
"""Tokens the model is trained to produce when they are not counted: ``ANSWER:`` (2-3 tokens with
the common byte-level BPE tokenizers), the letter (1), the end token (1)."""

SAMPLE = 128
"""Examples tokenised per split when counting; a larger split is scaled from a fixed random sample
of this many (about 0.2 ms per example here). On CyberMetric-500 the scaled total came within 1% of
the full count with both SmolLM2's and the tiny model's tokenizer (-0.9%, -0.6%; 64 examples:
-2.4%, -2.7%; lengths are right-skewed, so small samples tend to miss the longest questions)."""

TOKENIZER_BYTES_LIMIT = 4 << 20
"""Largest ``tokenizer.json`` that ``mode="auto"`` loads (4 MiB, about 90 ms here): larger
vocabularies (Llama 3: 8.7 MiB) are estimated from characters unless ``mode="count"``."""

MODES = ("auto", "count", "chars")


@dataclass(frozen=True)
class SplitTokens:
    """Token counts of one split as its job sees it.

    Parameters
    ----------
    examples:
        Questions in the split.
    tokens:
        Tokens of every example (training: prompt and answer; evaluation: the scored context),
        each cut at ``model.max_seq_len`` as the jobs cut it.
    squared:
        Sum over examples of their length squared (attention FLOPs grow with it).
    logit_tokens:
        Positions whose logits are computed: the answer tokens in training (the loss is on them
        only), one per question in the evaluation (the letter after ``ANSWER:``).
    shared_prefix:
        Tokens every context of the split starts with (the evaluation computes them once per model).
    longest:
        The longest example counted (of the sample, when a large split is counted on one): with the
        mean and spread it sizes the largest micro-batch, which the memory estimate plans for.
    """

    examples: int
    tokens: float
    squared: float
    logit_tokens: float
    shared_prefix: int = 0
    longest: float = 0.0

    @property
    def mean(self) -> float:
        """Mean tokens per example."""
        return self.tokens / self.examples if self.examples else 0.0

    @property
    def sd(self) -> float:
        """Standard deviation of the example lengths (from ``squared``)."""
        if not self.examples:
            return 0.0
        return max(self.squared / self.examples - self.mean**2, 0.0) ** 0.5

    @property
    def mean_context(self) -> float:
        """Token-weighted mean example length: the ``T`` of the attention term per token."""
        return self.squared / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class TokenCounts:
    """Both splits, and how they were obtained (``source``, one line for the dry run)."""

    train: SplitTokens
    eval: SplitTokens
    source: str
    counted: bool


class _Question(tp.Protocol):
    question: str
    answers: dict
    solution: str


# --------------------------------------------------------------------------- finding the tokenizer


def tokenizer_dir(name_or_path: str) -> Path | None:
    """The directory holding the model's ``tokenizer.json``: a local directory, else the hub cache's snapshot."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p if (p / "tokenizer.json").is_file() else None
    if not hub.looks_like_hub_id(name_or_path):
        return None
    snap = hub.snapshot_dir(name_or_path, hub.hub_cache())
    return snap if snap is not None and (snap / "tokenizer.json").is_file() else None


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _token_text(value: tp.Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _chat_template(directory: Path, config: dict) -> str | None:
    """The default chat template: ``chat_template.jinja`` (transformers 4.5x+) or tokenizer_config's."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    return tpl if isinstance(tpl, str) and tpl else None


# --------------------------------------------------------------------------- counting with the tokenizer


class _Encoder:
    """The pieces :mod:`launch.questions.prompting` tokenises, with ``tokenizers`` instead of transformers."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config = _read_json(directory / "tokenizer_config.json")
        special = _read_json(directory / "special_tokens_map.json")
        self.bos = _token_text(config.get("bos_token")) or _token_text(special.get("bos_token"))
        self.eos = _token_text(config.get("eos_token")) or _token_text(special.get("eos_token"))
        template = _chat_template(directory, config)
        self.chat = _ChatTemplate(template, self.bos, self.eos) if template else None
        prefix = len(self.encode(ANSWER_PREFIX, special=False))
        letters = {k: len(self.encode(f" {k}", special=False)) for k in LETTERS}
        end = 1 if self.eos is not None and self.tok.token_to_id(self.eos) is not None else 0
        # Tokens of AnswerCodec.answer_ids(letter): "ANSWER:", the letter, the end token.
        self.answer = {k: prefix + n + end for k, n in letters.items()}
        self.context_tail = prefix
        self.longest_letter = max(letters.values())

    def encode(self, text: str, special: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=special).ids

    def prompts(self, questions: list[_Question]) -> list[list[int]]:
        """``launch.questions.prompting.prompt_ids`` of each: a chat template writes its BOS, plain prompts get one."""
        texts = [prompt_text(self.chat, q) for q in questions]
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=self.chat is None)]


class _ChatTemplate:
    """What ``launch.questions.prompting.prompt_text`` asks of a chat-template tokenizer, without transformers."""

    def __init__(self, template: str, bos: str | None, eos: str | None) -> None:
        self.chat_template = template
        self.compiled = _compile(template)
        self.special = {"bos_token": bos or "", "eos_token": eos or ""}

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        return self.compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)


def _compile(template: str) -> tp.Any:
    """The template compiled in a jinja2 sandbox set up as transformers sets up its own.

    Same options (``trim_blocks``, ``lstrip_blocks``, the loop-control extension) and the globals
    templates use (``raise_exception``, ``strftime_now``, a ``tojson`` that does not HTML-escape).
    """
    import datetime

    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> tp.NoReturn:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: tp.Any, ensure_ascii: bool = False, indent: tp.Any = None, separators: tp.Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


def _sample(questions: tp.Sequence[_Question], limit: int) -> list[_Question]:
    """At most ``limit`` questions, in their order, drawn with a fixed seed: the same sample every run."""
    n = len(questions)
    if n <= limit:
        return list(questions)
    return [questions[i] for i in sorted(random.Random(0).sample(range(n), limit))]


def _scaled(lengths: list[int], logits: list[int], n: int, prefix: int = 0) -> SplitTokens:
    """A split of ``n`` examples from the ``lengths`` (and logit positions) of a sample of them."""
    scale = n / (len(lengths) or 1)
    return SplitTokens(
        n,
        sum(lengths) * scale,
        sum(x * x for x in lengths) * scale,
        sum(logits) * scale,
        prefix,
        float(max(lengths, default=0)),
    )


def _train_lengths(enc: _Encoder, questions: list[_Question], max_len: int) -> tuple[list[int], list[int]]:
    """``launch.questions.prompting.encode_training_example``'s lengths and its answer's (the prompt keeps its end)."""
    answers = [enc.answer[q.solution] for q in questions]
    return [min(len(p), max(max_len - a, 1)) + a for p, a in zip(enc.prompts(questions), answers)], answers


def _eval_contexts(enc: _Encoder, questions: list[_Question], max_len: int) -> list[list[int]]:
    """``launch.questions.prompting.scoring_context``'s ids, but only their lengths and shared start matter."""
    room = max(max_len - enc.context_tail - enc.longest_letter, 1)
    return [p[-room:] + [-1] * enc.context_tail for p in enc.prompts(questions)]


def _counted(enc: _Encoder, train: tp.Sequence[_Question], eval_: tp.Sequence[_Question], max_len: int) -> TokenCounts:
    train_s, eval_s = _sample(train, SAMPLE), _sample(eval_, SAMPLE)
    contexts = _eval_contexts(enc, eval_s, max_len)
    prefix = len(os.path.commonprefix(contexts)) if len(contexts) > 1 else 0
    counts = TokenCounts(
        train=_scaled(*_train_lengths(enc, train_s, max_len), len(train)),
        eval=_scaled([len(c) for c in contexts], [1] * len(contexts), len(eval_), prefix),
        source="tokens: counted with the tokenizer",
        counted=True,
    )
    if len(train_s) < len(train) or len(eval_s) < len(eval_):
        parts = [
            f"{len(s):,} of {len(full):,} {what} examples"
            for s, full, what in ((train_s, train, "training"), (eval_s, eval_, "evaluation"))
            if len(s) < len(full)
        ]
        counts = TokenCounts(counts.train, counts.eval, f"{counts.source} on {' and '.join(parts)}, scaled", True)
    return counts


# --------------------------------------------------------------------------- estimating from characters


def plain_prompt(q: _Question) -> str:
    """The prompt without a chat template (``launch.questions.prompting.prompt_text`` for a tokenizer without one)."""
    return prompt_text(None, q)


def _estimated(
    train: tp.Sequence[_Question], eval_: tp.Sequence[_Question], max_len: int, chars_per_token: float, why: str
) -> TokenCounts:
    prompts = [len(plain_prompt(q)) / chars_per_token for q in train]
    room = max(max_len - ANSWER_TOKENS, 1)
    lengths = [min(p, room) + ANSWER_TOKENS for p in prompts]
    tail = len(ANSWER_PREFIX) / chars_per_token
    contexts = [min(len(plain_prompt(q)) / chars_per_token, room) + tail for q in eval_]
    texts = [plain_prompt(q) for q in eval_]
    prefix = round(len(os.path.commonprefix(texts)) / chars_per_token) if len(texts) > 1 else 0
    return TokenCounts(
        train=SplitTokens(
            len(train),
            sum(lengths),
            sum(x * x for x in lengths),
            ANSWER_TOKENS * len(train),
            longest=max(lengths, default=0.0),
        ),
        eval=SplitTokens(
            len(eval_), sum(contexts), sum(x * x for x in contexts), len(eval_), prefix, max(contexts, default=0.0)
        ),
        source=f"tokens: estimated from characters ({chars_per_token:g} characters per token{why})",
        counted=False,
    )


# --------------------------------------------------------------------------- without the data


class StandIn(Sequence):
    """``n`` questions standing in for a split that is not on this machine: the ``sample``'s, over and over.

    :func:`count_tokens` counts (or estimates) the sample's questions once and scales them to ``n``, and
    its ``source`` says so with ``planned`` (what ``n`` was planned from).
    """

    def __init__(self, sample: tp.Sequence[_Question], n: int, planned: str) -> None:
        if not sample:
            raise ValueError("a stand-in needs at least one sample question")
        self.sample, self.n, self.planned = list(sample), n, planned

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: tp.Any) -> tp.Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.sample[i % self.n % len(self.sample)]


def stand_in_split(cfg: DataConfig, sample: str | os.PathLike = SAMPLE_DATA) -> tuple[Split | None, str]:
    """A split of :class:`StandIn` questions sized from the record counts the config declares
    (:func:`launch.questions.data.declared_sizes`), for the cost forecast when the data cannot be read here.

    Returns ``(split, "")``, or ``(None, why not, with the fix)``. Never use it for anything but counting
    tokens: its questions are the bundled ``sample``'s, not the experiment's.
    """
    from launch.questions.data import DataError, Split, declared_sizes, load_questions

    sizes, planned = declared_sizes(cfg)
    if sizes is None:
        return None, planned
    try:
        questions = load_questions(DataSource(path=str(sample)))
    except DataError as exc:  # the checkout's own file: only a broken checkout gets here
        return None, f"the bundled sample {sample} could not be read ({exc.problems[0]})"
    train, eval_ = (StandIn(questions, n, planned) for n in sizes)
    return Split(train, eval_, 0, 0, len(train), len(eval_)), ""  # type: ignore[arg-type]  # stand-ins, not lists


def _resized(split: SplitTokens, n: int) -> SplitTokens:
    """``split``'s counts for ``n`` examples of the same mean length."""
    scale = n / split.examples if split.examples else 0.0
    return SplitTokens(
        n, split.tokens * scale, split.squared * scale, split.logit_tokens * scale, split.shared_prefix, split.longest
    )


def _stood_in(
    train: StandIn | tp.Sequence[_Question],
    eval_: StandIn | tp.Sequence[_Question],
    model: str,
    max_seq_len: int,
    mode: str,
    chars_per_token: float,
) -> TokenCounts:
    """:func:`count_tokens` of stand-ins: the sample counted once, scaled to the planned sizes."""
    base = count_tokens(
        *(s.sample if isinstance(s, StandIn) else s for s in (train, eval_)), model, max_seq_len, mode, chars_per_token
    )
    stand_in = next(s for s in (train, eval_) if isinstance(s, StandIn))
    how = base.source.removeprefix("tokens: ")
    source = (
        f"tokens: estimated without the data: {len(train):,} training and {len(eval_):,} evaluation examples "
        f"from {stand_in.planned} (no duplicates assumed), each as long as the {len(stand_in.sample):,} "
        f"bundled sample questions on average (their tokens {how})"
    )
    return TokenCounts(_resized(base.train, len(train)), _resized(base.eval, len(eval_)), source, counted=False)


# --------------------------------------------------------------------------- entry point


def count_tokens(
    train: tp.Sequence[_Question],
    eval_: tp.Sequence[_Question],
    model: str,
    max_seq_len: int,
    mode: str = "auto",
    chars_per_token: float = CHARS_PER_TOKEN,
) -> TokenCounts:
    """Token counts of the training and evaluation splits.

    Parameters
    ----------
    train, eval_:
        The questions of each split (``launch.questions.data.plan_splits(cfg.data)``, or after the run
        ``launch.questions.data.load_jsonl_questions(EXP/data/train.jsonl)``): anything with ``question``,
        ``answers`` and ``solution``.
    model:
        ``model.name_or_path``: a local directory, or a hub name looked up in this machine's cache.
    max_seq_len:
        ``model.max_seq_len``: longer examples are cut as the jobs cut them.
    mode:
        ``auto`` (the dry run): count with the tokenizer when its ``tokenizer.json`` is on disk and at
        most :data:`TOKENIZER_BYTES_LIMIT`, else estimate; ``count``: count whenever the tokenizer is on
        disk, whatever its size (the report, ``cyberft validate``); ``chars``: always estimate.
    chars_per_token:
        The ratio used when estimating (:data:`CHARS_PER_TOKEN`).

    Returns
    -------
    TokenCounts
        Never raises for a missing or unreadable tokenizer: it estimates and says why in ``source``.
    """
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} -> one of {', '.join(MODES)}")
    if isinstance(train, StandIn) or isinstance(eval_, StandIn):
        return _stood_in(train, eval_, model, max_seq_len, mode, chars_per_token)
    directory = None if mode == "chars" else tokenizer_dir(model)
    if directory is None:
        why = "" if mode == "chars" else "; the tokenizer is not on this machine"
        return _estimated(train, eval_, max_seq_len, chars_per_token, why)
    size = (directory / "tokenizer.json").stat().st_size
    if mode == "auto" and size > TOKENIZER_BYTES_LIMIT:
        why = f"; the {size / 2**20:.1f} MiB tokenizer would slow the dry run, count it with mode='count'"
        return _estimated(train, eval_, max_seq_len, chars_per_token, why)
    try:
        enc = _Encoder(directory)
        return _counted(enc, train, eval_, max_seq_len)
    except ImportError as exc:  # the login node's base install has neither (pyproject: no torch, few packages)
        why = f"; {exc.name or exc} is not installed here (pip install tokenizers jinja2 counts with the tokenizer)"
        return _estimated(train, eval_, max_seq_len, chars_per_token, why)
    except Exception as exc:  # noqa: BLE001 - a tokenizer or template we cannot read: estimate, and say why
        why = f"; the tokenizer could not be used: {type(exc).__name__}: {str(exc)[:80]}"
        return _estimated(train, eval_, max_seq_len, chars_per_token, why)
