"""The comparison report: accuracy with its interval against cost, per method.

Modules (★: a contract module, which ``train/`` imports too; see ``tools/check_layers.py``)::

      report.py      the report's rows, table, Markdown, HTML and chart
      comparison.py  what the report says: rows over seeds, paired tests, letter priors, the frontier
    ★ stats.py       the statistics underneath (standard library only)
      finalize.py    an experiment's end: cost from Slurm, the report rows, the report files
"""
