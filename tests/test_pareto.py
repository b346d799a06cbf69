"""Pareto maths: the mask, exact hypervolume, default reference point and knee, on hand-made arrays."""

import itertools

import numpy as np
import pytest

from archsearch.pareto import default_reference, hypervolume, knee, pareto_mask

# trial: (bits_per_byte, train_tokens_per_s); front: 0, 1, 2, 4 (4 ties 1); 3, 5, 6 are dominated
TABLE = {0: (1.0, 100.0), 1: (1.2, 300.0), 2: (1.5, 500.0), 3: (1.3, 250.0), 4: (1.2, 300.0), 5: (1.0, 90.0), 6: (2.0, 500.0)}


# --- pareto mask -------------------------------------------------------------------------------------------------------


def test_pareto_mask_keeps_ties_and_drops_dominated_rows_with_a_maximised_objective():
    values = np.array([TABLE[t] for t in range(7)])
    mask = pareto_mask(values, ["minimize", "maximize"])
    assert np.flatnonzero(mask).tolist() == [0, 1, 2, 4]


def test_pareto_mask_flips_with_the_directions():
    values = np.array([[1.0, 1.0], [2.0, 2.0], [1.5, 3.0]])
    assert pareto_mask(values, ["minimize", "minimize"]).tolist() == [True, False, False]
    assert pareto_mask(values, ["maximize", "maximize"]).tolist() == [False, True, True]
    assert pareto_mask(values, ["min", "max"]).tolist() == [True, False, True]


def test_a_point_equal_on_one_objective_and_worse_on_the_other_is_dominated():
    values = np.array([[1.0, 5.0], [1.0, 6.0], [1.0, 5.0]])
    assert pareto_mask(values, ["minimize", "minimize"]).tolist() == [True, False, True]


# --- hypervolume -------------------------------------------------------------------------------------------------------


def test_hypervolume_2d_staircase_by_hand():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, [4.0, 4.0], ["minimize", "minimize"]) == pytest.approx(6.0)
    # the same front with the second objective maximised (negated values, negated reference)
    assert hypervolume(points * [1, -1], [4.0, -4.0], ["minimize", "maximize"]) == pytest.approx(6.0)
    # dominated points, duplicates and points beyond the reference add nothing
    extra = np.vstack([points, [[3.5, 3.5], [2.0, 2.0], [5.0, 0.0]]])
    assert hypervolume(extra, [4.0, 4.0], ["minimize", "minimize"]) == pytest.approx(6.0)


def test_hypervolume_3d_by_hand():
    mm = ["minimize"] * 3
    assert hypervolume(np.array([[1.0, 1.0, 1.0]]), [2, 2, 2], mm) == pytest.approx(1.0)
    # two boxes of 4 and 2 sharing a unit cube
    assert hypervolume(np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), [2, 2, 2], mm) == pytest.approx(5.0)
    # three boxes of 6, pairwise overlaps of 2, a common unit cube: 18 - 6 + 1
    points = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0]])
    assert hypervolume(points, [4, 4, 4], mm) == pytest.approx(13.0)
    assert hypervolume(-points, [-4, -4, -4], ["maximize"] * 3) == pytest.approx(13.0)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_equals_the_count_of_dominated_unit_cells(m):
    rng = np.random.default_rng(m)
    points = rng.integers(0, 5, size=(8, m)).astype(float)
    reference = [5.0] * m
    cells = sum(any((p <= np.array(c)).all() for p in points) for c in itertools.product(range(5), repeat=m))
    assert hypervolume(points, reference, ["minimize"] * m) == pytest.approx(cells)


def test_default_reference_is_the_worst_value_pushed_ten_percent_of_the_range_out():
    values = np.array([[1.0, 100.0], [2.0, 300.0]])
    assert default_reference(values, ["minimize", "maximize"]).tolist() == pytest.approx([2.1, 80.0])
    assert default_reference(np.array([[3.0, 0.0]]), ["minimize", "minimize"]).tolist() == pytest.approx([3.3, 0.1])


# --- knee --------------------------------------------------------------------------------------------------------------


def test_knee_is_the_front_point_closest_to_utopia_after_scaling():
    front = np.array([[0.0, 10.0], [0.4, 4.0], [1.0, 0.0]])
    assert knee(front, ["minimize", "minimize"]) == 1
    assert knee(front * [1, -1], ["minimize", "maximize"]) == 1
    assert knee(np.array([[5.0, 5.0]]), ["minimize", "maximize"]) == 0
