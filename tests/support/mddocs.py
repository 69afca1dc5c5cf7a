"""The README's and ``docs/``'s Markdown, read as ``tests/test_docs.py`` checks it (the rules: docs/README.md).

Only the standard library: fenced blocks, the commands in shell blocks with their markers, inline code,
links and GitHub's heading anchors.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL = ("bash", "sh", "shell", "console")
LANGUAGES = (*SHELL, "text", "yaml", "python", "json")
REASONS = ("slurm", "gpu", "data", "network", "experiment")
"""What a marked command needs that the docs test does not have (``# needs: slurm, data``)."""

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")
_MARKER = re.compile(
    r"^# (?:(?P<long>long)(?:, (?=needs:))?)?(?:needs: (?P<needs>[a-z]+(?:, [a-z]+)*))?(?: \((?P<note>.+)\))?$"
)
_MARKER_LIKE = re.compile(r"^#\s*(needs?|long|requires?|slow|skip|marks?)\b", re.IGNORECASE)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
_INLINE = re.compile(r"(`+)(?P<code>.+?)\1", re.DOTALL)


def doc_files() -> list[Path]:
    """The README and every page under ``docs/``."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    """``path`` relative to the checkout (as written when it lies elsewhere)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@dataclasses.dataclass
class Block:
    """One fenced block: its language (the info string's first word), first body line, and body lines."""

    path: Path
    line: int
    lang: str
    lines: list[str]


@dataclasses.dataclass
class Command:
    """One command of a shell block; ``needs``/``long`` come from the marker lines above it."""

    path: Path
    line: int
    text: str
    needs: tuple[str, ...] = ()
    long: bool = False

    @property
    def marked(self) -> bool:
        return self.long or bool(self.needs)

    @property
    def where(self) -> str:
        return f"{rel(self.path)}:{self.line}"

    def argv(self) -> list[str]:
        """The words of the command, as bash would split them (a trailing comment dropped)."""
        return shlex.split(self.text, comments=True)


def parse_marker(line: str) -> tuple[bool, tuple[str, ...]] | None:
    """``(long, needs)`` of a marker comment line; None when the line is not a well-formed marker."""
    m = _MARKER.match(line.strip())
    if not m or not (m["long"] or m["needs"]):
        return None
    needs = tuple(m["needs"].split(", ")) if m["needs"] else ()
    if any(r not in REASONS for r in needs):
        return None
    return bool(m["long"]), needs


def looks_like_marker(line: str) -> bool:
    """A comment line that starts like a marker (then it must parse as one)."""
    return bool(_MARKER_LIKE.match(line.strip()))


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file (fences inside list items included)."""
    found, current, fence = [], None, ""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if current is None:
            if m:
                fence, indent = m["fence"], len(m["indent"])
                current = Block(path, n + 1, m["info"].strip().split(" ")[0], [])
        elif m and m["fence"].startswith(fence) and not m["info"].strip():
            found.append(current)
            current = None
        else:
            current.lines.append(line[indent:] if line[:indent].strip() == "" else line)
    assert current is None, f"{rel(path)}: a fenced block opened at line {current.line - 1} is never closed"
    return found


def prose(path: Path) -> str:
    """The file without its fenced blocks (each body line blanked, so line numbers stay)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for b in blocks(path):
        for i in range(b.line - 2, b.line + len(b.lines)):
            lines[i] = ""
    return "\n".join(lines)


def commands(block: Block) -> tuple[list[Command], list[str]]:
    """The commands of a shell block with their markers, and the block's marker problems."""
    cmds, problems = [], []
    long, needs, marker_line, used = False, (), 0, True
    pending = ""
    for i, raw in enumerate(block.lines):
        n = block.line + i
        line = raw.strip()
        if line.startswith("$ "):  # console style: the prompt is not part of the command
            line = line[2:]
        if not line:
            if marker_line and not used:
                problems.append(f"{rel(block.path)}:{marker_line}: a marker with no command under it")
            long, needs, marker_line, used = False, (), 0, True
            continue
        if line.startswith("#") and not pending:
            if looks_like_marker(line):
                parsed = parse_marker(line)
                if parsed is None:
                    problems.append(
                        f"{rel(block.path)}:{n}: {line!r} is not a marker: write '# long', '# needs: REASON[, ...]' "
                        f"or both ('# long, needs: data'), REASON one of {', '.join(REASONS)}, an optional '(note)'"
                    )
                    continue
                if marker_line and not used:
                    long, needs = long or parsed[0], needs + parsed[1]
                else:
                    long, needs = parsed
                marker_line, used = n, False
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        cmds.append(Command(block.path, n, pending + line, needs, long))
        pending, used = "", True
    if marker_line and not used:
        problems.append(f"{rel(block.path)}:{marker_line}: a marker with no command under it")
    return cmds, problems


def paragraphs(path: Path) -> tp.Iterator[tuple[int, str]]:
    """``(first line, text)`` of each paragraph outside fenced blocks (a table is one paragraph)."""
    first, lines = 0, []
    for n, line in enumerate([*prose(path).splitlines(), ""], 1):
        if line.strip():
            first, lines = first or n, [*lines, line]
        elif lines:
            yield first, "\n".join(lines)
            first, lines = 0, []


def _line_of(first: int, text: str, pos: int) -> int:
    return first + text.count("\n", 0, pos)


def inline_code(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of every inline code span outside fenced blocks, wrapped onto one line; in a
    table, ``\\|`` is read as ``|``."""
    out = []
    for first, text in paragraphs(path):
        for m in _INLINE.finditer(text):
            code = re.sub(r"\s*\n\s*", " ", m["code"]).strip().replace("\\|", "|")
            out.append((_line_of(first, text, m.start()), code))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown link outside code (its text may wrap)."""
    out = []
    for first, text in paragraphs(path):
        text = _INLINE.sub(lambda m: "x" * len(m[0].replace("\n", "")) + "\n" * m[0].count("\n"), text)
        out += [(_line_of(first, text, m.start()), m["target"]) for m in _LINK.finditer(text)]
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, without punctuation, spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        m = re.match(r"^#{1,6} +(.+?) *#*$", line)
        if not m:
            continue
        s = slug(m[1])
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def cyberft_mentions(text: str) -> list[list[str]]:
    """The words of each ``cyberft ...`` in a piece of text (a command line or an inline span).

    Optional parts in brackets, ``A|B`` alternatives of a value and ``...`` are written loosely in prose:
    brackets are dropped and each word kept as written."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    out = []
    for i, w in enumerate(words):
        if w == "cyberft":
            out.append([x.strip("[]()") for x in words[i + 1 :]])
    return out


def walk_parser(parser: tp.Any, words: tp.Sequence[str]) -> tuple[list[str], list[str]]:
    """The command path ``words`` name, and the problems with their commands and flags.

    A placeholder where a command would be (``COMMAND``, ``<command>``) ends the check; so do alternatives
    (``status|logs|cancel``), whose flags are not one command's."""
    import argparse

    path, problems = [], []
    for w in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if w.startswith("-"):
            flag = w.split("=", 1)[0]
            if flag not in parser._option_string_actions:
                known = sorted(s for s in parser._option_string_actions if s.startswith("--"))
                problems.append(f"cyberft {' '.join(path)}: no flag {flag} (it has: {', '.join(known)})")
        elif subs:
            choices = subs[0].choices
            if w.isupper() or w.startswith("<") or w == "...":
                return path, problems
            if "|" in w and all(a in choices for a in w.split("|")):
                return path + [w], problems
            if w not in choices:
                problems.append(f"cyberft {' '.join(path)}: no command {w!r} (it has: {', '.join(choices)})")
                return path, problems
            parser = choices[w]
            path.append(w)
    return path, problems
