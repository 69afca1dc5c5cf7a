"""Tests of launch/results/stats.py against known values: t tables, hand-worked McNemar, closed forms, textbook Holm."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from launch.results import stats
from launch.results.stats import (
    Comparison,
    compare,
    correct_vector,
    format_comparison,
    holm,
    letter_counts,
    letter_prior_note,
    majority_baseline,
    mcnemar,
    paired_bootstrap,
    pareto_front,
    spread,
    t_cdf,
    t_quantile,
    with_holm,
)

REPO = Path(__file__).resolve().parents[1]


def _pairs(a_only: int, b_only: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Two runs on the same questions with the given 2x2 table (A right/B wrong, A wrong/B right, ...)."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


# --------------------------------------------------------------------------- t distribution

# Student's t quantiles as printed in the usual tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2),
# rounded to 3 decimals: the computed value must round to the printed one.
T_TABLE = {
    0.975: {
        1: 12.706,
        2: 4.303,
        3: 3.182,
        4: 2.776,
        5: 2.571,
        6: 2.447,
        7: 2.365,
        8: 2.306,
        9: 2.262,
        10: 2.228,
        12: 2.179,
        15: 2.131,
        20: 2.086,
        30: 2.042,
        60: 2.000,
        120: 1.980,
    },
    0.95: {1: 6.314, 2: 2.920, 5: 2.015, 10: 1.812, 30: 1.697},
    0.995: {1: 63.657, 5: 4.032, 10: 3.169},
}


@pytest.mark.parametrize("p,df,expected", [(p, df, v) for p, row in T_TABLE.items() for df, v in row.items()])
def test_t_quantile_matches_published_table(p, df, expected):
    assert abs(t_quantile(p, df) - expected) <= 0.0005 + 1e-9
    assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df), rel=1e-12)


@pytest.mark.parametrize("t", [-7.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.5, 30.0])
def test_t_cdf_against_closed_forms_for_1_and_2_degrees_of_freedom(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_quantile_tends_to_the_normal_and_refuses_bad_input():
    assert t_quantile(0.975, 10**7) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    for p, df in ((0.0, 3), (1.0, 3), (0.5, 0), (0.9, -1)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


# --------------------------------------------------------------------------- spread


def test_spread_by_hand():
    # mean 0.62; deviations -0.02, 0, 0.02 -> sd = sqrt(0.0008 / 2) = 0.02;
    # half width = t(0.975, 2) * 0.02 / sqrt(3) = 4.3027 * 0.011547 = 0.049683.
    s = spread([0.60, None, 0.62, 0.64])
    assert s.n == 3
    assert s.mean == pytest.approx(0.62)
    assert s.sd == pytest.approx(0.02)
    assert (s.lo, s.hi) == (pytest.approx(0.570317, abs=1e-6), pytest.approx(0.669683, abs=1e-6))
    assert s.text() == "0.620 ± 0.020 [0.570, 0.670] (n=3)"


def test_spread_of_one_or_no_value_says_so():
    assert spread([0.5]) == stats.Spread(1, 0.5, None, None, None)
    assert spread([0.5]).text() == "0.500 (n=1)"
    assert spread([None, None]) == stats.Spread(0, None, None, None, None)
    assert spread([]).text() == "- (n=0)"
    with pytest.raises(ValueError, match="finite"):
        spread([0.5, float("nan")])


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_worked_by_hand():
    # 20 questions: only A right 6, only B right 1, both right 5, both wrong 8.
    # Discordant m = 7; under H0 the 6/1 split is Binomial(7, 1/2):
    #   P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = (1 + 7) / 128 = 0.0625, two-sided p = 2 * 0.0625 = 0.125.
    # Difference A - B = (6 - 1) / 20 = 0.25.
    # Agresti-Min Wald+2 interval: centre (6 - 1) / 22 = 0.227273;
    #   sd = sqrt((6 + 1 + 1) - (6 - 1)^2 / 22) / 22 = sqrt(8 - 1.136364) / 22 = 2.619854 / 22 = 0.119084;
    #   half width 1.959964 * 0.119084 = 0.233400 -> [-0.006127, 0.460673].
    a, b = _pairs(6, 1, 5, 8)
    m = mcnemar(a, b)
    assert (m.n, m.a_only, m.b_only) == (20, 6, 1)
    assert m.p == pytest.approx(0.125, abs=1e-15)
    assert m.diff == pytest.approx(0.25)
    assert m.lo == pytest.approx(-0.006127, abs=2e-6)
    assert m.hi == pytest.approx(0.460673, abs=2e-6)
    # Swapping the models mirrors everything.
    r = mcnemar(b, a)
    assert (r.diff, r.p) == (pytest.approx(-0.25), pytest.approx(0.125))
    assert (r.lo, r.hi) == (pytest.approx(-m.hi), pytest.approx(-m.lo))


def test_mcnemar_edge_cases():
    # 10 to 0: p = 2 * (1 / 2^10) = 0.001953125.
    assert mcnemar(*_pairs(10, 0, 0, 10)).p == pytest.approx(2 / 1024, abs=1e-15)
    # An even split and no disagreement at all are p = 1; the interval still has width.
    assert mcnemar(*_pairs(4, 4, 3, 3)).p == 1.0
    same = mcnemar(*_pairs(0, 0, 7, 3))
    assert same.p == 1.0 and same.diff == 0.0 and same.lo < 0 < same.hi
    # Every question discordant and one-sided: the interval is clamped to [-1, 1].
    assert mcnemar(*_pairs(5, 0, 0, 0)).hi == 1.0


def test_binomial_tail_is_exact_for_large_counts():
    m, k = 3000, 1420
    expected = min(Fraction(1), 2 * Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2**m))
    assert stats.binomial_two_sided(k, m) == float(expected)
    assert stats.binomial_two_sided(m - k, m) == float(expected)


# --------------------------------------------------------------------------- paired bootstrap


def test_bootstrap_interval_matches_the_normal_closed_form_at_large_n():
    # n = 20000: only A right 3000 (0.15), only B right 2000 (0.10). The bootstrap distribution of
    # the paired difference has variance (pa + pb - (pa - pb)^2) / n = (0.25 - 0.0025) / 20000 exactly,
    # se = 0.0035178, so the 95% interval is 0.05 +- 1.959964 * se = [0.043105, 0.056895] up to:
    # Monte Carlo error of a 2.5% percentile with 10,000 replicates,
    #   sqrt(0.025 * 0.975 / 10000) / phi(1.96) = 0.00156 / 0.0584 = 0.027 se;
    # skewness 0.10 / sqrt(n) (Cornish-Fisher shift 0.0004 se) and the lattice step 1/n (0.014 se).
    # The tolerance, 0.15 se, is 5.6 Monte Carlo standard deviations.
    n = 20000
    a, b = _pairs(3000, 2000, 9000, 6000)
    se = math.sqrt((0.25 - 0.05**2) / n)
    bs = paired_bootstrap([a], [b], resamples=10_000, seed=7)
    assert bs.diff == pytest.approx(0.05)
    assert bs.lo == pytest.approx(0.05 - 1.959964 * se, abs=0.15 * se)
    assert bs.hi == pytest.approx(0.05 + 1.959964 * se, abs=0.15 * se)
    assert bs.p == pytest.approx(1 / 10_001)  # 14 standard errors from 0: no replicate reaches it
    # With no difference at all, p = 1 and the interval is symmetric about 0 (same tolerance argument).
    a0, b0 = _pairs(1000, 1000, 9000, 9000)
    null = paired_bootstrap([a0], [b0], resamples=10_000, seed=7)
    se0 = math.sqrt(0.1 / n)
    assert null.p == 1.0
    assert null.lo == pytest.approx(-1.959964 * se0, abs=0.15 * se0)
    assert null.hi == pytest.approx(1.959964 * se0, abs=0.15 * se0)


def _naive_replicates(a_runs, b_runs, resamples, seed):
    """The textbook two-way bootstrap: draw question indexes, then each side's seeds, with replacement."""
    rng = random.Random(seed)
    n = len(a_runs[0])
    out = []
    for _ in range(resamples):
        qs = [rng.randrange(n) for _ in range(n)]
        seeds_a = [rng.randrange(len(a_runs)) for _ in a_runs]
        seeds_b = [rng.randrange(len(b_runs)) for _ in b_runs]
        acc_a = sum(a_runs[s][q] for s in seeds_a for q in qs) / (n * len(seeds_a))
        acc_b = sum(b_runs[s][q] for s in seeds_b for q in qs) / (n * len(seeds_b))
        out.append(acc_a - acc_b)
    return sorted(out)


