"""The repository's ``tools/`` scripts as modules (``tools/`` holds scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str) -> types.ModuleType:
    """``tools/<name>.py``, imported once under the name ``tools_<name>``."""
    key = f"tools_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[key]
