"""The layer rules (tools/check_layers.py) hold on this tree, and each one fails on a planted violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.tools import load_tool

REPO = Path(__file__).resolve().parents[1]
layers = load_tool("check_layers")


def test_the_layers_hold():
    res = subprocess.run(
        [sys.executable, "tools/check_layers.py"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert (res.returncode, res.stdout.strip()) == (0, "layers OK"), res.stdout + res.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of launch/ and train/ to plant violations in."""
    for package in ("launch", "train"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert layers.check(tmp_path, imports=False) == []
    return tmp_path


def plant(tree: Path, module: str, code: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + "\n" + code + "\n")


def test_a_back_edge_from_train_to_submission_code_fails(tree):
    plant(tree, "train/evaluate.py", "from launch.run import submit  # the finaliser back in the compute side")
    problems = layers.check(tree, imports=False)
    assert any(p.startswith("train/evaluate.py: imports launch.run.submit (module level") for p in problems), problems
    cycle = next(p for p in problems if p.startswith("import cycle:"))
    assert "launch.jobs" in cycle and "train.evaluate" in cycle and "launch.run.submit" in cycle


def test_a_launch_module_importing_train_fails(tree):
    plant(tree, "launch/run/status.py", "def f():\n    from train import loop  # lazy counts too")
    problems = layers.check(tree, imports=False)
    assert "launch/run/status.py: imports train.loop (lazy, line" in problems[0], problems


def test_a_type_only_cycle_fails(tree):
    plant(tree, "train/batches.py", "import typing\nif typing.TYPE_CHECKING:\n    from train.loop import TrainResult")
    (problem,) = layers.check(tree, imports=False)
    assert problem.startswith("import cycle: train.batches -> train.loop (type-only, line")


def test_an_experiment_file_name_outside_the_owner_fails(tree):
    plant(tree, "launch/run/status.py", 'SUMMARY = "summary.json"\n\ndef f(exp):\n    return exp / "methods" / "x"')
    problems = layers.check(tree, imports=False)
    assert any("launch/run/status.py" in p and "'summary.json' is an experiment file name" in p for p in problems)
    assert any("launch/run/status.py" in p and "/ 'methods' joins an experiment folder" in p for p in problems)


def test_a_train_module_over_400_lines_fails(tree):
    plant(tree, "train/quant.py", "\n" * 400)
    assert layers.check(tree, imports=False) == ["train/quant.py: 460 lines, over 400 -> split it by concern"]


def test_a_launch_module_that_needs_torch_fails(tree):
    plant(tree, "launch/results/report.py", "import torch  # noqa")
    problems = layers.check(tree)
    why = "does not import without the compute-side packages: ImportError: torch is not importable on the login node"
    assert problems == [
        f"launch/results/finalize.py: {why}",
        f"launch/results/report.py: {why}",
    ]  # finalize imports report


def test_a_contract_module_is_marked_as_such_in_its_file_and_its_package(tree):
    """Rule 7: the docstring of a module train/ imports says so, and so does its package's listing."""
    fsio = tree / "launch/store/fsio.py"
    fsio.write_text(fsio.read_text().replace("A contract module: ``train/`` imports it too", "``train/`` imports it"))
    results = tree / "launch/results/__init__.py"
    results.write_text(results.read_text().replace("★ stats.py", "  stats.py"))
    assert layers.check(tree, imports=False) == [
        "launch/store/fsio.py: in CONTRACT, but its docstring does not say 'A contract module: <why>'",
        "launch/results/__init__.py: stats.py lacks the contract mark ★, but CONTRACT lists launch.results.stats",
    ]


def test_a_module_missing_from_its_package_listing_or_wrongly_marked_fails(tree):
    (tree / "launch/cost/extra.py").write_text('"""A new module: A contract module, it claims."""\n')
    cost = tree / "launch/cost/__init__.py"
    cost.write_text(cost.read_text().replace("    memory.py ", "  ★ memory.py "))
    assert layers.check(tree, imports=False) == [
        "launch/cost/extra.py: its docstring says contract module, but CONTRACT does not list it",
        "launch/cost/__init__.py: does not list extra.py -> add a line '    extra.py  <what it is for>'",
        "launch/cost/__init__.py: memory.py has the contract mark ★, but CONTRACT does not list launch.cost.memory",
    ]


def test_a_module_in_a_sub_package_counts_in_the_import_graph(tree):
    """Modules are found in launch/'s sub-packages too: a cycle through one is caught (relative imports too)."""
    plant(tree, "launch/store/fsio.py", "def f():\n    from ..results import report  # a contract module reaching up")
    problems = layers.check(tree, imports=False)
    assert any(p.startswith("import cycle:") and "launch.store.fsio" in p for p in problems), problems
