"""The experiment directory, the contract between the login side and the jobs, and how files are written.

Modules (★: a contract module, which ``train/`` imports too; see ``tools/check_layers.py``)::

    ★ expdir.py      every path and record of an experiment directory (the only module that spells their names)
    ★ fsio.py        atomic writes (temporary file, fsync, rename)
      experiment.py  make an experiment: resolve the config's paths, write its config and manifest
"""
