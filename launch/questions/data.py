"""Multiple-choice question data: load, validate, split, deduplicate, prepare.

A contract module: ``train/`` imports it too (Question and the prepared split the jobs read).

Every dataset is a list of CyberMetric-style records::

    {"question": str, "answers": {"A": str, "B": str, "C": str, "D": str}, "solution": "A".."D"}

read from CyberMetric JSON (``{"questions": [...]}``), JSONL (one record per
line) or a Hugging Face dataset (a ``save_to_disk`` directory or a hub name).
Loading validates every record and raises one :class:`DataError` listing every
problem, each naming the source, the record index (0-based, the position in
the file) and the fix.

The module is standard library only at import time: ``datasets`` and ``tqdm``
are imported inside the functions that need them, so the login node and the
CLI stay fast.

Example
-------
>>> qs = load_questions(DataSource(path="data/sample/cyber_mcq.json"))
>>> train, eval_ = split_questions(qs, 0.2, seed=0)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import typing as tp
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launch.spec.config import LETTERS, DataConfig, DataSource, MethodConfig
from launch.spec.redact import short
from launch.spec.schema import InputError
from launch.spec.yamlio import read_bytes
from launch.store.expdir import DataFiles
from launch.store.fsio import atomic_write_json, atomic_write_jsonl

MAX_DATA_BYTES = 512 << 20
"""The largest data file read (512 MiB; CyberMetric-10000 is about 4 MB). Larger files, and
anything that is not a regular file (a FIFO, ``/dev/zero``), are refused before reading."""

_LETTER_LIST = ", ".join(LETTERS)
_RECORD_SHAPE = '{"question": ..., "answers": {"A": ..., "B": ..., "C": ..., "D": ...}, "solution": "A"}'
_MESSAGE_LINES = 50  # the exception text stays readable; ``problems`` keeps all of them
_UNPARSED = object()  # placeholder for a JSONL line that is not JSON, so record indices stay aligned


@dataclass(frozen=True)
class Question:
    """One multiple-choice question.

    Parameters
    ----------
    question:
        The question text.
    answers:
        The four options, keyed exactly ``"A"`` .. ``"D"``.
    solution:
        The letter of the correct option.
    """

    question: str
    answers: dict[str, str]
    solution: str

    def to_record(self) -> dict:
        """The CyberMetric record ``{"question", "answers", "solution"}``."""
        return {
            "question": self.question,
            "answers": {k: self.answers[k] for k in LETTERS},
            "solution": self.solution,
        }


class DataError(InputError):
    """Every problem found in a dataset (``<source> record <i>: what is wrong -> fix``), raised once."""

    def __init__(self, problems: tp.Sequence[str], source: str = "data") -> None:
        super().__init__(problems, source, max_lines=_MESSAGE_LINES)


@dataclass
class PreparedData:
    """What :func:`prepare_splits` wrote.

    Attributes
    ----------
    train_path, eval_path:
        The JSONL files (CyberMetric records, one per line).
    n_train, n_eval:
        Questions written to each file.
    n_dropped_duplicates:
        Training questions removed by deduplication (eval overlap plus repeats
        inside train; ``data_report.json`` has the two counts separately).
    letter_counts_train, letter_counts_eval:
        Questions per solution letter.
    """

    train_path: Path
    eval_path: Path
    n_train: int
    n_eval: int
    n_dropped_duplicates: int
    letter_counts_train: dict
    letter_counts_eval: dict


# --------------------------------------------------------------------------- reading


def resolve_format(source: DataSource) -> str:
    """The concrete format of ``source``: ``cybermetric``, ``jsonl`` or ``hf``.

    ``auto`` picks by extension: a directory is ``hf``, ``.json`` CyberMetric,
    ``.jsonl`` JSONL, anything else (another extension, a hub name) ``hf``.
    """
    if source.format != "auto":
        return source.format
    p = Path(source.path).expanduser()
    if p.is_dir():
        return "hf"
    suffix = p.suffix.lower()
    if suffix == ".json":
        return "cybermetric"
    if suffix == ".jsonl":
        return "jsonl"
    return "hf"


def _looks_like_path(name: str) -> bool:
    """A hub name is ``name`` or ``org/name``; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".json", ".jsonl"))


