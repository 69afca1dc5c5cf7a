"""Read back what an offline W&B run logged, without a network or a server.

wandb 0.31 writes an offline run as ``<dir>/wandb/offline-run-<time>-<id>/``
holding ``run-<id>.wandb`` (a LevelDB-style transaction log of protobuf
``Record`` messages) and ``files/`` (tables as plain JSON under
``files/media/table/``). It writes no ``wandb-summary.json`` or
``config.yaml`` in offline mode, and the old Python reader
(``wandb.sdk.internal.datastore``) is gone, so we parse the log ourselves.

Log format
----------
* File header, 7 bytes ``<4sHB``: ``b":W&B"``, ``0xBEE1``, version ``0``.
* The file is a sequence of 32 KiB blocks (the header sits at the start of the
  first one). A record is split into chunks that never cross a block; each
  chunk has a 7-byte header ``<IHB`` (crc32, length, type) with type
  1 full / 2 first / 3 middle / 4 last. A block tail shorter than 7 bytes is
  zero padding.

Only the standard library is imported at module level; the protobuf class
comes from ``wandb`` when :func:`read_run` is called.
"""

from __future__ import annotations

import json
import struct
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b":W&B"
MAGIC_IDENT = 0xBEE1
BLOCK_SIZE = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class OfflineLogError(ValueError):
    """The ``.wandb`` file is not a W&B transaction log we understand."""


@dataclass
class OfflineRun:
    """Everything one offline run logged.

    Attributes
    ----------
    run_id, name, group, job_type:
        From the run record (``name`` is the display name).
    config:
        The run config (user keys only; W&B's internal ``_wandb`` key dropped).
    history:
        One dict per logged row, in order, each with ``_step``.
    summary:
        The final summary (later updates win, removals applied).
    tables:
        Table key (``eval/samples``) -> ``{"columns": [...], "data": [...]}``,
        the last table logged under that key.
    files:
        Paths (relative to ``files/``) of every file in the run's ``files/``.
    tags:
        The run's tags.
    charts:
        Chart key -> its W&B panel config (``wandb.plot.scatter`` and the like: a chart the UI draws
        from the table logged as ``<key>_table``), from the config's ``_wandb.visualize``.
    path:
        The run directory.
    """

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    charts: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None


# --------------------------------------------------------------------------- locating runs


def find_runs(wandb_dir: Path) -> list[Path]:
    """The ``offline-run-*`` directories under ``wandb_dir`` or ``wandb_dir/wandb``.

    Parameters
    ----------
    wandb_dir:
        The ``dir`` given to ``wandb.init`` (W&B adds a ``wandb/`` level) or that
        ``wandb/`` directory itself.

    Returns
    -------
    list of Path
        Sorted by name, which is by start time (``offline-run-YYYYMMDD_HHMMSS-id``).
        The ``latest-run`` symlink is not listed, so no run appears twice.
    """
    wandb_dir = Path(wandb_dir)
    found: set[Path] = set()
    for base in (wandb_dir, wandb_dir / "wandb"):
        if base.is_dir():
            found.update(p for p in base.glob("offline-run-*") if p.is_dir() and not p.is_symlink())
    return sorted(found, key=lambda p: p.name)


# --------------------------------------------------------------------------- the log


def iter_record_bytes(data: bytes) -> tp.Iterator[bytes]:
    """Yield the serialized records of a ``.wandb`` log.

    Parameters
    ----------
    data:
        The whole file.

    Raises
    ------
    OfflineLogError
        Bad file header or a chunk sequence that makes no sense.

    Notes
    -----
    A truncated tail (a run killed mid-write) ends the iteration quietly: the
    records before it are still good, and that is what a reader wants.
    """
    if len(data) < FILE_HEADER.size:
        raise OfflineLogError("file shorter than the 7-byte W&B header")
    magic, ident, version = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or ident != MAGIC_IDENT or version != 0:
        raise OfflineLogError(f"not a W&B log: header {magic!r} {ident:#x} v{version}")
    pos = FILE_HEADER.size
    pending: list[bytes] | None = None
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            pos += left_in_block  # zero padding at the end of a block
            continue
        _crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        start = pos + CHUNK_HEADER.size
        if kind == 0 and length == 0:
            pos += left_in_block  # pre-allocated / padded rest of the block
            continue
        if start + length > len(data):
            return  # truncated tail
        chunk = data[start : start + length]
        pos = start + length
        if kind == FULL:
            pending = None
            yield chunk
        elif kind == FIRST:
            pending = [chunk]
        elif kind == MIDDLE and pending is not None:
            pending.append(chunk)
        elif kind == LAST and pending is not None:
            pending.append(chunk)
            yield b"".join(pending)
            pending = None
        else:
            raise OfflineLogError(f"unexpected chunk type {kind} at byte {pos - length - CHUNK_HEADER.size}")


def _record_class() -> type:
    # Lazy: importing wandb costs ~0.6 s and the login node may not need it.
    from wandb.proto import wandb_internal_pb2

    return wandb_internal_pb2.Record


def iter_records(log_path: Path) -> tp.Iterator[tp.Any]:
    """Yield the parsed ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file."""
    record_cls = _record_class()
    for raw in iter_record_bytes(Path(log_path).read_bytes()):
        rec = record_cls()
        rec.ParseFromString(raw)
        yield rec


# --------------------------------------------------------------------------- values


