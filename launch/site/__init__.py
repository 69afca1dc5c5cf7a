"""What differs between clusters, as data: site profiles, their detection and their check.

Modules (★: a contract module, which ``train/`` imports too; see ``tools/check_layers.py``)::

      profiles.py     the site profile schema (``slurm/profiles/<site>.yaml``)
      sitedetect.py   parsers of Slurm's own output (no subprocess)
      sitechoice.py   partition, account and QoS chosen from the facts and the flags
      siteprofile.py  a profile built from what was detected, each value with its source
      sitecheck.py    ``cyberft profile detect`` and ``check``: ask Slurm, write a profile, let Slurm judge it
    ★ gpus.py         which GPUs a process may use, from the environment alone
"""