@pytest.mark.parametrize("seeds", [(1, 1), (2, 3)])
def test_bootstrap_has_the_distribution_of_resampling_questions_and_seeds(seeds):
    # Drawing group counts (stats._replicates) must give the same distribution as drawing the
    # questions and seeds themselves. Two-sample Kolmogorov-Smirnov on 10,000 replicates each:
    # at the 0.001 level the largest CDF gap is 1.95 * sqrt(2 / 10000) = 0.0276.
    rng = random.Random(3)
    base = [rng.random() < 0.6 for _ in range(30)]
    a_runs = [[x if rng.random() < 0.8 else not x for x in base] for _ in range(seeds[0])]
    b_runs = [[x if rng.random() < 0.7 else not x for x in base] for _ in range(seeds[1])]
    b_runs[-1][:6] = [False] * 6  # one weaker seed: seed resampling must matter
    scale = 30 * seeds[0] * seeds[1]
    observed, fast = stats._replicates(stats._runs(a_runs, "a"), stats._runs(b_runs, "b"), 30, 10_000, 1)
    fast = [t / scale for t in fast]
    naive = _naive_replicates(a_runs, b_runs, 10_000, 2)
    assert observed / scale == pytest.approx(
        sum(map(sum, a_runs)) / (30 * seeds[0]) - sum(map(sum, b_runs)) / (30 * seeds[1])
    )
    grid = sorted(set(fast) | set(naive))
    gap = max(abs(_ecdf(fast, x) - _ecdf(naive, x)) for x in grid)
    assert gap < 0.0276
    assert statistics_mean(fast) == pytest.approx(statistics_mean(naive), abs=0.004)


