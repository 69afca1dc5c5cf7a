"""Login-node side of cyberft: CLI, config, data preparation, submission, cost, report.

Nothing in this package imports torch, transformers or peft at module level:
the login node must stay fast and work without them. Some modules are the contract
both sides share (the config schema, the data, the experiment directory: see
``tools/check_layers.py``).
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or the frozen ``EXP/code`` copy a job runs from)."""

SAMPLE_DATA = REPO_ROOT / "data" / "sample" / "cyber_mcq.json"
"""The bundled sample questions (``tools/sample_data.py`` writes them)."""