def _read_text(path: str, fmt: str) -> str:
    """The UTF-8 text of a data file; :class:`DataError` when it cannot be read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError([f"{path}: file not found -> check the path (relative to {os.getcwd()})"], path)
    if p.is_dir():
        raise DataError(
            [
                f"{path}: is a directory, but format {fmt!r} reads a file -> give the file, "
                "or use format: hf for a directory written by datasets' save_to_disk"
            ],
            path,
        )
    try:
        data = read_bytes(p, MAX_DATA_BYTES)
    except OSError as exc:
        raise DataError(
            [f"{path}: cannot read: {exc.strerror or exc} -> check that it is a file you may read"], path
        ) from None
    except ValueError as exc:  # not a regular file, or too large
        fix = f"give a CyberMetric JSON or JSONL file of at most {MAX_DATA_BYTES >> 20} MiB"
        raise DataError([f"{path}: {exc} -> {fix}"], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            [
                f"{path}: not valid UTF-8 at byte offset {exc.start} (line {line}, byte 0x{data[exc.start]:02x}) "
                "-> re-save the file as UTF-8"
            ],
            path,
        ) from None
    # Editors on Windows like to add a byte-order mark; it is not content.
    return text.removeprefix("\ufeff")


class _Record(dict):
    """A JSON object as read, remembering the keys it gave more than once (JSON keeps the last)."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, tp.Any]]) -> _Record:
    obj = _Record(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def _duplicate_keys(rec: tp.Any, where: str, problems: list[str]) -> None:
    for obj, inside in ((rec, ""), (rec.get("answers"), " in 'answers'")):
        for key in getattr(obj, "duplicates", ()):
            problems.append(
                f"{where}: key {short(key, 40)}{inside} appears twice (JSON keeps the last one silently) -> keep one"
            )


def _cybermetric_records(path: str) -> list[tuple[str, tp.Any]]:
    """``(where, raw record)`` pairs of a CyberMetric JSON file."""
    text = _read_text(path, "cybermetric")
    try:
        obj = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise DataError(
            [
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} "
                "-> fix the syntax (one record per line? use a .jsonl file or format: jsonl)"
            ],
            path,
        ) from None
    except (RecursionError, ValueError) as exc:  # nested too deeply; an integer of 5000 digits
        what = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())
        raise DataError(
            [f'{path}: JSON cannot be read ({what}) -> {_RECORD_SHAPE} records in {{"questions": [...]}}'], path
        ) from None
    shape = 'expected {"questions": [...]}'
    if isinstance(obj, list):
        raise DataError([f'{path}: top level is a list, {shape} -> wrap the list as {{"questions": [...]}}'], path)
    if not isinstance(obj, dict):
        raise DataError(
            [f'{path}: top level is {_kind(obj)}, {shape} -> put the records in {{"questions": [...]}}'], path
        )
    if "questions" not in obj:
        keys = ", ".join(map(_echo, list(obj)[:10])) or "none"
        raise DataError(
            [
                f"{path}: top level has no 'questions' key (keys: {keys}), {shape} -> put the records "
                "under a 'questions' key (JSON Lines, one record per line? use a .jsonl file or format: jsonl)"
            ],
            path,
        )
    records = obj["questions"]
    if not isinstance(records, list):
        raise DataError(
            [
                f"{path}: 'questions' is {_kind(records)}, expected a list of records -> write "
                f'"questions": [{_RECORD_SHAPE}, ...]'
            ],
            path,
        )
    return [(f"{path} record {i}", r) for i, r in enumerate(records)]


def _jsonl_records(path: str, problems: list[str]) -> list[tuple[str, tp.Any]]:
    """``(where, raw record)`` pairs of a JSONL file; lines that are not JSON go to ``problems``."""
    text = _read_text(path, "jsonl")
    out: list[tuple[str, tp.Any]] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends unescaped.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} record {len(out)} (line {lineno})"
        try:
            out.append((where, json.loads(line, object_pairs_hook=_object)))
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON at column {exc.colno}: {exc.msg} -> one JSON object per line")
            out.append((where, _UNPARSED))
        except (RecursionError, ValueError) as exc:  # nested too deeply; an integer of 5000 digits
            what = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())
            problems.append(f"{where}: JSON cannot be read ({what}) -> one record {_RECORD_SHAPE} per line")
            out.append((where, _UNPARSED))
    return out


