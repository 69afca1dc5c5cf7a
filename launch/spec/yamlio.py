"""The one YAML reader and writer of configs, profiles and overrides (PyYAML underneath).

A contract module: ``train/`` imports it too (the one YAML reader and writer the config uses).

What it does differently from ``yaml.safe_load``, and why:

* **YAML 1.2 core scalars.** ``true``/``false`` are the only booleans, ``~``/``null`` the only
  nulls; numbers are decimal (``012`` is twelve), ``0o17``, ``0x1f``, and floats with or without a
  dot (``1e-3`` is a number). YAML 1.1's surprises are plain strings: base-60 ``2:00:00`` (which
  1.1 reads as 7200), ``on``/``off``/``yes``/``no`` (booleans in 1.1), ``1_000``, dates. A field
  that wants a number or a boolean then refuses the string with its fix instead of silently
  reading something else.
* **Bounded aliases.** ``&anchor``/``*alias`` may repeat a value, but the tree they expand to is
  counted before it is built (shared nodes counted once per use, in linear time) and refused past
  :data:`MAX_NODES` with the line of the alias, so a ten-line "billion laughs" cannot hang
  validation or fill a message. An alias that contains itself is refused too.
* **Duplicate keys are errors**, with both lines (PyYAML keeps the last one silently: a second
  ``methods:`` would drop methods). Keys merged with ``<<: *base`` may still be overridden.
* **No shared objects.** The loaded tree is rebuilt so that a value repeated through an alias is
  a separate copy at each place: overriding one method's ``resources`` never changes another's.
  (``copy.deepcopy`` would not do: its memo keeps shared objects shared.)
* **Bounded reads.** A file must be a regular file of at most :data:`MAX_FILE_BYTES`.

:func:`dump` writes YAML that this reader and YAML 1.1 readers read back alike (a string such as
``1e3`` or ``yes`` is quoted).
"""

from __future__ import annotations

import os
import re
import stat
import typing as tp
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver, Resolver
from yaml.scanner import Scanner

MAX_NODES = 20_000
"""The most values (scalars, lists and mappings, aliases expanded) one YAML text may hold."""

MAX_DEPTH = 64
"""The deepest nesting of lists and mappings."""

MAX_FILE_BYTES = 1 << 20
"""The largest config or profile file read (1 MiB)."""

_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(ValueError):
    """Why a YAML text cannot be used: one line, with its fix, without the offending value."""


class _Resolver(BaseResolver):
    """YAML 1.2 core schema (plus ``<<`` merge keys)."""


for _tag, _rx, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("merge", r"<<", "<"),
):
    _Resolver.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(rf"^(?:{_rx})$"), list(_first))


class _Constructor(SafeConstructor):
    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = self.construct_scalar(node)
        if text[:2] in ("0o", "0x"):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)  # decimal, leading zeros too (YAML 1.1 read 012 as octal)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[tp.Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML reports it below
                    continue
                if first is not None:
                    raise YamlProblem(
                        f"line {key_node.start_mark.line + 1}: key {_key_text(key)} appears twice in "
                        f"one mapping (first at line {first + 1}) -> keep one: YAML would silently "
                        "use the last"
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _key_text(key: tp.Any) -> str:
    from launch.spec.redact import short

    return short(key, 40)


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)