def _ecdf(sorted_values: list[float], x: float) -> float:
    import bisect

    return bisect.bisect_right(sorted_values, x + 1e-12) / len(sorted_values)


def statistics_mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_seed_spread_widens_the_interval():
    # Same mean accuracies; in the second case A's two seeds differ by 20 points across the board.
    rng = random.Random(5)
    base = [rng.random() < 0.6 for _ in range(200)]
    flat = paired_bootstrap([base, base], [base[1:] + base[:1]], seed=1)
    strong = [True] * 20 + base[20:]
    weak = [False] * 20 + base[20:]
    spread_out = paired_bootstrap([strong, weak], [base[1:] + base[:1]], seed=1)
    assert (spread_out.hi - spread_out.lo) > 1.2 * (flat.hi - flat.lo)


def test_bootstrap_is_deterministic_and_bounded():
    a, b = _pairs(30, 20, 100, 50)
    assert paired_bootstrap([a], [b], seed=3) == paired_bootstrap([a], [b], seed=3)
    for bad in (0, stats.MAX_RESAMPLES + 1, 2.5):
        with pytest.raises(ValueError, match="resamples"):
            paired_bootstrap([a], [b], resamples=bad)
    with pytest.raises(ValueError, match="different numbers of questions"):
        paired_bootstrap([a], [b[:-1]])
    with pytest.raises(ValueError, match="list of runs"):
        paired_bootstrap([], [b])


def test_binomial_sampler_moments():
    # Mean np and variance np(1-p) within 4 standard errors of 20,000 draws.
    rng = random.Random(11)
    for n, p in ((40, 0.3), (2000, 0.02), (7, 0.9)):
        xs = [stats._binomial(rng, n, p) for _ in range(20_000)]
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
        assert abs(mean - n * p) < 4 * math.sqrt(n * p * (1 - p) / len(xs))
        assert var == pytest.approx(n * p * (1 - p), rel=0.06)
        assert 0 <= min(xs) and max(xs) <= n


# --------------------------------------------------------------------------- comparisons, Holm, format


def test_compare_picks_mcnemar_for_single_runs_and_the_bootstrap_for_seeds():
    a, b = _pairs(6, 1, 5, 8)
    single = compare("lora", [a], "base", [b])
    assert (single.test, single.runs, single.p) == ("mcnemar", (1, 1), pytest.approx(0.125))
    seeded = compare("lora", [a, a], "base", [b], resamples=500)
    assert (seeded.test, seeded.runs, seeded.diff) == ("bootstrap", (2, 1), pytest.approx(0.25))


def test_holm_textbook_example():
    # Wikipedia, "Holm-Bonferroni method": p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05.
    # Sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max(0.06, 0.04) = 0.06.
    # Rejected: H1 (0.01) and H4 (0.005) only.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p <= 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([]) == []
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    with pytest.raises(ValueError):
        holm([0.2, 1.5])


