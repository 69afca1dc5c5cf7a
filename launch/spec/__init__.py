"""What the user gives, checked before anything runs: the config, its loader, overrides, sweeps and input safety.

Modules (★: a contract module, which ``train/`` imports too; see ``tools/check_layers.py``)::

    ★ config.py      the one typed experiment config (YAML + dotted overrides), every field documented
    ★ schema.py      the typed loader under configs and profiles: every problem collected, then one error
    ★ yamlio.py      the one YAML reader and writer (YAML 1.2 scalars, no duplicate keys)
    ★ sweep.py       seeds and grids expanded to cells, and a cell's address
    ★ redact.py      the one secret detector, and how values appear in messages
      scriptsafe.py  every string that can reach a generated job script, checked
      preflight.py   what a config names on disk and in the environment, checked by validate/run/submit
      hub.py         is the model already on disk where the jobs will look (no network)
"""
