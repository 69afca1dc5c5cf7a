"""The statistics of a sweep's report: spread over seeds, paired tests, Holm, the cost frontier, letter priors.

A contract module: ``train/`` imports it too (the Wilson interval an evaluation result carries).

Standard library only (no numpy, no scipy): the report is built on the login node and in the
evaluation job, and ``launch/`` must import on a login node that has neither.

What the report calls, and with what
------------------------------------
Accuracy is a fraction in [0, 1] everywhere here; the text line shows points (x 100).
A *run* is one scored model: its per-question correctness, a sequence of bools in question order
(``EXP/eval/predictions/<model>.jsonl`` rows ``{"index", "correct", "pred", ...}``, put in order by
:func:`correct_vector`). Every run of one experiment is scored on the same questions: the split
depends on ``data.seed`` only, which a sweep never varies, so any two runs are paired question by
question.

- One row per method and grid point over its seeds::

      s = spread([0.61, 0.64, 0.60])      # accuracies (or GPU-hours, tokens/s) of the seeds
      s.mean, s.sd, s.lo, s.hi, s.n       # 95% t interval; None for n = 1 (sd) and n = 0 (all)

  ``None`` entries (a failed cell) are skipped, and ``s.n`` counts what is left: show it.
- Paired comparisons, one per pair of rows (each method against ``base``, and methods against each
  other), then Holm over the whole family, then one line each::

      pairs = [compare("lora", lora_runs, "base", [base_run]), compare("lora", lora_runs, "full_sft", full_runs)]
      for c in with_holm(pairs):
          print(format_comparison(c))     # lora vs full_sft: -1.2 pts [-3.0, 0.6], p = 0.21, not significant

  :func:`compare` takes a list of runs per side (one per seed). With one run on each side it is
  McNemar's exact test (:func:`mcnemar`); with several seeds on either side, a paired bootstrap
  over questions and seeds (:func:`paired_bootstrap`). Why, below.
- The chart: :func:`pareto_front` of ``(label, gpu_hours, accuracy)`` points (every cell, or every row).
- Letter priors: :func:`letter_counts` of each model's predicted letters beside the gold answers',
  a :func:`majority_baseline` row (the training split's most common letter, scored on the eval
  questions: its ``correct`` vector joins the comparisons like any run), and
  :func:`letter_prior_note` for a model whose answers collapse onto one letter.

Comparing methods trained with several seeds
--------------------------------------------
Two sources of randomness separate two methods' accuracies: which questions were asked (the eval
set is a sample of the questions one cares about) and which training run one got (seed: data order,
initialisation, dropout). On 100-500 questions the first is worth 2-5 points of standard error; the
issue measured several points between seeds, so the second is of the same size. A test that
ignores either claims more than the data hold:

- pooling per-question correctness over seeds into one long McNemar table counts the same question
  once per seed as if it were new evidence (it is the same hard question), and ignores that a whole
  run can be better or worse;
- comparing the per-seed accuracies (a t-test on 3 numbers per method) ignores the pairing on
  questions and has almost no power with 3 seeds (t quantile 4.30 at 2 degrees of freedom).

So with several seeds :func:`paired_bootstrap` resamples both: each replicate draws the questions
with replacement (the same draw for both methods: they answered the same questions) and, for each
method independently, its seeds with replacement, and takes the difference of the mean accuracies.
This is the Multi-Bootstrap of Sellam et al., "The MultiBERTs" (ICLR 2022), in its unpaired-seed
form (seed ``i`` of LoRA and seed ``i`` of full SFT share nothing that makes them a pair, and a
failed cell leaves the two methods with different seed counts). With one run on each side it is the
ordinary paired bootstrap. Its interval says how far the difference between the *methods* (not
between these particular checkpoints) could be from what was seen; with 3 seeds the seed part is
itself coarse, which is one more reason to show ``spread`` (mean +- sd, n) beside each row.

For one run on each side McNemar's exact test is used instead of the bootstrap: exact, and the
same numbers every time. Its interval for the difference is the closed-form adjusted Wald interval
of Agresti and Min (2005) ("Wald+2": half a question added to each cell of the 2x2 table), chosen
over a bootstrap interval because it is deterministic and instant for any number of pairs, and
over the plain Wald interval because that one collapses to a single point when the two models
disagree on no question, and covers too rarely when they disagree on few. ``significant`` comes
from the p-value (Holm-adjusted in a family), never from the interval, so the two can disagree at
the edge; the interval is per pair (unadjusted).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import operator
import random
import statistics
import typing as tp
from dataclasses import dataclass

LETTERS = ("A", "B", "C", "D")
"""The answer letters (as ``launch.spec.config.LETTERS``; not imported: this module needs no PyYAML)."""

MAX_RESAMPLES = 100_000
"""Most bootstrap replicates one comparison may ask for: enough for any interval or p-value a
report prints, and a bound on its time (:func:`paired_bootstrap` says how long 2,000 take)."""

DEFAULT_RESAMPLES = 2_000
"""Bootstrap replicates by default: the 2.5% and 97.5% points then move by about 0.06 standard
errors between seeds of the resampling, and the smallest p-value is 1/2001, small enough for Holm
over 20 comparisons at 0.05 (0.0025)."""


# --------------------------------------------------------------------------- t distribution


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        # Two steps per m: the even coefficient, then the odd one.
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast on the side of the mean a / (a + b); use the symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (bisection on :func:`t_cdf`).

    Accurate to about 1e-12 relative; ``t_quantile(0.975, 2)`` is 4.3027 (tables: 4.303).
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


def _z(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level (1.95996 for 0.95)."""
    _check_confidence(confidence)
    return statistics.NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


