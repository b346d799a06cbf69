"""Rank agreement between fidelities (against scipy), seed spread, and MO-ASHA promotion on hand-made rung tables."""

import numpy as np
import pytest
from scipy import stats

from archsearch.fidelity import (
    crowding_distance,
    kendall_tau,
    nondominated_ranks,
    promote,
    promotion_order,
    rank_agreement,
    seed_spread,
    seed_spreads,
    spearman_rho,
)

# --- rank agreement and seeds --------------------------------------------------------------------------------------------------------


def test_rank_agreement_matches_scipy_and_hand_counts():
    cheap, costly = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.1, 3.3, 2.2, 4.4, 6.6, 5.5]  # two adjacent swaps
    a = rank_agreement(cheap, costly, k=3)
    assert a.kendall_tau.value == pytest.approx(stats.kendalltau(cheap, costly).statistic) == pytest.approx((15 - 2 * 2) / 15)
    assert a.spearman_rho.value == pytest.approx(stats.spearmanr(cheap, costly).statistic) == pytest.approx(1 - 6 * 4 / (6 * 35))
    assert a.kendall_tau.low <= a.kendall_tau.value <= a.kendall_tau.high <= 1
    assert a.top_k_overlap == 3 and a.n == 6  # lowest three: items {0, 1, 2} both ways, in another order
    assert rank_agreement(cheap, costly, k=2).top_k_overlap == 1  # lowest two: {0, 1} against {0, 2}
    assert rank_agreement(cheap, costly, "maximize", k=2).top_k_overlap == 2  # highest two: {5, 4} against {4, 5}
    assert rank_agreement(cheap, costly, "maximize", k=1).top_k_overlap == 0  # highest: 5 against 4


def test_the_vectorised_statistics_equal_scipy_on_every_row_ties_included():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (50, 7)).astype(float), rng.normal(size=(50, 7))  # integers: many ties
    y[:, :3] = x[:, :3]
    taus, rhos = kendall_tau(x, y), spearman_rho(x, y)
    for i in range(len(x)):
        assert taus[i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic)
        assert rhos[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
    assert np.isnan(kendall_tau(np.ones(4), np.arange(4.0))) and np.isnan(spearman_rho(np.ones(4), np.arange(4.0)))


def test_top_k_overlap_counts_the_shared_best():
    cheap, costly = [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]  # reversed
    a = rank_agreement(cheap, costly, k=2)
    assert a.kendall_tau.value == pytest.approx(-1.0) and a.top_k_overlap == 0
    assert rank_agreement(cheap, cheap, k=2).top_k_overlap == 2


def test_a_perfect_ranking_has_a_tight_interval_and_noise_widens_it():
    x = np.arange(20.0)
    assert rank_agreement(x, 2 * x + 1).kendall_tau.low == pytest.approx(1.0)
    noisy = rank_agreement(x, x + np.random.default_rng(0).normal(0, 5, 20)).kendall_tau
    assert noisy.low < noisy.value < noisy.high and noisy.high - noisy.low > 0.1


def test_seed_spread_is_the_mean_and_sample_spread_of_the_finite_seeds():
    s = seed_spread([1.0, 2.0, 4.0, None, float("nan")])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert s.sem == pytest.approx(s.std / np.sqrt(3)) and (s.low, s.high) == (1.0, 4.0)
    assert seed_spread([5.0]).std == 0.0 and seed_spread([None]).n == 0
    both = seed_spreads([{"bits_per_byte": 1.0, "train_tokens_per_s": 10.0}, {"bits_per_byte": 3.0, "train_tokens_per_s": 30.0}],
                        ["bits_per_byte", "train_tokens_per_s"])
    assert both["bits_per_byte"].mean == 2.0 and both["train_tokens_per_s"].std == pytest.approx(np.sqrt(200))



# --- promotion ---------------------------------------------------------------------------------------------------------

MIN_MAX = ["minimize", "maximize"]  # bits per byte, tokens per second
# trial: (bits_per_byte, tokens/s). 0, 1, 3 are non-dominated; 2 is dominated by 0; 4 by 1 and 0
RUNG = np.array([[1.0, 100.0], [1.2, 300.0], [1.1, 90.0], [1.5, 500.0], [1.3, 250.0]])


def test_non_dominated_sorting_peels_fronts():
    assert nondominated_ranks(RUNG, MIN_MAX).tolist() == [0, 0, 1, 0, 1]
    assert nondominated_ranks(np.array([[3.0], [1.0], [2.0], [1.0]]), ["minimize"]).tolist() == [2, 0, 1, 0]


def test_crowding_distance_by_hand():
    front = RUNG[[0, 1, 3]]  # sorted on either objective: 0, 1, 3
    d = crowding_distance(front)
    assert np.isinf(d[0]) and np.isinf(d[2])
    assert d[1] == pytest.approx((1.5 - 1.0) / 0.5 + (500 - 100) / 400)


def test_a_dominated_trial_is_not_promoted_and_a_non_dominated_one_is():
    promoted = promote(RUNG, MIN_MAX, keep=0.4)  # 2 of 5: the front's two extremes
    assert sorted(promoted.tolist()) == [0, 3]
    promoted = promote(RUNG, MIN_MAX, keep=0.6)  # 3 of 5: the whole front, neither dominated trial
    assert sorted(promoted.tolist()) == [0, 1, 3] and 2 not in promoted and 4 not in promoted
    # the best bits per byte alone would promote 0 and 2: ranking on all objectives takes 3 (fastest) over 2
    assert 2 not in promote(RUNG, MIN_MAX, keep=0.4) and 3 in promote(RUNG, MIN_MAX, keep=0.4)


def test_the_second_front_fills_the_places_the_first_leaves_and_missing_values_come_last():
    rung = np.array([[1.0, 500.0], [1.1, 400.0], [1.2, 300.0], [float("nan"), 900.0], [2.0, 100.0]])
    assert nondominated_ranks(rung[[0, 1, 2, 4]], MIN_MAX).tolist() == [0, 1, 2, 3]
    assert promotion_order(rung, MIN_MAX).tolist() == [0, 1, 2, 4, 3]
    assert promote(rung, MIN_MAX, keep=0.4).tolist() == [0, 1]
    assert promote(rung, MIN_MAX, keep=1.0).tolist() == [0, 1, 2, 4]  # never a trial without its objectives
    assert promote(rung[:1], MIN_MAX, keep=0.1).tolist() == [0]  # at least one
    with pytest.raises(ValueError, match="keep"):
        promote(rung, MIN_MAX, keep=0)