def _hf_dataset(source: DataSource) -> tp.Any:
    """The ``datasets.Dataset`` for ``source`` (a save_to_disk directory or a hub name)."""
    name = source.path
    p = Path(name).expanduser()
    if p.exists() and not p.is_dir():  # before importing datasets (seconds): a file, a device, a pipe
        raise DataError(
            [
                f"{name}: a {p.suffix or 'extensionless'} file is not a supported format -> use CyberMetric .json, "
                ".jsonl, or a directory written by datasets' save_to_disk"
            ],
            name,
        )
    try:
        import datasets  # lazy: heavy, and only needed for this format
    except ImportError:
        raise DataError(
            [f"{name}: reading Hugging Face datasets needs the 'datasets' package -> pip install datasets"], name
        ) from None
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # datasets raises several types for a bad directory
            raise DataError(
                [
                    f"{name}: not a dataset directory written by save_to_disk ({type(exc).__name__}: {exc}) "
                    "-> give such a directory, or a .json/.jsonl file"
                ],
                name,
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                splits = ", ".join(map(repr, ds)) or "none"
                raise DataError(
                    [f"{name}: no split {source.split!r} (splits: {splits}) -> set split to one of them"], name
                )
            ds = ds[source.split]
        return ds
    if _looks_like_path(name):
        raise DataError([f"{name}: not found -> check the path (relative to {os.getcwd()})"], name)
    try:
        return datasets.load_dataset(name, split=source.split)
    except Exception as exc:  # network, auth, unknown name, unknown split: all surface here
        raise DataError(
            [
                f"{name}: could not load Hugging Face hub dataset (split {source.split!r}): "
                f"{type(exc).__name__}: {exc} -> check the name, the split and network access; offline, save it with "
                "save_to_disk and give that directory"
            ],
            name,
        ) from None


def _hf_records(source: DataSource) -> list[tuple[str, tp.Any]]:
    """``(where, raw record)`` pairs of a Hugging Face dataset."""
    rows = []
    for i, row in enumerate(_hf_dataset(source)):
        answers = row.get("answers") if isinstance(row, dict) else None
        if isinstance(answers, dict):
            # Arrow stores a dict column as one struct for all rows, so a key present in
            # some rows appears as None in the others; those keys are not the record's.
            row = {**row, "answers": {k: v for k, v in answers.items() if k in LETTERS or v is not None}}
        rows.append((f"{source.path} record {i}", row))
    return rows


def _read_records(source: DataSource, problems: list[str]) -> list[tuple[str, tp.Any]]:
    """Raw records of ``source``; unreadable sources raise :class:`DataError`."""
    if not source.path:
        raise DataError(["data path is empty -> give a CyberMetric JSON, a JSONL file or a dataset directory"])
    fmt = resolve_format(source)
    if fmt == "cybermetric":
        records = _cybermetric_records(source.path)
    elif fmt == "jsonl":
        records = _jsonl_records(source.path, problems)
    elif fmt == "hf":
        records = _hf_records(source)
    else:
        raise DataError([f"{source.path}: unknown format {fmt!r} -> auto, cybermetric, jsonl or hf"], source.path)
    if not records:
        raise DataError([f"{source.path}: contains 0 questions -> add at least one record"], source.path)
    return records


# --------------------------------------------------------------------------- validation


def _echo(value: tp.Any) -> str:
    """A value as a data problem echoes it (secrets replaced, cut to about 40 characters)."""
    return short(value, 40)


def _kind(value: tp.Any) -> str:
    """A short description of a value's type for messages."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    return {list: "a list", str: "a string", bool: "a boolean"}.get(type(value), f"a {type(value).__name__}")


def _check_question(rec: Mapping, where: str, problems: list[str]) -> str | None:
    if "question" not in rec:
        problems.append(f"{where}: missing 'question' -> add the question text")
        return None
    q = rec["question"]
    if not isinstance(q, str):
        problems.append(f"{where}: 'question' is {_kind(q)} {_echo(q)}, not text -> write it as a string")
        return None
    if not q.strip():
        problems.append(f"{where}: 'question' is empty -> write the question text")
        return None
    return q


def _check_answers(rec: Mapping, where: str, problems: list[str]) -> dict[str, str] | None:
    if "answers" not in rec:
        problems.append(f'{where}: missing \'answers\' -> add {{"A": ..., "B": ..., "C": ..., "D": ...}}')
        return None
    ans = rec["answers"]
    if not isinstance(ans, Mapping):
        problems.append(
            f"{where}: 'answers' is {_kind(ans)}, expected a mapping -> key the four options by letter: "
            '{"A": ..., "B": ..., "C": ..., "D": ...}'
        )
        return None
    before = len(problems)
    missing = [k for k in LETTERS if k not in ans]
    extra = [k for k in ans if k not in LETTERS]
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(map(_echo, extra[:10]))}" if extra else "",
            )
            if part
        )
        hint = " (use upper-case letters)" if any(str(k).strip().upper() in LETTERS for k in extra) else ""
        problems.append(
            f"{where}: 'answers' must have exactly the keys {_LETTER_LIST} ({detail}){hint} -> CyberMetric questions "
            "have four options: give each of A, B, C, D, and nothing else"
        )
    for k in LETTERS:
        if k not in ans:
            continue
        text = ans[k]
        if not isinstance(text, str):
            problems.append(
                f"{where}: answers[{k!r}] is {_kind(text)} {_echo(text)}, not text -> write the option as a string"
            )
        elif not text.strip():
            problems.append(f"{where}: answers[{k!r}] is empty -> write the option text")
    if len(problems) > before:
        return None
    return {k: ans[k] for k in LETTERS}


def _check_solution(rec: Mapping, where: str, problems: list[str]) -> str | None:
    if "solution" not in rec:
        problems.append(f"{where}: missing 'solution' -> add the letter of the correct option, one of {_LETTER_LIST}")
        return None
    sol = rec["solution"]
    if isinstance(sol, str) and sol in LETTERS:
        return sol
    # Strict on purpose (a silently "fixed" label hides a broken converter), but say the fix.
    if isinstance(sol, str) and sol.strip().upper() in LETTERS:
        fix = f"write {sol.strip().upper()!r}"
    elif isinstance(sol, int) and not isinstance(sol, bool) and 0 <= sol < len(LETTERS):
        fix = f"write the letter, e.g. {LETTERS[sol]!r} if {sol} is a 0-based option index"
    else:
        fix = "give the letter of the correct option"
    problems.append(f"{where}: solution {_echo(sol)} is not one of {_LETTER_LIST} -> {fix}")
    return None


def validate_record(raw: tp.Any, where: str) -> tuple[Question | None, list[str]]:
    """Check one raw record; return the :class:`Question` (or None) and its problems.

    Parameters
    ----------
    raw:
        The parsed record. Extra keys are ignored.
    where:
        Prefix of every problem, e.g. ``data/x.json record 17``.
    """
    if not isinstance(raw, Mapping):
        return None, [
            f"{where}: expected a mapping {_RECORD_SHAPE}, got {_kind(raw)} -> write the record as such a mapping"
        ]
    problems: list[str] = []
    _duplicate_keys(raw, where, problems)
    q = _check_question(raw, where, problems)
    answers = _check_answers(raw, where, problems)
    sol = _check_solution(raw, where, problems)
    if answers is not None and sol is not None:
        _check_distinct(answers, sol, where, problems)
    if problems or q is None or answers is None or sol is None:
        return None, problems
    return Question(question=q, answers=answers, solution=sol), []


def _check_distinct(answers: dict[str, str], sol: str, where: str, problems: list[str]) -> None:
    """The correct option must differ from every other: a model could not pick it, nor be scored."""
    right = normalize_question(answers[sol])
    same = [k for k in LETTERS if k != sol and normalize_question(answers[k]) == right]
    if same:
        problems.append(
            f"{where}: the correct answer {sol} {_echo(answers[sol])} is also option(s) {', '.join(same)} "
            "(compared ignoring case, spacing and end punctuation) -> make every option differ from the "
            "correct one"
        )


def _progress(items: list, desc: str, enabled: bool) -> tp.Iterable:
    """``items`` wrapped in a tqdm bar when enabled (tqdm imported lazily)."""
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety; never fail for it
        return items
    return tqdm(items, desc=desc, unit="q", file=sys.stderr)


def _contradicts(a: Question, b: Question) -> bool:
    """Whether two records of the same question disagree: one marks wrong an option the other marks right.

    Option texts are compared like question texts (``"80"`` == ``"80."``). Shuffled options (the
    same correct text under another letter) agree; so do reworded options (another version of a
    dataset), since neither record then lists the other's correct answer as a wrong one.
    """
    right_a, right_b = normalize_question(a.answers[a.solution]), normalize_question(b.answers[b.solution])
    if right_a == right_b:
        return False
    return right_a in {normalize_question(t) for t in b.answers.values()} or right_b in {
        normalize_question(t) for t in a.answers.values()
    }


def _contradiction(where: str, q: Question, other: str, first: Question) -> str:
    return (
        f"{where}: same question as {other} (compared ignoring case, spacing and end punctuation) but another "
        f"correct answer: {q.solution} {_echo(q.answers[q.solution])} here, {first.solution} "
        f"{_echo(first.answers[first.solution])} there -> one of them is wrong: fix it, or remove one of the two"
    )


def _load(source: DataSource, progress: bool = False) -> tuple[list[Question], list[str], int]:
    """Valid questions, problems and the number of records; raise only when unreadable.

    A question that appears again with the same correct answer is fine (deduplication keeps
    one); when one record marks right what the other marks wrong (:func:`_contradicts`), the
    data contradicts itself, which is a problem.
    """
    problems: list[str] = []
    records = _read_records(source, problems)
    questions: list[Question] = []
    seen: dict[str, list[tuple[int, Question]]] = {}
    for index, (where, raw) in enumerate(_progress(records, f"validating {source.path}", progress)):
        if raw is _UNPARSED:  # already reported by the JSONL reader
            continue
        q, found = validate_record(raw, where)
        problems.extend(found)
        if q is not None:
            questions.append(q)
            earlier = seen.setdefault(normalize_question(q.question), [])
            clash = next(((i, e) for i, e in earlier if _contradicts(e, q)), None)
            if clash is not None:
                problems.append(_contradiction(where, q, f"record {clash[0]}", clash[1]))
            earlier.append((index, q))
    return questions, problems, len(records)


def load_questions(source: DataSource, *, progress: bool = False) -> list[Question]:
    """Load and validate every record of ``source``.

    Parameters
    ----------
    source:
        Path, format and (for Hugging Face datasets) split.
    progress:
        Show a tqdm bar on stderr while validating.

    Raises
    ------
    DataError
        With every problem: unreadable source, bad JSON, bad records, no records.
    """
    questions, problems, _ = _load(source, progress)
    if problems:
        raise DataError(problems, source.path)
    return questions


def load_jsonl_questions(path: str | os.PathLike) -> list[Question]:
    """Read back a JSONL file written by :func:`prepare_splits`."""
    return load_questions(DataSource(path=str(path), format="jsonl"))


# --------------------------------------------------------------------------- split, dedup, counts


def normalize_question(text: str) -> str:
    """Question text as compared for deduplication.

    NFKC, lower-case, whitespace runs collapsed to one space, punctuation and
    spaces stripped at both ends (``"What is X ?"`` == ``"what is x"``).
    """
    text = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_junk(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def letter_counts(questions: tp.Iterable[Question]) -> dict[str, int]:
    """Questions per solution letter, always with all four letters in order."""
    counts = Counter(q.solution for q in questions)
    return {k: counts.get(k, 0) for k in LETTERS}


def eval_size(n: int, eval_fraction: float) -> int:
    """Questions :func:`split_questions` holds out of ``n >= 2``: ``round(n * eval_fraction)`` in ``[1, n - 1]``."""
    return min(max(round(n * eval_fraction), 1), n - 1)


def split_questions(
    questions: tp.Sequence[Question], eval_fraction: float, seed: int
) -> tuple[list[Question], list[Question]]:
    """Hold out ``eval_fraction`` of the questions, deterministically.

    The eval size is ``round(n * eval_fraction)`` clamped to ``[1, n - 1]``. Which
    questions are held out depends only on ``n`` and ``seed`` (``random.Random``
    is independent of hash randomisation); both parts keep the input order.

    Raises
    ------
    ValueError
        When ``eval_fraction`` is not in (0, 1) or there are fewer than 2 questions.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction {eval_fraction} -> a fraction strictly between 0 and 1")
    n = len(questions)
    if n < 2:
        raise ValueError(f"cannot split {n} question(s) into train and eval -> need at least 2")
    n_eval = eval_size(n, eval_fraction)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [q for i, q in enumerate(questions) if i not in held]
    eval_ = [q for i, q in enumerate(questions) if i in held]
    return train, eval_


def _dedup(train: tp.Iterable[Question], eval_: tp.Iterable[Question]) -> tuple[list[Question], int, int]:
    """Kept train, number dropped for eval overlap, number dropped as repeats inside train."""
    in_eval = {normalize_question(q.question) for q in eval_}
    seen: set[str] = set()
    kept: list[Question] = []
    overlap = repeats = 0
    for q in train:
        key = normalize_question(q.question)
        if key in in_eval:
            overlap += 1
        elif key in seen:
            repeats += 1
        else:
            seen.add(key)
            kept.append(q)
    return kept, overlap, repeats


def dedup_train(train: tp.Iterable[Question], eval_: tp.Iterable[Question]) -> tuple[list[Question], int]:
    """Drop training questions that would leak into or repeat in the data.

    A training question is dropped when its normalised text (see
    :func:`normalize_question`) appears in ``eval_``, or when an earlier kept
    training question has the same normalised text (the first one is kept).

    Returns
    -------
    kept, n_dropped
        The kept training questions in input order, and the number dropped for
        both reasons together.
    """
    kept, overlap, repeats = _dedup(train, eval_)
    return kept, overlap + repeats


def _take(questions: list[Question], limit: int | None, seed: int, salt: str) -> list[Question]:
    """At most ``limit`` questions: a seeded random subset, in input order."""
    if limit is None or limit >= len(questions):
        return list(questions)
    order = list(range(len(questions)))
    # A string seed is hashed with SHA-512 by random, so it is stable across runs.
    random.Random(f"{seed}:{salt}").shuffle(order)
    keep = set(order[:limit])
    return [q for i, q in enumerate(questions) if i in keep]


# --------------------------------------------------------------------------- prepare


def _load_sources(cfg: DataConfig, progress: bool) -> tuple[list[Question], list[Question] | None]:
    """Load train and eval (if any), collecting the problems of both before raising."""
    problems: list[str] = []
    loaded: list[list[Question] | None] = []
    for src in (cfg.train, cfg.eval):
        if src is None:
            loaded.append(None)
            continue
        try:
            loaded.append(load_questions(src, progress=progress))
        except DataError as exc:
            problems.extend(exc.problems)
            loaded.append(None)
    train, eval_ = loaded
    if train is not None and eval_ is not None and cfg.eval is not None:
        # Both loaded cleanly, so list positions are record indices.
        in_eval: dict[str, list[tuple[int, Question]]] = {}
        for i, q in enumerate(eval_):
            in_eval.setdefault(normalize_question(q.question), []).append((i, q))
        for i, q in enumerate(train):
            clash = next(
                ((j, e) for j, e in in_eval.get(normalize_question(q.question), []) if _contradicts(e, q)), None
            )
            if clash is not None:
                problems.append(
                    _contradiction(f"{cfg.train.path} record {i}", q, f"{cfg.eval.path} record {clash[0]}", clash[1])
                )
    if problems:
        raise DataError(problems, "data")
    return train or [], eval_


@dataclass
class Split:
    """The train/eval questions an experiment will use, before anything is written.

    Attributes
    ----------
    train, eval:
        The questions, deduplicated and capped.
    overlap, repeats:
        Training questions dropped for appearing in the eval set, and as repeats inside train.
    n_train_all, n_eval_all:
        Counts before the ``max_train``/``max_eval`` caps.
    """

    train: list[Question]
    eval: list[Question]
    overlap: int
    repeats: int
    n_train_all: int
    n_eval_all: int
    aux: dict[str, dict[str, AuxQuestions]] = dataclasses.field(default_factory=dict)
    """``multi_task`` methods' auxiliary tasks (:func:`plan_aux`): method -> task -> questions."""


@dataclass
class AuxQuestions:
    """One auxiliary task's questions as the experiment uses them (:func:`plan_aux`)."""

    questions: list[Question]
    dropped: int
    """Questions dropped because their normalised text is in the eval split."""
    source: dict


def plan_splits(cfg: DataConfig, progress: bool = False) -> Split:
    """Load, validate, split, deduplicate and cap the data; write nothing.

    ``validate``, ``run``, ``submit`` and the dry run call this before anything is created, so a
    data problem stops them all alike (exit 2) and no experiment directory is left behind.

    Raises
    ------
    DataError
        With every problem of both sources, or when nothing is left to train on.
    """
    train, eval_ = _load_sources(cfg, progress)
    if eval_ is None:
        try:
            train, eval_ = split_questions(train, cfg.eval_fraction, cfg.seed)
        except ValueError as exc:
            raise DataError([f"{cfg.train.path}: {exc}"], cfg.train.path) from None
    overlap = repeats = 0
    if cfg.dedup:
        train, overlap, repeats = _dedup(train, eval_)
    if not train:
        raise DataError(
            [
                f"{cfg.train.path}: no training questions left after dropping {overlap} that also appear in the eval "
                "set -> use different eval data, or set data.dedup: false"
            ],
            cfg.train.path,
        )
    n_train_all, n_eval_all = len(train), len(eval_)
    train = _take(train, cfg.max_train, cfg.seed, "max_train")
    eval_ = _take(eval_, cfg.max_eval, cfg.seed, "max_eval")
    return Split(train, eval_, overlap, repeats, n_train_all, n_eval_all)


def declared_sizes(cfg: DataConfig) -> tuple[tuple[int, int] | None, str]:
    """The (training, evaluation) sizes the split would have, from the record counts the config declares.

    For the cost forecast before the data is on this machine (``DataSource.examples``): the split
    :func:`plan_splits` would make of that many records, caps included, no duplicates assumed. Returns
    ``(sizes, what they were planned from)``, or ``(None, why not, with the fix)``.
    """
    n_train = cfg.train.examples
    if n_train is None:
        return None, (
            "data.train.examples: not given -> to forecast without the data, give the file's record count, "
            "e.g. data.train.examples=10000"
        )
    if cfg.eval is None:
        if n_train < 2:
            return None, "data.train.examples: 1 -> at least 2 (the records are split into train and eval)"
        n_eval = eval_size(n_train, cfg.eval_fraction)
        n_train -= n_eval
        planned = f"data.train.examples: {cfg.train.examples:,}, eval_fraction {cfg.eval_fraction:g}"
    elif cfg.eval.examples is None:
        return None, (
            "data.eval.examples: not given -> to forecast without the data, give the record count of both "
            "data.train and data.eval"
        )
    else:
        n_eval = cfg.eval.examples
        planned = f"data.train.examples: {n_train:,}, data.eval.examples: {n_eval:,}"
    train, eval_ = min(n_train, cfg.max_train or n_train), min(n_eval, cfg.max_eval or n_eval)
    caps = [f"{name} {cap:,}" for name, cap in (("max_train", cfg.max_train), ("max_eval", cfg.max_eval)) if cap]
    return (train, eval_), planned + "".join(f", {c}" for c in caps)


def declared_size_notes(cfg: DataConfig, split: Split) -> list[str]:
    """A note for each source whose declared ``examples`` differs from the records it was read with."""
    train_records = split.n_train_all + split.overlap + split.repeats
    counts = [("data.train", cfg.train, train_records + (split.n_eval_all if cfg.eval is None else 0))]
    if cfg.eval is not None:
        counts.append(("data.eval", cfg.eval, split.n_eval_all))
    return [
        f"{where}.examples: {src.examples:,}, but {short(src.path)} holds {records:,} records; the forecast "
        f"counted the data -> set {where}.examples: {records} (or null)"
        for where, src, records in counts
        if src.examples is not None and src.examples != records
    ]


def plan_aux(methods: tp.Sequence[MethodConfig], eval_: tp.Sequence[Question]) -> dict[str, dict[str, AuxQuestions]]:
    """The auxiliary tasks of every ``multi_task`` method, loaded and validated, eval questions dropped.

    A question whose normalised text is in the eval split is dropped (and counted) whatever
    ``data.dedup`` says: an auxiliary task must never train on what the target is scored on.

    Raises
    ------
    DataError
        With every problem of every source, or when a task has no question left.
    """
    in_eval = {normalize_question(q.question) for q in eval_}
    problems: list[str] = []
    out: dict[str, dict[str, AuxQuestions]] = {}
    for m in methods:
        if m.kind != "multi_task":
            continue
        for task in m.multi_task.tasks:
            source = DataSource(path=task.path, format=task.format, split=task.split)
            try:
                loaded = load_questions(source)
            except DataError as exc:
                problems += [f"methods.{m.name}.multi_task.tasks ({task.name}): {p}" for p in exc.problems]
                continue
            kept = [q for q in loaded if normalize_question(q.question) not in in_eval]
            if not kept:
                problems.append(
                    f"methods.{m.name}.multi_task.tasks ({task.name}): every one of its {len(loaded)} questions is "
                    "in the eval split -> an auxiliary task needs questions the evaluation does not ask"
                )
                continue
            out.setdefault(m.name, {})[task.name] = AuxQuestions(
                kept, len(loaded) - len(kept), dataclasses.asdict(source)
            )
    if problems:
        raise DataError(problems, "multi_task")
    return out


def prepare_splits(
    cfg: DataConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    split: Split | None = None,
) -> PreparedData:
    """Write the files the jobs read: the split of :func:`plan_splits` (computed here unless given).

    Writes (atomically) ``out_dir/train.jsonl``, ``out_dir/eval.jsonl`` (CyberMetric
    records, one per line) and ``out_dir/data_report.json`` (sources and counts).

    Parameters
    ----------
    cfg:
        The data section of the experiment config.
    out_dir:
        Directory to write to (created if needed).
    progress:
        Show tqdm bars while validating records.
    split:
        The split already planned from ``cfg`` (the preflight's), so the data is read once.

    Raises
    ------
    DataError
        With every problem of both sources, or when nothing is left to train on.
    """
    files = DataFiles(Path(out_dir))
    s = split if split is not None else plan_splits(cfg, progress)
    prepared = PreparedData(
        train_path=files.train_file,
        eval_path=files.eval_file,
        n_train=len(s.train),
        n_eval=len(s.eval),
        n_dropped_duplicates=s.overlap + s.repeats,
        letter_counts_train=letter_counts(s.train),
        letter_counts_eval=letter_counts(s.eval),
    )
    atomic_write_jsonl(prepared.train_path, (q.to_record() for q in s.train))
    atomic_write_jsonl(prepared.eval_path, (q.to_record() for q in s.eval))
    for method, tasks in s.aux.items():
        for task, aux in tasks.items():
            atomic_write_jsonl(files.aux_file(method, task), (q.to_record() for q in aux.questions))
    report = _report(cfg, prepared, s.overlap, s.repeats, s.n_train_all, s.n_eval_all)
    if s.aux:
        report["aux"] = {
            method: {
                task: {"n": len(a.questions), "n_dropped_eval_overlap": a.dropped, "source": a.source}
                for task, a in tasks.items()
            }
            for method, tasks in s.aux.items()
        }
    atomic_write_json(files.report_file, report)
    return prepared


def _report(cfg: DataConfig, p: PreparedData, overlap: int, repeats: int, n_train_all: int, n_eval_all: int) -> dict:
    """The content of ``data_report.json``."""
    return {
        "train_source": dataclasses.asdict(cfg.train),
        "eval_source": dataclasses.asdict(cfg.eval) if cfg.eval is not None else None,
        "eval_fraction": cfg.eval_fraction if cfg.eval is None else None,
        "seed": cfg.seed,
        "dedup": cfg.dedup,
        "n_train": p.n_train,
        "n_eval": p.n_eval,
        "n_train_before_cap": n_train_all,
        "n_eval_before_cap": n_eval_all,
        "max_train": cfg.max_train,
        "max_eval": cfg.max_eval,
        "n_dropped_duplicates": p.n_dropped_duplicates,
        "n_dropped_eval_overlap": overlap,
        "n_dropped_repeated_in_train": repeats,
        "letter_counts_train": p.letter_counts_train,
        "letter_counts_eval": p.letter_counts_eval,
    }


# --------------------------------------------------------------------------- cyberft data check


def count_duplicates(questions: tp.Iterable[Question]) -> int:
    """Questions whose normalised text already appeared earlier in the list."""
    seen: set[str] = set()
    dups = 0
    for q in questions:
        key = normalize_question(q.question)
        dups += key in seen
        seen.add(key)
    return dups


def check_path(path: str, fmt: str = "auto", split: str = "train", out: tp.TextIO | None = None) -> int:
    """``cyberft data check PATH``: report counts, letters, duplicates and problems.

    Parameters
    ----------
    path, fmt, split:
        The dataset, as in :class:`~launch.spec.config.DataSource`.
    out:
        Where to print; ``None`` means ``sys.stdout`` at call time.

    Returns
    -------
    int
        0 when there is no problem, 2 otherwise (including unreadable data).
    """
    out = sys.stdout if out is None else out
    source = DataSource(path=path, format=fmt, split=split)  # type: ignore[arg-type]
    try:
        questions, problems, n_records = _load(source)
    except DataError as exc:
        print(f"{path}: cannot be read", file=out)
        _print_problems(exc.problems, out)
        return 2
    n = len(questions)
    print(f"{path}: {n_records} records, {n} valid (format {resolve_format(source)})", file=out)
    counts = letter_counts(questions)
    parts = [f"{k} {c} ({100.0 * c / n if n else 0.0:.1f}%)" for k, c in counts.items()]
    print("answer letters: " + ", ".join(parts), file=out)
    print(f"duplicate questions (normalised): {count_duplicates(questions)}", file=out)
    _print_problems(problems, out)
    return 2 if problems else 0


def _print_problems(problems: list[str], out: tp.TextIO) -> None:
    if not problems:
        print("problems: none", file=out)
        return
    print(f"problems ({len(problems)}):", file=out)
    for p in problems:
        print(f"  - {p}", file=out)
