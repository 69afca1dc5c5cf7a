"""The one typed loader: plain data (from YAML or overrides) into documented dataclasses.

A contract module: ``train/`` imports it too (the typed loader under the config (InputError)).

Configs (:mod:`launch.spec.config`) and site profiles (:mod:`launch.site.profiles`) are both dataclasses
whose fields say their type, and for numbers their range, where they are defined::

    r: tp.Annotated[int, Range(1, 65536)] = 16

:func:`build` checks a raw mapping against such a class and collects *every* problem (unknown
keys with a did-you-mean, wrong types, numbers out of range, strings holding a token) instead of
stopping at the first, each naming the field, the value (shortened, secrets never shown) and the
fix. A field with a bad value keeps its default, so later checks still run on a usable object and
no out-of-range number (a LoRA rank of 300 digits) reaches the code that computes with it.

The same rules hold for every input: numbers are numbers (``1e-3`` is one, see :mod:`launch.spec.yamlio`;
a quoted ``"1e-3"`` is text), integers are not floats, booleans are not numbers, ``nan`` and
``inf`` are refused. Standard library only.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing as tp
from dataclasses import dataclass

from launch.spec.redact import scrub, secret_problem, short, token_kind


class InputError(ValueError):
    """Every problem found in one input (config, profile, dataset), raised once.

    The CLI turns it into exit code 2 before anything is started. Each problem line is scrubbed
    of token-shaped text (:func:`launch.spec.redact.scrub`), whoever wrote it.

    Parameters
    ----------
    problems:
        One line each: ``field or record: what is wrong (value) -> fix``.
    source:
        Where the input came from, for the header line.
    max_lines:
        Problems shown in the message (all stay in ``.problems``).
    """

    def __init__(self, problems: tp.Sequence[str], source: str = "input", max_lines: int | None = None) -> None:
        self.problems = [scrub(p) for p in problems]
        self.source = scrub(str(source))
        shown = self.problems[:max_lines]
        lines = "\n".join(f"  - {p}" for p in shown)
        more = len(self.problems) - len(shown)
        tail = f"\n  ... and {more} more (see .problems)" if more else ""
        super().__init__(f"{len(self.problems)} problem(s) in {self.source}:\n{lines}{tail}")


@dataclass(frozen=True)
class Range:
    """The values a number field accepts: ``lo <= x <= hi`` (``lo < x`` / ``x < hi`` when open).

    ``below`` is the fix shown for a value under ``lo`` (default ``at least <lo>``); above ``hi`` the
    fix is ``at most <hi>``. Upper bounds are generous sanity limits: they keep absurd numbers
    (hundreds of digits) away from arithmetic that would overflow or allocate.
    """

    lo: float | None = None
    hi: float | None = None
    below: str = ""
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, where: str, value: float) -> str | None:
        lo, hi = self.lo, self.hi
        if lo is not None and (value < lo or (self.lo_open and value == lo)):
            fix = self.below or (f"more than {lo}" if self.lo_open else f"at least {lo}")
            return f"{where}: {short(value)} -> {fix}"
        if hi is not None and (value > hi or (self.hi_open and value == hi)):
            return f"{where}: {short(value)} -> {'less than' if self.hi_open else 'at most'} {hi}"
        return None


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""Experiment, method and profile names: they name directories, files and Slurm jobs."""


def _is_dataclass_type(t: tp.Any) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


@functools.cache
def field_types(cls: type) -> dict[str, tp.Any]:
    """``{field: type}`` of a dataclass, ``Annotated`` ranges kept."""
    return tp.get_type_hints(cls, include_extras=True)


def type_name(t: tp.Any) -> str:
    """How a field's type is written in messages (``'full_sft' | 'lora'``, ``list of str``)."""
    origin = tp.get_origin(t)
    if origin is tp.Annotated:
        return type_name(tp.get_args(t)[0])
    if origin is tp.Literal:
        return " | ".join(repr(a) for a in tp.get_args(t))
    if origin in (tp.Union, types.UnionType):
        return " | ".join(type_name(a) for a in tp.get_args(t))
    if origin is list:
        return f"list of {type_name(tp.get_args(t)[0])}"
    if t is type(None):
        return "null"
    if _is_dataclass_type(t):
        return "mapping"
    return getattr(t, "__name__", str(t))


def key_label(key: tp.Any) -> str:
    """A mapping key as a message shows it: text as is (cut), anything else or a token via :func:`short`."""
    if isinstance(key, str) and len(key) <= 60 and not token_kind(key) and key.isprintable():
        return key
    return short(key, 40)


