"""Learning-curve extrapolation: the power-law fit recovers known curves from noisy points, and falls back sanely."""

import numpy as np
import pytest

from archsearch.curves import PowerLaw, extrapolate, fit_power_law, predicted_bits_per_byte

TOKENS = np.linspace(1e5, 1e6, 12)


@pytest.mark.parametrize("a,b,c", [(1.2, 40.0, 0.3), (2.0, 900.0, 0.6), (0.8, 5.0, 0.15)])
def test_the_fit_recovers_a_known_curve_from_noisy_points(a, b, c):
    rng = np.random.default_rng(0)
    truth = PowerLaw(a, b, c, fitted=True)
    losses = truth(TOKENS) + rng.normal(0, 0.002, len(TOKENS))
    law = fit_power_law(TOKENS, losses)
    assert law.fitted
    # the parameters trade off against each other under noise; the curve, and its value 10x out, must be close
    assert law.c == pytest.approx(c, rel=0.25) and law.a == pytest.approx(a, abs=0.1)
    assert law(1e7) == pytest.approx(truth(1e7), abs=0.03)
    assert np.abs(law(TOKENS) - truth(TOKENS)).max() < 0.01


def test_the_fit_predicts_better_than_the_last_point():
    truth = PowerLaw(1.0, 30.0, 0.35, fitted=True)
    losses = truth(TOKENS) + np.random.default_rng(1).normal(0, 0.003, len(TOKENS))
    law = fit_power_law(TOKENS, losses)
    assert abs(law(1e7) - truth(1e7)) < 0.2 * abs(losses[-1] - truth(1e7))


def test_too_few_points_or_a_rising_curve_fall_back_to_the_last_value_held_flat():
    two = fit_power_law([1e5, 2e5], [3.0, 2.5])
    assert not two.fitted and two(1e9) == 2.5
    rising = fit_power_law(TOKENS, np.linspace(2.0, 3.0, len(TOKENS)))  # b >= 0: a loss that rises cannot be fitted by a falling law
    assert rising(1e7) <= 3.0 + 1e-9


def test_non_finite_points_are_ignored_and_no_points_is_an_error():
    law = fit_power_law([*TOKENS, 2e6], [*PowerLaw(1.0, 30.0, 0.35, True)(TOKENS), float("nan")])
    assert law.fitted and law.c == pytest.approx(0.35, rel=0.05)
    with pytest.raises(ValueError, match="no finite"):
        fit_power_law([1e5], [float("nan")])


def test_bits_per_byte_are_extrapolated_from_a_proxy_history():
    truth = PowerLaw(1.1, 60.0, 0.4, fitted=True)
    history = [{"tokens": int(t), "val_loss": 2 * float(truth(t)), "bits_per_byte": float(truth(t))} for t in TOKENS]
    assert predicted_bits_per_byte(history, 1e7) == pytest.approx(float(truth(1e7)), rel=1e-3)
    assert extrapolate(history, 1e7, "val_loss") == pytest.approx(2 * float(truth(1e7)), rel=1e-3)
    assert predicted_bits_per_byte([{"tokens": 100, "val_loss": 1.0, "accuracy": 0.5}], 1e7) is None  # a synthetic task


def test_a_wsd_history_is_fitted_on_its_stable_phase_and_its_decay_gain_added():
    law = PowerLaw(1.2, 40.0, 0.35, True)
    stable = [{"tokens": t, "bits_per_byte": float(law(t))} for t in (1e5, 2e5, 3e5, 4e5, 5e5, 6e5, 7e5, 8e5)]
    end = {"tokens": 1e6, "bits_per_byte": float(law(1e6)) - 0.3, "decayed": True}  # the decay's drop at the end
    truth = float(law(1e7)) - 0.3  # a 10x run decays as well, and gains about as much
    predicted = extrapolate([*stable, end], 1e7)
    assert predicted == pytest.approx(truth, abs=2e-3)
    unmarked = extrapolate([*stable, {k: v for k, v in end.items() if k != "decayed"}], 1e7)  # read as one curve
    assert abs(unmarked - truth) > 2 * abs(predicted - truth)
