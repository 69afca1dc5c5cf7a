"""The multiple-choice questions and the one prompt built from them.

Modules (★: a contract module, which ``train/`` imports too; see ``tools/check_layers.py``)::

    ★ data.py       load, validate, split, deduplicate and prepare CyberMetric-style records
    ★ prompting.py  the one prompt template: training, evaluation and the token counts
"""