# --------------------------------------------------------------------------- one accuracy's interval


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


# --------------------------------------------------------------------------- spread over seeds


@dataclass(frozen=True)
class Spread:
    """Mean, sample sd and a t interval of one metric over seeds.

    Attributes
    ----------
    n:
        Values used (``None`` entries skipped): the report shows it, so a failed cell is visible.
    mean, sd, lo, hi:
        ``sd`` is the sample standard deviation (n - 1); ``[lo, hi]`` is the ``confidence``
        interval of the mean, ``mean +- t(n - 1) * sd / sqrt(n)``. ``sd``, ``lo`` and ``hi`` are
        None for n = 1 (one seed says nothing about the spread); everything is None for n = 0.
    """

    n: int
    mean: float | None
    sd: float | None
    lo: float | None
    hi: float | None

    def text(self, digits: int = 3) -> str:
        """``0.617 ± 0.021 [0.565, 0.669] (n=3)``; ``0.617 (n=1)``; ``- (n=0)``."""
        if self.mean is None:
            return "- (n=0)"
        if self.sd is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        d = digits
        return f"{self.mean:.{d}f} ± {self.sd:.{d}f} [{self.lo:.{d}f}, {self.hi:.{d}f}] (n={self.n})"


def spread(values: tp.Iterable[float | None], confidence: float = 0.95) -> Spread:
    """Mean, sample sd and ``confidence`` t interval of ``values`` (None entries skipped).

    Examples
    --------
    >>> s = spread([0.60, 0.62, 0.64])
    >>> round(s.sd, 4), round(s.lo, 4), round(s.hi, 4)
    (0.02, 0.5703, 0.6697)
    """
    _check_confidence(confidence)
    xs = [float(v) for v in values if v is not None]
    if any(not math.isfinite(x) for x in xs):
        raise ValueError(f"spread: values must be finite numbers, got {xs}")
    if not xs:
        return Spread(0, None, None, None, None)
    mean = statistics.fmean(xs)
    if len(xs) == 1:
        return Spread(1, mean, None, None, None)
    sd = statistics.stdev(xs)
    half = t_quantile(1.0 - (1.0 - confidence) / 2.0, len(xs) - 1) * sd / math.sqrt(len(xs))
    return Spread(len(xs), mean, sd, mean - half, mean + half)


# --------------------------------------------------------------------------- runs


Run = tp.Sequence[bool]
"""One scored model: correct or not, per question, in question order."""


