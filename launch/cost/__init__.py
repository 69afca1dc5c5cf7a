"""What a study will cost before it runs, and how far off that was after.

Modules (login side only: ``train/`` imports none of them; see ``tools/check_layers.py``)::

    forecast.py     GPU-hours, wall time and money from FLOPs, the card and the calibration
    costcheck.py    the forecast in the launcher's flow: made with the plan, saved, checked after the run
    calibration.py  per-site records of what finished runs measured, which scale the next forecast
    memory.py       per-GPU memory estimate of each method, and whether it fits
    tokencount.py   how many tokens the jobs will train and score on (no torch)
"""