def test_format_comparison_line():
    c = Comparison("lora", "full_sft", -0.012, -0.030, 0.006, 0.21, "mcnemar", 500, (1, 1))
    assert format_comparison(c) == "lora vs full_sft: -1.2 pts [-3.0, 0.6], p = 0.21, not significant"
    up = Comparison("qlora", "base", 0.0843, 0.041, 0.127, 0.0004, "bootstrap", 500, (3, 1))
    assert format_comparison(up) == "qlora vs base: +8.4 pts [4.1, 12.7], p < 0.001, significant"
    # In a family the Holm-adjusted p decides, and is the one shown.
    adjusted = with_holm(
        [
            Comparison("a", "b", 0.03, 0.001, 0.06, 0.04, "mcnemar", 500, (1, 1)),
            Comparison("c", "d", 0.0, -0.02, 0.02, 1.0, "mcnemar", 500, (1, 1)),
        ]
    )
    assert adjusted[0].p_holm == pytest.approx(0.08)
    assert format_comparison(adjusted[0]) == "a vs b: +3.0 pts [0.1, 6.0], p = 0.08, not significant"
    assert format_comparison(adjusted[1]) == "c vs d: 0.0 pts [-2.0, 2.0], p = 1, not significant"


# --------------------------------------------------------------------------- Pareto


def test_pareto_front_hand_cases():
    points = [
        ("lora", 0.5, 0.61),
        ("base", 0.0, 0.26),
        ("qlora", 0.4, 0.70),
        ("full", 2.0, 1.0),
        ("failed", None, None),
        ("late", 3.0, 1.0),
        ("same_cost_worse", 0.4, 0.65),
    ]
    # lora: qlora costs less and scores more. late: full scores the same for less.
    # same_cost_worse: qlora has its cost and more accuracy. failed: cannot be placed.
    assert [p.label for p in pareto_front(points)] == ["base", "qlora", "full"]
    # Identical points are both on the frontier; a cheaper equal one removes a dearer one.
    ties = pareto_front([("x", 1.0, 0.5), ("y", 1.0, 0.5), ("z", 2.0, 0.5)])
    assert [p.label for p in ties] == ["x", "y"]
    assert pareto_front([]) == []
    assert pareto_front([("nan", float("nan"), 0.5), ("ok", 1, 0.2)]) == [stats.Point("ok", 1, 0.2)]


# --------------------------------------------------------------------------- letters


def test_letter_counts_and_majority_baseline():
    assert letter_counts(["A", "C", None, "C"]) == {"A": 1, "B": 0, "C": 2, "D": 0, "none": 1}
    with pytest.raises(ValueError, match="not an answer letter"):
        letter_counts(["E"])
    base = majority_baseline(["C", "B", "C", "A", "B"], ["C", "A", "C", "D"])
    # B and C tie in training (2 each): the first in A-D order, B, is the baseline's answer.
    assert base.letter == "B" and base.accuracy == 0.0 and base.correct == (False,) * 4
    base = majority_baseline(["C", "C", "A"], ["C", "A", "C", "D"])
    assert (base.letter, base.accuracy, base.correct) == ("C", 0.5, (True, False, True, False))
    with pytest.raises(ValueError):
        majority_baseline([], ["A"])


def test_letter_prior_note_flags_a_collapsed_model():
    # The case: a 135M model answered C for 83 of 100 held-out questions.
    gold = {"A": 25, "B": 24, "C": 27, "D": 24}
    collapsed = {"A": 5, "B": 6, "C": 83, "D": 6, "none": 0}
    assert letter_prior_note("base", collapsed, gold) == (
        "base answered C for 83 of 100 questions (83%); C is the answer to 27% of them"
    )
    assert letter_prior_note("lora", {"A": 26, "B": 23, "C": 29, "D": 22}, gold) is None
    # A key that is mostly C makes answering mostly C unremarkable.
    assert letter_prior_note("x", {"A": 10, "B": 10, "C": 70, "D": 10}, {"A": 5, "B": 5, "C": 85, "D": 5}) is None


def test_correct_vector_orders_and_checks_rows():
    rows = [{"index": 2, "correct": True}, {"index": 0, "correct": False}, {"index": 1, "correct": True}]
    assert correct_vector(rows) == [False, True, True]
    with pytest.raises(ValueError, match="twice"):
        correct_vector(rows + [{"index": 1, "correct": False}])
    with pytest.raises(ValueError, match="missing"):
        correct_vector([{"index": 0, "correct": True}, {"index": 2, "correct": True}])


def test_stats_imports_only_the_standard_library():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import launch.results.stats\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'launch'}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
