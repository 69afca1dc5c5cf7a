"""The layer rules of cyberft, checked from the source. Exit 0 with ``layers OK``, 1 listing every violation.

Run from the repository root (``make lint`` does)::

    python tools/check_layers.py [ROOT] [--no-imports]

It reads the code with :mod:`ast` and imports nothing from the project itself; rule 6
imports each ``launch`` module in a child process (``--no-imports`` skips it).

1. ``train/`` imports from ``launch/`` only the contract modules (:data:`CONTRACT`, each with its reason).
2. Only ``launch/jobs.py`` (the handover to the compute side) and ``launch/cli.py`` (``tiny-model``,
   ``import-gguf``) import ``train/``.
3. No import cycle among the modules of ``launch/`` and ``train/``, counting imports inside functions,
   imports for type checking only, and module names given as strings (importlib targets such as
   ``launch.jobs.ENTRYPOINTS``).
4. The names of the files and folders of an experiment directory are spelled only in
   ``launch/store/expdir.py``: in ``launch/``, ``train/``, ``bench/`` and the tests' helpers
   (``tests/support/``, ``tests/conftest.py``), no string constant is one of :data:`EXPERIMENT_FILES`,
   and none of :data:`EXPERIMENT_FOLDERS` is joined onto a path with ``/``.
5. No ``train/`` module is over :data:`MAX_TRAIN_LINES` lines.
6. Every ``launch`` module (all of them, found on disk, in every sub-package) imports with :data:`HEAVY`
   unimportable: the login node has none of them.
7. A ``launch`` module's docstring says "contract module" exactly when :data:`CONTRACT` lists it, so the
   file says to its reader what this check enforces.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import typing as tp
from dataclasses import dataclass
from pathlib import Path

CONTRACT = {
    "launch.spec.config": "the experiment's schema: both sides read the same typed config",
    "launch.spec.schema": "the typed loader under the config (InputError)",
    "launch.spec.yamlio": "the one YAML reader and writer the config uses",
    "launch.spec.redact": "the one secret detector: W&B tracking scrubs with it",
    "launch.questions.data": "Question and the prepared split the jobs read",
    "launch.store.fsio": "atomic writes: every file both sides write",
    "launch.store.expdir": "the experiment directory: every path and record both sides share",
    "launch.results.stats": "the Wilson interval an evaluation result carries",
    "launch.spec.sweep": "a sweep's cells: a job finds its cell's seed and settings from its address",
    "launch.site.gpus": "the GPU-binding check every rank runs before touching CUDA (standard library only)",
    "launch.questions.prompting": "the one prompt template: the jobs build token ids with it, the forecast counts them",
}
"""What ``train/`` may import from ``launch/``, and why each is shared rather than login-side."""

LISTED = re.compile(r"^ +(★)? *(\w+)\.py ", re.MULTILINE)
"""A module's line in a sub-package's listing: ``    ★ config.py  what it is for`` (★: a contract module)."""

CONTRACT_MARK = re.compile(r"\bcontract module\b", re.IGNORECASE)
"""How a contract module says so in its docstring (rule 7), so a reader of the file sees it too."""

HANDOVER = {"launch/jobs.py", "launch/cli.py"}
"""The only ``launch`` files that may import ``train/``."""

OWNER = "launch/store/expdir.py"

EXPERIMENT_FILES = frozenset(
    {
        "manifest.json",
        "config.yaml",
        "profile.yaml",
        "forecast.json",
        "metrics.json",
        "progress.json",
        "summary.json",
        "report.md",
        "report.html",
        "chart.png",
        "data_report.json",
        "train.jsonl",
        "eval.jsonl",
        "shots.jsonl",
        "head.safetensors",
    }
)
"""File names of an experiment directory: a string constant equal to one is a violation."""

EXPERIMENT_FOLDERS = frozenset(
    {"methods", "cells", "eval", "jobs", "checkpoints", "predictions", "partial", "adapter", "features", "aux"}
)
"""Folder names of an experiment directory: joined with ``/`` onto a path that is not the checkout's, a
violation. (``model``, ``data``, ``code`` and ``results`` are left out: the checkout's ``data/`` and
``bench/results/`` and a model's own folders use them too; ``eval/results`` is caught by ``eval``.)"""

REPO_NAMES = ("REPO", "REPO_ROOT")
"""Names the code gives the checkout: a path built on one is not an experiment's."""

SCANNED = ("launch", "train", "bench", "tests/support")
EXTRA_SCANNED = ("tests/conftest.py",)

MAX_TRAIN_LINES = 400

HEAVY = ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "wandb", "datasets", "matplotlib")
"""Packages of the compute side: a ``launch`` module must import without any of them."""