def _key_path(item: tp.Any) -> list[str]:
    """``["a", "b"]`` for a nested key, ``["a"]`` for a plain one."""
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _set_path(target: dict, path: list[str], value: tp.Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _del_path(target: dict, path: list[str]) -> None:
    node: tp.Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _loads(text: str) -> tp.Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # wandb writes NaN/Infinity, which json.loads accepts; anything else
        # unreadable is kept as text rather than losing the row.
        return text


def _history_value(item: tp.Any) -> tp.Any:
    """A history item's value: the typed oneof when set, else ``value_json``."""
    which = item.WhichOneof("value")
    if which is None:
        return _loads(item.value_json)
    if which == "none":
        return None
    if which == "json":
        return _loads(item.json)
    return getattr(item, which)


def _apply_updates(target: dict, record: tp.Any) -> None:
    """Apply a ConfigRecord/SummaryRecord (``update`` then ``remove``) to ``target``."""
    for item in record.update:
        _set_path(target, _key_path(item), _loads(item.value_json))
    for item in record.remove:
        _del_path(target, _key_path(item))


def _history_row(record: tp.Any) -> dict:
    row: dict = {}
    for item in record.item:
        _set_path(row, _key_path(item), _history_value(item))
    if "_step" not in row and record.HasField("step"):
        row["_step"] = record.step.num
    return row


# --------------------------------------------------------------------------- the run


def _find_log(run_dir: Path) -> Path:
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    return logs[0]


def _load_tables(files_dir: Path, summary: dict) -> dict[str, dict]:
    """Table JSON files keyed by their logged key.

    The summary holds, per table key, a reference ``{"_type": "table-file",
    "path": "media/table/...json"}`` to the last one logged; other tables are
    recovered from the file layout ``media/table/<key>_<step>_<hash>.table.json``.
    """
    tables: dict[str, dict] = {}
    table_dir = files_dir / "media" / "table"
    if table_dir.is_dir():
        # Sort by step so that the last one logged under a key wins.
        def step_of(p: Path) -> int:
            parts = p.name[: -len(".table.json")].rsplit("_", 2)
            return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1

        for path in sorted(table_dir.rglob("*.table.json"), key=step_of):
            rel = path.relative_to(table_dir).as_posix()
            key = rel[: -len(".table.json")].rsplit("_", 2)[0]
            tables[key] = _read_table(path)
    for key, ref in _flatten(summary):
        if isinstance(ref, dict) and ref.get("_type") == "table-file" and ref.get("path"):
            path = files_dir / ref["path"]
            if path.is_file():
                tables[key] = _read_table(path)
    return tables


def _flatten(d: dict, prefix: str = "") -> tp.Iterator[tuple[str, tp.Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        yield key, v
        if isinstance(v, dict) and v.get("_type") is None:
            yield from _flatten(v, key + "/")


def _read_table(path: Path) -> dict:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {"columns": list(raw.get("columns", [])), "data": list(raw.get("data", []))}


def merged(runs: tp.Sequence[OfflineRun]) -> OfflineRun:
    """The runs of one run id applied in start order, later keys winning: what a resumed run shows.

    ``wandb sync`` uploads the directories of one run one after another in start order (wandb-core's
    ``RunSyncOperation.initAndPlan``, ``core/internal/runsync/runsyncoperation.go``; the symbol is in
    0.31's ``wandb-core``), and a run resumed online starts from the server's config and summary
    (``core/internal/runbranch/resume.go``). Whether the server keeps the first directory's summary
    keys when the second is synced (sync sets no resume mode) was not verified here: no W&B server.
    ``runs`` must be in start order (:func:`find_runs` sorts by the start time in the name).
    """
    out = OfflineRun()
    for run in runs:
        out.run_id, out.name = run.run_id or out.run_id, run.name or out.name
        out.group, out.job_type = run.group or out.group, run.job_type or out.job_type
        out.tags = run.tags or out.tags
        out.config.update(run.config)
        out.summary.update(run.summary)
        out.history += run.history
        out.tables.update(run.tables)
    return out


def read_run(run_dir: Path) -> OfflineRun:
    """Parse one offline run directory.

    Parameters
    ----------
    run_dir:
        An ``offline-run-*`` directory (see :func:`find_runs`).

    Returns
    -------
    OfflineRun
        Config, history, summary, tables and file list as logged.
    """
    run_dir = Path(run_dir)
    out = OfflineRun(path=run_dir)
    for rec in iter_records(_find_log(run_dir)):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.run_id = r.run_id or out.run_id
            out.name = r.display_name or out.name
            out.group = r.run_group or out.group
            out.job_type = r.job_type or out.job_type
            out.tags = list(r.tags) or out.tags
            _apply_updates(out.config, r.config)
            _apply_updates(out.summary, r.summary)
        elif kind == "config":
            _apply_updates(out.config, rec.config)
        elif kind == "history":
            out.history.append(_history_row(rec.history))
        elif kind == "summary":
            _apply_updates(out.summary, rec.summary)
    internal = out.config.pop("_wandb", None)  # W&B's own bookkeeping, not the user's config
    if isinstance(internal, dict) and isinstance(internal.get("visualize"), dict):
        out.charts = {k: v.get("panel_config", v) for k, v in internal["visualize"].items() if isinstance(v, dict)}
    files_dir = run_dir / "files"
    if files_dir.is_dir():
        out.files = sorted(p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*") if p.is_file())
    out.tables = _load_tables(files_dir, out.summary)
    return out