def correct_vector(rows: tp.Iterable[tp.Mapping[str, tp.Any]]) -> list[bool]:
    """A run from prediction rows (``{"index": i, "correct": bool, ...}``), in question order.

    Raises ValueError when the indexes are not exactly 0..n-1 (a question missing or scored twice
    would silently unpair every comparison after it).
    """
    by_index: dict[int, bool] = {}
    for row in rows:
        i = row["index"]
        if i in by_index:
            raise ValueError(f"question {i} is scored twice")
        by_index[i] = bool(row["correct"])
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise ValueError(f"questions {missing[:10]} are missing (indexes must be 0..n-1)")
    return [by_index[i] for i in range(len(by_index))]


def _runs(runs: tp.Sequence[Run], side: str) -> list[tuple[int, ...]]:
    """Runs as 0/1 tuples, checked: at least one, each a non-empty sequence of bools."""
    if isinstance(runs, (str, bytes)) or not runs:
        raise ValueError(f"{side}: give a list of runs (one per seed), each a list of bools")
    out = []
    for i, run in enumerate(runs):
        if isinstance(run, (bool, int)) or not run:
            raise ValueError(f"{side}[{i}]: a run is a non-empty list of bools (one per question), got {run!r}")
        if any(not isinstance(x, (bool, int)) or x not in (0, 1) for x in run):
            raise ValueError(f"{side}[{i}]: every entry must be True or False")
        out.append(tuple(int(x) for x in run))
    return out