class _Composer(Composer):
    """Records where each alias is used: PyYAML returns the anchored node itself, losing the line."""

    def __init__(self) -> None:
        super().__init__()
        self.alias_uses: list[tuple[int, Node]] = []

    def compose_node(self, parent: Node | None, index: tp.Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            line = self.peek_event().start_mark.line
            node = super().compose_node(parent, index)
            self.alias_uses.append((line, node))
            return node
        return super().compose_node(parent, index)


class _Loader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


def _size(node: Node, memo: dict[int, int], path: set[int], depth: int) -> int:
    """Values ``node`` expands to (aliases counted at every use; memoised, so linear in the text)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in path:
        raise YamlProblem(
            f"line {node.start_mark.line + 1}: an alias refers to a value that contains it -> write the value out"
        )
    if depth > MAX_DEPTH:
        raise YamlProblem(
            f"line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep -> "
            "write a flat config like configs/smoke.yaml"
        )
    path.add(key)
    n = 1
    if isinstance(node, SequenceNode):
        n += sum(_size(child, memo, path, depth + 1) for child in node.value)
    elif isinstance(node, MappingNode):
        n += sum(_size(k, memo, path, depth + 1) + _size(v, memo, path, depth + 1) for k, v in node.value)
    path.discard(key)
    memo[key] = n
    return n


def _check_size(root: Node, alias_uses: list[tuple[int, Node]]) -> None:
    memo: dict[int, int] = {}
    total = _size(root, memo, set(), 0)
    if total > MAX_NODES:
        biggest = max(alias_uses, key=lambda use: memo.get(id(use[1]), 0), default=None)
        at = (
            f" (the alias at line {biggest[0] + 1} alone expands to {memo[id(biggest[1])]:,})"
            if biggest is not None
            else ""
        )
        raise YamlProblem(
            f"expands to {total:,} values, more than the {MAX_NODES:,} a config may hold{at} -> "
            "write the values out instead of nesting aliases"
        )


def _unshared(value: tp.Any) -> tp.Any:
    """A copy of a loaded tree in which no list or mapping appears twice (aliases copied apart)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def parse(text: str) -> tp.Any:
    """The value of one YAML document; :class:`YamlProblem` (or ``yaml.YAMLError``) when it is unusable."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_size(root, loader.alias_uses)
        return _unshared(loader.construct_document(root))
    finally:
        loader.dispose()


def parse_problem(text: str) -> tuple[tp.Any, str | None]:
    """:func:`parse`, returning ``(value, None)`` or ``(None, why)``; the reason has no value in it."""
    try:
        return parse(text), None
    except YamlProblem as exc:
        return None, str(exc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        detail = " ".join(str(getattr(exc, "problem", None) or exc).split())
        return None, (
            f"{at}{detail} -> fix the syntax there (indent with spaces, not tabs; close every [ and {{; "
            "quote values containing ': ' or ' #')"
        )
    except RecursionError:
        return None, f"nested too deeply to read -> at most {MAX_DEPTH} levels"
    except ValueError as exc:  # a value YAML parses but Python refuses: an integer of 5000 digits
        if "digits" in str(exc):
            return None, "a number too long to read (Python reads at most 4300 digits) -> fix that value"
        return None, f"{' '.join(str(exc).split())} -> fix that value"


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``OSError``/``ValueError`` saying why not.

    A FIFO, a device such as ``/dev/zero`` or a huge file would block or exhaust memory, so the
    file's type and size are checked before it is read, and no more than the limit is read.
    """
    with open(path, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file (a device, pipe or socket)")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"is larger than {max_bytes:,} bytes")
    return data


def read(path: Path, what: str, example: str) -> tuple[tp.Any, str | None]:
    """The parsed YAML file ``path``, or None and why it cannot be used (one line, with the fix).

    ``what`` names the input in the message (``config``, ``profile``); ``example`` is a good file to copy.
    """
    where = f"{what}: {str(path)!r}"
    if not os.path.exists(path) or os.path.isdir(path):  # the callers word these two themselves
        return None, f"{where} cannot be read -> check the path"
    try:
        data = read_bytes(path, MAX_FILE_BYTES)
    except OSError as exc:
        return None, f"{where} cannot be read ({exc.strerror or exc}) -> check that it is a readable file"
    except ValueError as exc:
        return None, f"{where} {exc} -> give a YAML file like {example}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, (
            f"{where} is not valid YAML: not valid UTF-8 at byte offset {exc.start} (line {line}, "
            f"byte 0x{data[exc.start]:02x}) -> re-save the file as UTF-8"
        )
    value, problem = parse_problem(text)
    if problem:
        return None, f"{where} is not valid YAML: {problem}; compare with {example}"
    return value, None


class _Dumper(yaml.SafeDumper):
    """Quotes a string whenever YAML 1.1 *or* 1.2 would read it as something else; writes no anchors."""

    def ignore_aliases(self, data: tp.Any) -> bool:
        return True

    def resolve(self, kind: type, value: tp.Any, implicit: tp.Any) -> str:
        tag = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag == Resolver.DEFAULT_SCALAR_TAG:
            for core, rx in _Resolver.yaml_implicit_resolvers.get(value[:1], []):
                if rx.match(value):
                    return core
        return tag


_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


def _has_line_break(obj: tp.Any) -> bool:
    if isinstance(obj, str):
        return bool(_LINE_BREAKS.search(obj))
    if isinstance(obj, dict):
        return any(_has_line_break(k) or _has_line_break(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return any(map(_has_line_break, obj))
    return False


def dump(obj: tp.Any) -> str:
    """YAML text of plain data (keys in insertion order) that :func:`parse` reads back equal.

    Text is written as UTF-8, except when a string holds a Unicode line break (NEL, U+2028/9):
    PyYAML's emitter writes those raw, and readers fold them, so then everything non-ASCII is escaped.
    """
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=not _has_line_break(obj))
