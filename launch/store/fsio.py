"""Atomic file writes: a temporary file in the same directory, fsync, rename.

A contract module: ``train/`` imports it too (atomic writes: every file both sides write).

A kill at any moment leaves either the old file or the new one, never half of
one. Every file the project writes goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
import typing as tp
from pathlib import Path


def umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent directories.

    The file gets the usual permissions (0666 less the umask), not mkstemp's
    0600: experiment files on shared storage are read by other jobs and users.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: tp.Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: tp.Iterable[tp.Any]) -> Path:
    """Write one JSON object per line to ``path`` atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> tp.Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
