"""Where the jobs run: Slurm through submitit, or this machine; and following them there.

Modules (login side only: ``train/`` imports none of them; see ``tools/check_layers.py``)::

    submit.py  ``cyberft submit``: a job (or array) per method, then the chained evaluation
    local.py   ``cyberft run``: the same jobs on this machine through submitit's local executor
    resume.py  ``cyberft resume``: send again what ended unfinished, from its checkpoints
    status.py  ``cyberft status``, ``logs`` and ``cancel``
    slurm.py   thin wrappers over squeue, sacct and scancel
"""