def _item_label(where: str, i: int, value: tp.Any) -> str:
    """``methods[1] (lora)`` for a list item that has a plain name, ``methods[1]`` otherwise."""
    name = value.get("name") if isinstance(value, dict) else None
    if isinstance(name, str) and len(name) <= 100 and NAME_RE.fullmatch(name):
        return f"{where}[{i}] ({name})"
    return f"{where}[{i}]"


def _got(value: tp.Any) -> str:
    return f"got {type(value).__name__} {short(value)}"


def convert(value: tp.Any, t: tp.Any, where: str, problems: list[str]) -> tp.Any:
    """``value`` checked against type ``t``; appends a problem and returns None when it does not fit."""
    origin = tp.get_origin(t)
    if origin is tp.Annotated:
        base, *extras = tp.get_args(t)
        converted = convert(value, base, where, problems)
        for rule in extras:
            if isinstance(rule, Range) and converted is not None:
                problem = rule.problem(where, converted)
                if problem:
                    problems.append(problem)
                    return None
        return converted
    if origin in (tp.Union, types.UnionType):
        args = tp.get_args(t)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return convert(value, inner[0], where, problems)
        return _union(value, inner, where, problems)
    if origin is tp.Literal:
        return _literal(value, tp.get_args(t), where, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, {_got(value)} -> write it as a YAML list")
            return None
        (item_t,) = tp.get_args(t)
        items = [convert(v, item_t, _item_label(where, i, v), problems) for i, v in enumerate(value)]
        return [v for v in items if v is not None]
    if origin is dict:
        return _mapping(value, tp.get_args(t)[1], where, problems)
    if _is_dataclass_type(t):
        if not isinstance(value, dict):
            keys = ", ".join(f.name for f in dataclasses.fields(t))
            problems.append(
                f"{where}: expected a mapping of {t.__name__} fields, {_got(value)} -> write it as "
                f"`key: value` lines indented under {where.rsplit('.', 1)[-1]}: (keys: {keys})"
            )
            return None
        return build(t, value, where, problems)
    if t is tp.Any:
        return value
    return _scalar(value, t, where, problems)


def _union(value: tp.Any, alternatives: list[tp.Any], where: str, problems: list[str]) -> tp.Any:
    """``value`` as the first of ``alternatives`` it fits (e.g. ``'all-linear'`` or a list of str).

    When it fits none: a value of an alternative's shape (a list where a list may go) gets that
    alternative's own problems, which name the bad item; anything else one line saying what the
    field takes, what it got and how to write it.
    """
    tried = []
    for alternative in alternatives:
        trial: list[str] = []
        converted = convert(value, alternative, where, trial)
        if not trial:
            return converted
        tried.append((alternative, trial))
    for alternative, trial in tried:
        if _shape(alternative) is not None and isinstance(value, _shape(alternative)):
            problems.extend(trial)
            return None
    expected = " or ".join(_expected(a) for a in alternatives)
    got = "null" if value is None else f"{_value_kind(value)} {short(value)}"
    problems.append(f"{where}: expected {expected}, got {got} -> {_union_fix(value, alternatives)}")
    return None


def _shape(t: tp.Any) -> type | None:
    """The container a value of type ``t`` is (list or dict), None for a scalar or a choice of words."""
    origin = tp.get_origin(t)
    if origin is tp.Annotated:
        return _shape(tp.get_args(t)[0])
    if origin is list:
        return list
    if origin is dict or _is_dataclass_type(t):
        return dict
    return None


def _expected(t: tp.Any) -> str:
    """One alternative of a union as a message names it: ``'all-linear'``, ``a list of str``, ``a mapping``."""
    origin = tp.get_origin(t)
    if origin is tp.Annotated:
        return _expected(tp.get_args(t)[0])
    if origin is tp.Literal:
        return " or ".join(repr(a) for a in tp.get_args(t))
    if origin is list or origin is dict or _is_dataclass_type(t):
        return f"a {type_name(t)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, type_name(t))


def _value_kind(value: tp.Any) -> str:
    """What a value is, in a message's words: ``a mapping``, ``a list``, ``a string``..."""
    if isinstance(value, dict):
        return "a mapping"
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _union_fix(value: tp.Any, alternatives: list[tp.Any]) -> str:
    """The fix for a value that fits no alternative: the close spelling of a word, else how to write each."""
    words = [a for t in alternatives if tp.get_origin(t) is tp.Literal for a in tp.get_args(t)]
    if isinstance(value, str):
        hint = difflib.get_close_matches(value[:100], [str(w) for w in words], n=1)
        if hint:
            return f"did you mean {hint[0]!r}?"
    ways = [" or ".join(repr(w) for w in words)] if words else []
    for t in alternatives:
        shape = _shape(t)
        if shape is list:
            ways.append("a YAML list such as [a, b] (or one `- a` line per item)")
        elif shape is dict:
            ways.append("`key: value` lines indented under the field")
        elif tp.get_origin(t) is not tp.Literal:
            ways.append(_expected(t))
    fix = "write " + ", or ".join(ways)
    if isinstance(value, dict) and dict not in map(_shape, alternatives):
        fix += ", not `key: value` lines"  # a mapping where a list or a word goes
    return fix


OFF_WORDS = ("disabled", "none", "off")
"""How a choice of words says "nothing" (W&B's ``mode: disabled``, ``backend: none``), in order of preference."""

OFF_LIKE = frozenset({"off", "no", "none", "null", "false", "0", "n", "disable", "disabled", "nothing", ""})
"""Values (lower-cased text) that mean "off": one of them where the choices have a word for it gets that word
as the fix, not the closest spelling (``off`` is not a misspelt ``offline``). YAML 1.1 readers and the
overrides give ``false``, ``0`` or null for some of them, so those count too."""


def _off_like(value: tp.Any) -> bool:
    if value is None or value is False or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return True
    return isinstance(value, str) and value.strip().lower() in OFF_LIKE


def _literal(value: tp.Any, allowed: tuple, where: str, problems: list[str]) -> tp.Any:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and value in allowed:
        return value
    off = next((w for w in OFF_WORDS if w in allowed), None) if _off_like(value) else None
    hint = [off] if off else difflib.get_close_matches(str(value)[:100], [str(a) for a in allowed], n=1)
    fix = f"did you mean {hint[0]!r}?" if hint else f"use one of {', '.join(map(repr, allowed))}"
    if off:
        fix += f" (this field's word for off; the others: {', '.join(repr(a) for a in allowed if a != off)})"
    problems.append(f"{where}: {short(value)} is not allowed -> {fix}")
    return None


def _mapping(value: tp.Any, value_t: tp.Any, where: str, problems: list[str]) -> dict | None:
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, {_got(value)} -> write NAME: value pairs, or {{}} for none")
        return None
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            problems.append(f"{where}: key {short(key)} is not text -> quote it")
            continue
        converted = convert(item, value_t, f"{where}.{key_label(key)}", problems)
        if converted is not None or item is None:
            out[key] = converted
    return out


def _scalar(value: tp.Any, t: tp.Any, where: str, problems: list[str]) -> tp.Any:
    if t is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: expected true or false, {_got(value)} -> write true or false")
        return None
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: expected an integer, {_got(value)} -> write a whole number")
        return None
    if t is float:
        return _float(value, where, problems)
    if t is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, {_got(value)} -> quote it")
            return None
        problem = secret_problem(where, value)
        if problem:  # the value is dropped: it must not reach a message, a file or the dry run
            problems.append(problem)
            return None
        return value
    raise TypeError(f"unsupported schema type {t!r} at {where}")  # a bug in the schema, not user input


def _float(value: tp.Any, where: str, problems: list[str]) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if math.isfinite(number):
            return number
        # nan and inf pass every range check (nan < 0 is false), so they are refused here.
        problems.append(f"{where}: expected a finite number, {_got(value)} -> write a number such as 2e-4 or 0.1")
        return None
    problems.append(f"{where}: expected a number, {_got(value)} -> write a number such as 2e-4 or 0.1 (unquoted)")
    return None


def build(cls: type, raw: dict, where: str, problems: list[str]) -> tp.Any:
    """Build dataclass ``cls`` from ``raw``, reporting unknown keys with a did-you-mean."""
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        label = key_label(key)
        path = f"{where}.{label}" if where else label
        if key not in hints:
            hint = difflib.get_close_matches(str(key)[:100], names, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"known keys: {', '.join(names)}"
            problems.append(f"{path}: unknown key -> {fix}")
            continue
        before = len(problems)
        converted = convert(value, hints[key], path, problems)
        # A bad scalar keeps its default so later checks still run; nested
        # mappings and lists come back with their own bad fields defaulted.
        if converted is not None or len(problems) == before:
            kwargs[key] = converted
    return cls(**kwargs)
