"""Login-node side of cyberft: CLI, config, data preparation, submission, cost, report.

Nothing in this package imports torch, transformers or peft at module level:
the login node must stay fast and work without them. Some modules are the contract
both sides share (the config schema, the data, the experiment directory): each says
"A contract module" in its docstring, and ``tools/check_layers.py`` holds the list.

Layout, one sub-package a concern (each ``__init__.py`` lists its modules)::

    cli.py       the commands: argparse -> cmd_*
    jobs.py      the handover: the job objects submitit runs (with cli, the only importers of train/)
    spec/        what the user gives, checked before anything runs (config, overrides, sweeps, input safety)
    questions/   the multiple-choice questions and the one prompt built from them
    store/       the experiment directory and atomic writes
    run/         where the jobs run: Slurm (submit, resume, status) or this machine (local)
    site/        cluster differences as data: site profiles, their detection and check
    cost/        the forecast, its calibration, the memory estimate, the token counts
    results/     the comparison report and its statistics
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or the frozen ``EXP/code`` copy a job runs from)."""

SAMPLE_DATA = REPO_ROOT / "data" / "sample" / "cyber_mcq.json"
"""The bundled sample questions (``tools/sample_data.py`` writes them)."""
