"""Statistics of evaluation results: the Wilson score interval of an accuracy.

Standard library only: the compute side (an evaluation result carries its interval) and the
report share it.
"""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    correct:
        Successes.
    n:
        Trials; 0 gives ``(0.0, 0.0)``.
    z:
        Normal quantile (1.96 for 95%).

    Returns
    -------
    (float, float)
        Lower and upper bounds, within [0, 1]. Unlike the normal approximation
        it stays sensible at 0/n and n/n, which small eval sets hit.

    Examples
    --------
    >>> tuple(round(x, 3) for x in wilson_interval(8, 10))
    (0.49, 0.943)
    """
    if n <= 0:
        return (0.0, 0.0)
    p = correct / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At 0/n and n/n the exact bound is 0 or 1; rounding would put it just
    # inside and exclude the observed proportion from its own interval.
    lo = 0.0 if correct <= 0 else max(0.0, center - half)
    hi = 1.0 if correct >= n else min(1.0, center + half)
    return (lo, hi)
