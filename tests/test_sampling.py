"""The define-by-run walk: determinism, Optuna's view of the space, enumeration and size."""

import glob

import optuna
import pytest

from archsearch import OptunaSampler, RandomSampler, enumerate_space, load_space, sample, space_size
from archsearch.architecture import Architecture
from archsearch.sampling import _distinct, _unrank

SPACES = sorted(glob.glob("search_spaces/*.yaml"))
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("path", SPACES)
def test_the_same_seed_draws_the_same_architectures(path):
    space = load_space(path)
    first = [sample(space, RandomSampler(7)).digest for _ in range(3)]
    again = [sample(space, RandomSampler(7)).digest for _ in range(3)]
    assert first == again
    assert len({sample(space, seed).digest for seed in range(20)}) > 1


def test_optuna_sees_only_the_parameters_that_matter(space_of):
    space = space_of("d_model: 64\nn_layers: 2\nlayers: {mixer: {choice: [attn, swa]}, channel: glu, window: {choice: [8, 16]}}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        arch = sample(space, trial)
        study.tell(trial, arch.cost().params)
    for t in study.trials:
        if t.params["layers.mixer"] == "attn":
            assert set(t.params) == {"layers.mixer"}
        else:
            assert set(t.params) == {"layers.mixer", "layers.window"}


def test_an_optuna_trial_replays_to_the_same_architecture():
    space = load_space("search_spaces/open.yaml")
    from archsearch.sampling import Infeasible

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    replayed = 0
    for _ in range(10):  # some draws of an open space are infeasible: those are refused, not replayed
        trial = study.ask()
        try:
            arch = sample(space, trial)
        except Infeasible:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        replay = sample(space, optuna.trial.FixedTrial(trial.params))
        assert replay == arch and replay.digest == arch.digest
        study.tell(trial, 0.0)
        replayed += 1
    assert replayed >= 3


def test_searched_positions_in_optuna_are_one_categorical_over_combinations(space_of):
    space = space_of("d_model: 64\nn_layers: 6\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: attn, at: {positions: 2}}]")
    study = optuna.create_study()
    trial = study.ask()
    arch = sample(space, trial)
    dist = trial.distributions["layers.place[0].at"]
    assert len(dist.choices) == 15
    assert sum(layer.mixer.family == "attn" for layer in arch.layers) == 2


def test_searched_positions_with_many_combinations_become_repaired_integers():
    class Trial:
        def suggest_int(self, name, low, high):
            return 3  # every slot asks for position 3: repairs must spread them

    picks = OptunaSampler(Trial()).combination("p", 40, 5)
    assert len(set(picks)) == 5 and 3 in picks
    assert _distinct([0, 0, 0], 3) == (0, 1, 2)


def test_depth_dependent_positions_get_distinct_names_per_depth(space_of):
    space = space_of("d_model: 64\nn_layers: {choice: [4, 6]}\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: attn, at: {positions: 1}}]")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names = set()
    for _ in range(20):
        trial = study.ask()
        sample(space, trial)
        study.tell(trial, 0.0)
        names |= set(trial.params)
    assert {"layers.place[0].at|n=4", "layers.place[0].at|n=6"} <= names


def test_unrank_lists_combinations_in_lexicographic_order():
    import itertools
    import math

    assert [_unrank(i, 6, 3) for i in range(math.comb(6, 3))] == list(itertools.combinations(range(6), 3))


def test_size_is_exact_when_enumerable(space_of):
    space = space_of("d_model: {choice: [64, 128]}\nn_layers: 4\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: swa, at: {positions: 2}, window: {choice: [8, 16]}}]")
    size = space_size(space)
    assert (size.assignments, size.architectures) == (2 * 6 * 2, 24)
    assert len({a for a in enumerate_space(space) if isinstance(a, Architecture)}) == 24


def test_size_is_infinite_with_a_continuous_parameter(space_of):
    space = space_of("d_model: 64\nn_layers: 1\nlayers: {mixer: attn, channel: moe, capacity_factor: {float: [1, 2]}}")
    assert space_size(space).continuous == ("layers.capacity_factor",)


def test_size_of_a_huge_space_is_estimated_close_to_the_truth(space_of):
    # 12 layers, each one of 3 mixers: 3^12 = 531441 assignments, more than the enumeration limit
    space = space_of("d_model: 64\nn_layers: 12\nlayers: {mixer: {choice: [attn, deltanet, hyena], per_layer: true}, channel: glu}")
    size = space_size(space, limit=1000)
    assert size.assignments is None and size.estimate == pytest.approx(3**12, rel=0.01)