@dataclass(frozen=True)
class Edge:
    """One import of a project module by another."""

    source: str
    target: str
    line: int
    how: str
    """``module level``, ``lazy`` (inside a function), ``type-only`` or ``string``."""


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` (or ``tp.TYPE_CHECKING``) blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _function_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _imported_names(node: ast.AST, package: str) -> tp.Iterator[str]:
    """Dotted names an import statement (or an importlib target string) may refer to."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from . import x, from .x import y, from ..x import y (one package up)
            up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(filter(None, [*up, base]))
        yield base
        yield from (f"{base}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = node.value.split(".")
        if len(parts) >= 2 and parts[0] in ("launch", "train") and all(p.isidentifier() for p in parts[1:]):
            yield node.value


def module_edges(name: str, tree: ast.Module, modules: tp.Container[str]) -> list[Edge]:
    """Every import of another project module in ``tree``, with how it is imported."""
    typing_only, in_functions = _type_checking_lines(tree), _function_lines(tree)
    edges = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Constant)):
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant):
            how = "string"
        elif line in typing_only:
            how = "type-only"
        else:
            how = "lazy" if line in in_functions else "module level"
        for target in dict.fromkeys(_imported_names(node, name.rpartition(".")[0])):
            if target in modules and target != name:
                edges.append(Edge(name, target, line, how))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected group of modules (Tarjan, then a path search)."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursive Tarjan: the graph has a few dozen modules
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in graph.get(v, []):
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(g)[0], g, graph) for g in groups]


def _cycle_in(start: str, group: set[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """The shortest cycle through ``start`` inside its group (breadth first)."""
    paths: list[list[Edge]] = [[e] for e in graph.get(start, []) if e.target in group]
    seen = {start}
    while paths:
        path = paths.pop(0)
        last = path[-1].target
        if last == start:
            return path
        if last in seen:
            continue
        seen.add(last)
        paths += [path + [e] for e in graph.get(last, []) if e.target in group]
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def _describe(edge: Edge) -> str:
    return f"{edge.target} ({edge.how}, line {edge.line})"


def module_file(name: str) -> str:
    """A module's file from its dotted name: ``launch.run.submit`` is ``launch/run/submit.py``."""
    return name.replace(".", "/") + ".py"


def layer_problems(edges: list[Edge]) -> list[str]:
    """Rules 1 and 2: what ``train`` takes from ``launch``, and who hands over to ``train``."""
    problems = []
    for e in edges:
        path = module_file(e.source)
        if e.source.startswith("train.") and e.target.startswith("launch.") and e.target not in CONTRACT:
            problems.append(
                f"{path}: imports {_describe(e)}, which is not a contract module ({', '.join(sorted(CONTRACT))})"
            )
        if e.source.startswith("launch.") and e.target.startswith("train.") and path not in HANDOVER:
            problems.append(
                f"{path}: imports {_describe(e)}; only {' and '.join(sorted(HANDOVER))} hand over to train/"
            )
    return problems


def _is_file_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in EXPERIMENT_FILES


def _folder_text(node: ast.AST) -> str | None:
    """The literal text of a path part joined with ``/``: a string, or an f-string's first literal piece."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def _under_other_tree(left: ast.AST) -> bool:
    """Whether the path being joined onto is not an experiment's: the checkout (``__file__``, ``REPO``...),
    or a path whose last literal part is not an experiment folder (``REPO / "bench" / "results"``)."""
    text = ast.unparse(left)
    if "__file__" in text or any(name in text.split(".")[0] for name in REPO_NAMES):
        return True
    if not (isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div)):
        return False
    last = _folder_text(left.right)
    return last is not None and last.split("/")[-1] not in EXPERIMENT_FOLDERS


def literal_problems(rel: str, tree: ast.Module) -> list[str]:
    """Rule 4 for one file: experiment file names, and experiment folders joined onto a path."""
    problems = []
    for node in ast.walk(tree):
        if _is_file_name(node):
            problems.append(
                f"{rel}:{node.lineno}: {node.value!r} is an experiment file name -> use launch.store.expdir"
            )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            text = _folder_text(node.right)
            if text is not None and text.split("/")[0] in EXPERIMENT_FOLDERS and not _under_other_tree(node.left):
                problems.append(
                    f"{rel}:{node.lineno}: / {text!r} joins an experiment folder -> use launch.store.expdir"
                )
    return problems


def scanned_files(root: Path) -> list[Path]:
    files = [p for d in SCANNED for p in sorted((root / d).rglob("*.py"))]
    files += [root / f for f in EXTRA_SCANNED if (root / f).is_file()]
    return [p for p in files if p.relative_to(root).as_posix() != OWNER]


def import_problems(root: Path, launch_modules: list[str]) -> list[str]:
    """Rule 6: import every ``launch`` module in a child process with :data:`HEAVY` blocked."""
    code = (
        "import importlib, importlib.abc, sys\n"
        f"HEAVY = {HEAVY!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in HEAVY:\n"
        "            raise ImportError(f'{name} is not importable on the login node')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {launch_modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: does not import without the compute-side packages: {type(exc).__name__}: {exc}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    problems = [_as_path(line) for line in proc.stdout.splitlines() if line]
    if proc.returncode != 0:
        problems.append(f"importing the launch modules crashed (rc={proc.returncode}): {proc.stderr.strip()[-500:]}")
    return problems


def _as_path(line: str) -> str:
    """``launch.run.submit: message`` as ``launch/run/submit.py: message``."""
    name, sep, rest = line.partition(":")
    return module_file(name) + sep + rest


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of ``launch`` and ``train``, sub-packages included, by dotted name (``launch.run.submit``)."""
    return {
        ".".join(p.relative_to(root).with_suffix("").parts): p
        for pkg in ("launch", "train")
        for p in sorted((root / pkg).rglob("*.py"))
        if p.stem != "__init__"
    }


def contract_mark_problems(sources: dict[str, Path], trees: dict[str, ast.Module]) -> list[str]:
    """Rule 7: a ``launch`` module's docstring says "contract module" exactly when it is in :data:`CONTRACT`."""
    problems = []
    for name in sources:
        if not name.startswith("launch."):
            continue
        marked = bool(CONTRACT_MARK.search(ast.get_docstring(trees[name]) or ""))
        rel = module_file(name)
        if name in CONTRACT and not marked:
            problems.append(f"{rel}: in CONTRACT, but its docstring does not say 'A contract module: <why>'")
        elif marked and name not in CONTRACT:
            problems.append(f"{rel}: its docstring says contract module, but CONTRACT does not list it")
    for name in CONTRACT:
        if name not in sources:
            problems.append(f"{name}: listed in CONTRACT but no such module -> update tools/check_layers.py")
    return problems


def package_listing_problems(root: Path, sources: dict[str, Path]) -> list[str]:
    """Rule 7, the tree's side: each ``launch`` sub-package's ``__init__.py`` lists its modules, a ``★`` before
    exactly the contract ones, so the listing a newcomer reads cannot go stale."""
    problems = []
    packages = sorted({n.rpartition(".")[0] for n in sources if n.startswith("launch.") and n.count(".") == 2})
    for package in packages:
        rel = package.replace(".", "/") + "/__init__.py"
        init = root / rel
        text = (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "") if init.is_file() else ""
        marks = {module: star == "★" for star, module in LISTED.findall(text)}
        for name in sorted(n for n in sources if n.rpartition(".")[0] == package):
            short = name.rpartition(".")[2]
            if short not in marks:
                problems.append(f"{rel}: does not list {short}.py -> add a line '    {short}.py  <what it is for>'")
            elif marks[short] != (name in CONTRACT):
                has, lists = ("has", "does not list") if marks[short] else ("lacks", "lists")
                problems.append(f"{rel}: {short}.py {has} the contract mark ★, but CONTRACT {lists} {name}")
    return problems


def check(root: Path, imports: bool = True) -> list[str]:
    """Every violation of the rules under ``root`` (empty: the layers hold)."""
    sources = project_modules(root)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in sources.items()}
    edges = [e for name, tree in trees.items() for e in module_edges(name, tree, sources)]
    problems = layer_problems(edges) + contract_mark_problems(sources, trees)
    problems += package_listing_problems(root, sources)
    for cycle in find_cycles(edges):
        problems.append("import cycle: " + " -> ".join([cycle[0].source] + [_describe(e) for e in cycle]))
    for path in scanned_files(root):
        problems += literal_problems(path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
    for name, path in sources.items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if name.startswith("train.") and n > MAX_TRAIN_LINES:
            problems.append(f"train/{path.name}: {n} lines, over {MAX_TRAIN_LINES} -> split it by concern")
    if imports:
        problems += import_problems(root, [n for n in sources if n.startswith("launch.")])
    return problems


def main(argv: tp.Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    imports = "--no-imports" not in args
    paths = [a for a in args if not a.startswith("--")]
    root = Path(paths[0] if paths else ".").resolve()
    problems = check(root, imports)
    print("\n".join(problems) if problems else "layers OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