def _same_questions(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> int:
    lengths = {len(r) for r in a + b}
    if len(lengths) != 1:
        raise ValueError(f"runs scored different numbers of questions {sorted(lengths)}: they cannot be paired")
    return lengths.pop()


# --------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two runs on the same questions.

    Attributes
    ----------
    n:
        Questions.
    a_only, b_only:
        Discordant counts: questions only A answered correctly, only B answered correctly.
    diff:
        Accuracy of A minus accuracy of B, ``(a_only - b_only) / n`` (what the table's rows show).
    lo, hi:
        Agresti-Min adjusted Wald interval of the difference (see the module docstring).
    p:
        Exact two-sided p-value: twice the smaller binomial tail of ``Binomial(a_only + b_only, 1/2)``,
        at most 1; 1 when the runs never disagree.
    """

    n: int
    a_only: int
    b_only: int
    diff: float
    lo: float
    hi: float
    p: float


def binomial_two_sided(k: int, m: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``m`` fair coin flips: ``2 P(X <= min(k, m-k))``, capped at 1.

    Integer arithmetic (one binomial coefficient from the previous), so large ``m`` loses nothing.
    """
    if m == 0:
        return 1.0
    low = min(k, m - k)
    term, tail = 1, 1  # C(m, 0)
    for i in range(1, low + 1):
        term = term * (m - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2**m)


def mcnemar(a: Run, b: Run, confidence: float = 0.95) -> McNemar:
    """McNemar's exact test and the paired difference of two runs scored on the same questions."""
    (ra,), (rb,) = _runs([a], "a"), _runs([b], "b")
    n = _same_questions([ra], [rb])
    a_only = sum(1 for x, y in zip(ra, rb) if x and not y)
    b_only = sum(1 for x, y in zip(ra, rb) if y and not x)
    # Agresti & Min (2005), Wald+2: half a question added to each of the four cells.
    n2 = n + 2
    centre = (a_only - b_only) / n2
    sd = math.sqrt((a_only + b_only + 1) - (a_only - b_only) ** 2 / n2) / n2
    z = _z(confidence)
    return McNemar(
        n=n,
        a_only=a_only,
        b_only=b_only,
        diff=(a_only - b_only) / n,
        lo=max(-1.0, centre - z * sd),
        hi=min(1.0, centre + z * sd),
        p=binomial_two_sided(a_only, a_only + b_only),
    )


# --------------------------------------------------------------------------- paired bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """A paired bootstrap of the accuracy difference (A minus B).

    Attributes
    ----------
    n:
        Questions.
    diff:
        Observed difference of the mean accuracies (mean over each side's runs).
    lo, hi:
        Percentile interval of the replicates (linear interpolation between order statistics).
    p:
        Two-sided p-value of "no difference": the share of replicates at least as far from the
        observed difference as the observed difference is from 0 (the bootstrap distribution
        shifted to the null), counted as ``(1 + hits) / (1 + resamples)`` so it is never 0.
    resamples, seed:
        What produced it: the same inputs, resamples and seed give the same numbers.
    """

    n: int
    diff: float
    lo: float
    hi: float
    p: float
    resamples: int
    seed: int


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """One draw of Binomial(n, p): inversion, summing probabilities outward from the mode.

    Exact (each k is returned with probability pmf(k)) and about 1.6 standard deviations of
    steps per draw, so its cost does not grow with ``n`` as a loop over n trials would.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    mode = min(n, int((n + 1) * p))
    f_mode = math.exp(
        math.lgamma(n + 1)
        - math.lgamma(mode + 1)
        - math.lgamma(n - mode + 1)
        + mode * math.log(p)
        + (n - mode) * math.log1p(-p)
    )
    u = rng.random() - f_mode
    if u < 0:
        return mode
    odds = p / (1.0 - p)
    down, f_down, up, f_up = mode, f_mode, mode, f_mode
    while down > 0 or up < n:
        if down > 0:
            f_down *= down / ((n - down + 1) * odds)  # pmf(k - 1) from pmf(k)
            down -= 1
            u -= f_down
            if u < 0:
                return down
        if up < n:
            f_up *= (n - up) / (up + 1) * odds  # pmf(k + 1) from pmf(k)
            up += 1
            u -= f_up
            if u < 0:
                return up
    return mode  # u exceeded the total by rounding (~1e-16): the most likely value


def _multinomial(rng: random.Random, n: int, counts: tp.Sequence[int]) -> list[int]:
    """How many of ``n`` draws with replacement fall in each category of sizes ``counts``.

    The last category takes what is left; its size only enters through the total.
    """
    out, left, mass = [], n, sum(counts)
    for c in counts[:-1]:
        x = _binomial(rng, left, c / mass) if left and mass else 0
        out.append(x)
        left -= x
        mass -= c
    out.append(left)
    return out


def _seed_weights(rng: random.Random, s: int) -> list[int]:
    """How often each of ``s`` seeds is drawn when ``s`` are drawn with replacement."""
    w = [0] * s
    if s == 1:
        w[0] = 1  # no choice: draw no random number
        return w
    for _ in range(s):
        w[rng.randrange(s)] += 1
    return w


def _categories(
    patterns: tp.Sequence[tuple[tuple[int, ...], tuple[int, ...], int]],
    n: int,
    wa: tp.Sequence[int],
    wb: tp.Sequence[int],
) -> tuple[list[int], list[int]]:
    """Questions grouped by what one of them adds to a replicate's statistic, for one seed draw.

    ``patterns`` holds, per pattern, the runs of A and of B that got its questions right and how
    many questions have it. A question adds ``sb * (A's drawn seeds that got it right) - sa * (B's
    drawn seeds that did)``: ``n * sa * sb`` times its share of the difference of mean accuracies,
    an integer. Returns the non-zero values and their sizes, plus one last size for every question
    that adds 0.
    """
    sa, sb = len(wa), len(wb)
    by_value: dict[int, int] = collections.defaultdict(int)
    for right_a, right_b, count in patterns:
        by_value[sb * sum(map(wa.__getitem__, right_a)) - sa * sum(map(wb.__getitem__, right_b))] += count
    by_value.pop(0, None)
    values = sorted(by_value)
    sizes = [by_value[v] for v in values]
    return values, sizes + [n - sum(sizes)]


def _quantile(sorted_values: tp.Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_values) - 1)
    return sorted_values[i] + (pos - i) * (sorted_values[j] - sorted_values[i])


def paired_bootstrap(
    a_runs: tp.Sequence[Run],
    b_runs: tp.Sequence[Run],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Bootstrap:
    """Paired bootstrap of mean accuracy of ``a_runs`` minus mean accuracy of ``b_runs``.

    Each replicate draws ``n`` questions with replacement (one draw for both sides) and, per side
    independently, as many seeds as it has with replacement; the statistic is the difference of
    the two sides' mean accuracies on the drawn questions. One run per side: the ordinary paired
    bootstrap. Why seeds are resampled: see the module docstring.

    Given the drawn seeds, what a question adds to the statistic depends only on which runs got it
    right, so the questions fall into a few groups of equal contribution (three for one run per
    side: only A right, only B right, the rest), and a replicate needs only how many questions of
    each group it drew: a multinomial, drawn by conditional binomials, instead of ``n`` question
    indexes. Same distribution; the cost per replicate grows with the number of groups (at most
    ``2 * sa * sb + 1``), not with ``n``. Measured on 2 shared cores, 500 questions, 2,000
    replicates: 0.015 s for one run per side, 0.05 s for 3 seeds per side, 0.2-0.5 s for 5 and
    about 1 s for 10 (many seeds make many distinct seed draws, each grouped anew).

    Parameters
    ----------
    a_runs, b_runs:
        One run per seed (each a sequence of bools, all the same length).
    resamples:
        Replicates, 1 to :data:`MAX_RESAMPLES`.
    seed:
        Seed of the resampling (``random.Random``): same inputs, same seed, same result.
    confidence:
        Of the percentile interval.
    """
    if not isinstance(resamples, int) or not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be a whole number from 1 to {MAX_RESAMPLES}, got {resamples!r}")
    _check_confidence(confidence)
    a, b = _runs(a_runs, "a_runs"), _runs(b_runs, "b_runs")
    n = _same_questions(a, b)
    observed, stats = _replicates(a, b, n, resamples, seed)
    hits = sum(1 for t in stats if abs(t - observed) >= abs(observed))
    scale = n * len(a) * len(b)
    tail = (1.0 - confidence) / 2.0
    return Bootstrap(
        n=n,
        diff=observed / scale,
        lo=_quantile(stats, tail) / scale,
        hi=_quantile(stats, 1.0 - tail) / scale,
        p=(1 + hits) / (1 + resamples),
        resamples=resamples,
        seed=seed,
    )


def _replicates(
    a: list[tuple[int, ...]], b: list[tuple[int, ...]], n: int, resamples: int, seed: int
) -> tuple[int, list[int]]:
    """The observed statistic and the sorted replicates, each ``n * sa * sb`` times a difference of accuracies."""
    sa, sb = len(a), len(b)
    # Which runs got each question right; a question every run got right, or every run got wrong,
    # adds 0 to every replicate's difference and is left out (it stays in n).
    counted = collections.Counter(k for k in zip(*a, *b) if 0 < sum(k) < sa + sb)
    patterns = [
        (tuple(s for s in range(sa) if k[s]), tuple(s for s in range(sb) if k[sa + s]), c) for k, c in counted.items()
    ]
    observed = sum(c * (sb * len(right_a) - sa * len(right_b)) for right_a, right_b, c in patterns)
    rng = random.Random(seed)
    categories: dict[tuple, tuple[list[int], list[int]]] = {}  # per seed draw: few distinct ones for few seeds
    stats = []
    for _ in range(resamples):
        draw = (tuple(_seed_weights(rng, sa)), tuple(_seed_weights(rng, sb)))
        if draw not in categories:
            categories[draw] = _categories(patterns, n, *draw)
        values, sizes = categories[draw]
        stats.append(sum(v * x for v, x in zip(values, _multinomial(rng, n, sizes))))
    stats.sort()
    return observed, stats


def _mask(run: tuple[int, ...]) -> int:
    """A run as an integer whose bit ``q`` is 1 when question ``q`` was answered right."""
    return int("".join("1" if x else "0" for x in reversed(run)), 2)


_PLANES = [bytes.maketrans(bytes(range(256)), bytes(b"01"[(c >> j) & 1] for c in range(256))) for j in range(8)]
"""Per bit ``j``: the byte table mapping a count to ASCII ``1`` when its bit ``j`` is set, else ``0``."""


def _count_planes(rng: random.Random, n: int) -> list[int]:
    """One draw of ``n`` questions with replacement, as bit planes: bit ``q`` of plane ``j`` is bit ``j``
    of how often question ``q`` was drawn, so a run's weighted count is ``sum(2**j * popcount(run & plane_j))``."""
    counts = bytearray(n)
    for q, c in collections.Counter(rng.choices(range(n), k=n)).items():
        counts[q] = min(c, 255)  # P(any question drawn 256 times) is below 1e-300 for any n
    counts.reverse()  # question 0 is the lowest bit
    return [int(counts.translate(_PLANES[j]), 2) for j in range(max(counts).bit_length())]


def _weighted_counts(masks: list[int], planes: list[int]) -> list[int]:
    """Each run's right answers among the drawn questions, counted with their multiplicity."""
    return [sum((m & p).bit_count() << j for j, p in enumerate(planes)) for m in masks]


def bootstrap_family(
    rows: tp.Mapping[str, tp.Sequence[Run]],
    pairs: tp.Sequence[tuple[str, str]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[Bootstrap]:
    """:func:`paired_bootstrap` of every pair of rows, the questions drawn once per replicate for all of them.

    Same statistic and same distribution for each pair as :func:`paired_bootstrap` (each replicate
    draws the questions with replacement, then each side's seeds independently), but the cost
    suits a report with many rows of many seeds: the question draw and each run's weighted count
    (bit operations on the run's correctness as one integer) are computed once per replicate and
    shared by every pair, so a pair costs only its seed draws. Measured on 2 shared cores, 500
    questions, 2,000 replicates: about 0.4 s for the shared part with 200 runs, then about 5 ms per
    pair of 5 seeds a side, where :func:`paired_bootstrap` takes 0.8 s per such pair (its cost grows
    with the seeds, not with the questions, which suits one pair on a large question set instead).
    The pairs' replicates share question draws, so they are not independent of each other (Holm
    needs no independence).
    """
    if not isinstance(resamples, int) or not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be a whole number from 1 to {MAX_RESAMPLES}, got {resamples!r}")
    _check_confidence(confidence)
    used = list(dict.fromkeys(name for pair in pairs for name in pair))
    checked = {name: _runs(rows[name], name) for name in used}
    if not used:
        return []
    n = _same_questions([r for runs in checked.values() for r in runs], [])
    masks = {name: [_mask(r) for r in runs] for name, runs in checked.items()}
    totals = {name: [sum(r) for r in runs] for name, runs in checked.items()}
    sizes = {name: len(runs) for name, runs in checked.items()}
    rng = random.Random(seed)
    stats: list[list[int]] = [[] for _ in pairs]
    for _ in range(resamples):
        planes = _count_planes(rng, n)
        counts = {name: _weighted_counts(runs, planes) for name, runs in masks.items()}
        for out, (a, b) in zip(stats, pairs):
            sa, sb = sizes[a], sizes[b]
            wa, wb = _seed_weights(rng, sa), _seed_weights(rng, sb)
            out.append(sb * sum(map(operator.mul, wa, counts[a])) - sa * sum(map(operator.mul, wb, counts[b])))
    tail = (1.0 - confidence) / 2.0
    results = []
    for out, (a, b) in zip(stats, pairs):
        sa, sb = sizes[a], sizes[b]
        observed = sb * sum(totals[a]) - sa * sum(totals[b])
        out.sort()
        hits = sum(1 for t in out if abs(t - observed) >= abs(observed))
        scale = n * sa * sb
        results.append(
            Bootstrap(
                n=n,
                diff=observed / scale,
                lo=_quantile(out, tail) / scale,
                hi=_quantile(out, 1.0 - tail) / scale,
                p=(1 + hits) / (1 + resamples),
                resamples=resamples,
                seed=seed,
            )
        )
    return results


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of two report rows, ready to print.

    Attributes
    ----------
    a, b:
        Row names (``lora``, ``full_sft``, ``base``, ``lora (learning_rate=0.0001)``).
    diff, lo, hi:
        Accuracy of ``a`` minus ``b`` and its interval, as fractions.
    p:
        The test's own p-value.
    test:
        ``mcnemar`` (one run each side) or ``bootstrap`` (seeds on either side).
    n:
        Questions; ``runs`` = (runs of ``a``, runs of ``b``).
    p_holm:
        Holm-adjusted p-value within the family it was adjusted in (:func:`with_holm`); None before.
    """

    a: str
    b: str
    diff: float
    lo: float
    hi: float
    p: float
    test: str
    n: int
    runs: tuple[int, int]
    p_holm: float | None = None

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the (Holm-adjusted, when adjusted) p-value is at most ``alpha``."""
        return (self.p if self.p_holm is None else self.p_holm) <= alpha


def compare(
    a: str,
    a_runs: tp.Sequence[Run],
    b: str,
    b_runs: tp.Sequence[Run],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Compare rows ``a`` and ``b`` on the same questions: McNemar for one run each, else the bootstrap."""
    if len(a_runs) == 1 and len(b_runs) == 1:
        m = mcnemar(a_runs[0], b_runs[0], confidence)
        return Comparison(a, b, m.diff, m.lo, m.hi, m.p, "mcnemar", m.n, (1, 1))
    bs = paired_bootstrap(a_runs, b_runs, resamples=resamples, seed=seed, confidence=confidence)
    return Comparison(a, b, bs.diff, bs.lo, bs.hi, bs.p, "bootstrap", bs.n, (len(a_runs), len(b_runs)))


def compare_family(
    rows: tp.Mapping[str, tp.Sequence[Run]],
    pairs: tp.Sequence[tuple[str, str]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[Comparison]:
    """:func:`compare` for every pair ``(a, b)`` of rows (``rows``: name -> runs), in the order given.

    McNemar for a pair with one run a side, :func:`bootstrap_family` for the rest; then adjust
    with :func:`with_holm` over the family.
    """
    out: list[Comparison | None] = [None] * len(pairs)
    seeded = []
    for i, (a, b) in enumerate(pairs):
        if len(rows[a]) == 1 and len(rows[b]) == 1:
            out[i] = compare(a, rows[a], b, rows[b], confidence=confidence)
        else:
            seeded.append(i)
    family = bootstrap_family(rows, [pairs[i] for i in seeded], resamples=resamples, seed=seed, confidence=confidence)
    for i, bs in zip(seeded, family):
        a, b = pairs[i]
        out[i] = Comparison(a, b, bs.diff, bs.lo, bs.hi, bs.p, "bootstrap", bs.n, (len(rows[a]), len(rows[b])))
    return [c for c in out if c is not None]


def holm(pvalues: tp.Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values (from 0) is multiplied by m - i, kept at least as large as
    the one before it and capped at 1; a hypothesis is rejected at level alpha when its adjusted
    p-value is at most alpha. This controls the chance of any false "significant" in the family,
    whatever the dependence between the tests (they share questions and runs here).
    """
    m = len(pvalues)
    if any(not 0.0 <= p <= 1.0 for p in pvalues):
        raise ValueError(f"p-values must lie in [0, 1], got {list(pvalues)}")
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: tp.Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with ``p_holm`` set, Holm-adjusted over all of them (one family)."""
    adjusted = holm([c.p for c in comparisons])
    return [dataclasses.replace(c, p_holm=p) for c, p in zip(comparisons, adjusted)]


def _points(x: float, signed: bool = False) -> str:
    text = f"{100.0 * x:.1f}"
    if text in ("-0.0", "0.0"):
        return "0.0"
    return f"+{text}" if signed and x > 0 else text


def format_p(p: float) -> str:
    """``p = 0.21``, ``p = 0.049``, ``p = 1``, ``p < 0.001`` (two significant digits)."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def format_comparison(c: Comparison, alpha: float = 0.05) -> str:
    """``lora vs full_sft: -1.2 pts [-3.0, 0.6], p = 0.21, not significant``.

    The p-value shown is the Holm-adjusted one when the comparison was adjusted (the report's
    note must say so, and over how many comparisons); significance is that p-value <= ``alpha``.
    """
    p = c.p if c.p_holm is None else c.p_holm
    verdict = "significant" if c.significant(alpha) else "not significant"
    interval = f"[{_points(c.lo)}, {_points(c.hi)}]"
    return f"{c.a} vs {c.b}: {_points(c.diff, signed=True)} pts {interval}, {format_p(p)}, {verdict}"


# --------------------------------------------------------------------------- cost frontier


class Point(tp.NamedTuple):
    """A cell or row on the accuracy-versus-cost chart."""

    label: str
    cost: float | None
    accuracy: float | None


def pareto_front(points: tp.Iterable[tp.Sequence[tp.Any]]) -> list[Point]:
    """The points no other point beats: none is at most as costly and at least as accurate, better in one.

    ``points`` are ``(label, cost, accuracy)`` (GPU-hours, say, and accuracy); those with a missing
    or non-finite cost or accuracy (a failed cell) are left out. Two identical points are both on
    the frontier. Returned in order of cost (accuracy rising with it), ready to draw as a step line.
    """
    usable = [Point(*p) for p in points]
    usable = [p for p in usable if _finite(p.cost) and _finite(p.accuracy)]
    front: list[Point] = []
    best = -math.inf
    for p in sorted(usable, key=lambda q: (q.cost, -q.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
        elif front and (p.cost, p.accuracy) == (front[-1].cost, front[-1].accuracy):
            front.append(p)  # a tie with the last frontier point: neither dominates the other
    return front


def _finite(x: tp.Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------- letter priors


def letter_counts(letters: tp.Iterable[str | None]) -> dict[str, int]:
    """How often each letter was predicted (or is the gold answer): ``{"A", "B", "C", "D", "none"}``.

    ``None`` (an unparsed generation) counts as ``none``; anything else is a ValueError.
    """
    counts = dict.fromkeys((*LETTERS, "none"), 0)
    for x in letters:
        key = "none" if x is None else x
        if key not in counts:
            raise ValueError(f"not an answer letter: {x!r} (expected one of {', '.join(LETTERS)} or None)")
        counts[key] += 1
    return counts


@dataclass(frozen=True)
class Baseline:
    """Always answering the training split's most common letter, scored on the eval questions.

    Attributes
    ----------
    letter:
        The training split's most common answer (the first in A-D order when several tie).
    train_counts:
        Answer letters of the training split (:func:`letter_counts`).
    correct:
        Its run on the eval questions (joins :func:`compare` like a model's run).
    accuracy:
        Share of eval questions whose answer is ``letter``.
    """

    letter: str
    train_counts: dict[str, int]
    correct: tuple[bool, ...]
    accuracy: float


def majority_baseline(train_answers: tp.Iterable[str], eval_answers: tp.Sequence[str]) -> Baseline:
    """The majority-letter baseline row: the training answers' most common letter, on the eval answers."""
    counts = letter_counts(train_answers)
    if counts["none"] or not sum(counts.values()):
        raise ValueError("majority_baseline needs at least one training answer, every one a letter A-D")
    top = max(counts[x] for x in LETTERS)
    letter = next(x for x in LETTERS if counts[x] == top)
    correct = tuple(ans == letter for ans in eval_answers)
    if not correct:
        raise ValueError("majority_baseline needs at least one eval answer")
    return Baseline(letter, counts, correct, sum(correct) / len(correct))


def letter_prior_note(
    name: str, predicted: tp.Mapping[str, int], gold: tp.Mapping[str, int], share: float = 0.5
) -> str | None:
    """A note when a model's answers collapse onto one letter; None otherwise.

    Flagged: the model's most frequent letter is at least ``share`` of its answers and at least
    1.5 times that letter's share of the gold answers (a model that learned the questions answers
    each letter about as often as the key does). A display heuristic for the report; the letter
    distribution itself is always shown beside the majority-letter baseline row.

    Example: ``lora answered C for 83 of 100 questions (83%); C is the answer to 27% of them``.
    """
    total = sum(predicted.values())
    gold_total = sum(gold.get(x, 0) for x in LETTERS)
    if not total or not gold_total:
        return None
    letter = max(LETTERS, key=lambda x: (predicted.get(x, 0), -LETTERS.index(x)))
    ratio = predicted.get(letter, 0) / total
    gold_ratio = gold.get(letter, 0) / gold_total
    if ratio < share or ratio < 1.5 * gold_ratio:
        return None
    return (
        f"{name} answered {letter} for {predicted[letter]} of {total} questions ({ratio:.0%}); "
        f"{letter} is the answer to {gold_ratio:.0%} of them"
    )


__all__ = [
    "Baseline",
    "Bootstrap",
    "Comparison",
    "McNemar",
    "Point",
    "Spread",
    "betainc",
    "binomial_two_sided",
    "bootstrap_family",
    "compare",
    "compare_family",
    "correct_vector",
    "format_comparison",
    "format_p",
    "holm",
    "letter_counts",
    "letter_prior_note",
    "majority_baseline",
    "mcnemar",
    "paired_bootstrap",
    "pareto_front",
    "spread",
    "t_cdf",
    "t_quantile",
    "with_holm",
]
