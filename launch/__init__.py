"""Login-node side of cyberft: CLI, config, data preparation, submission, cost, report.

Nothing in this package imports torch, transformers or peft at module level:
the login node must stay fast and work without them.
"""

__version__ = "0.1.0"
