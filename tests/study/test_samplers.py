"""Sampler settings from the study file, constraints recorded on trials, and the feasible-only ask loop (no Ray)."""

import optuna
import pytest

from archsearch import Architecture
from archsearch.errors import ConfigError
from archsearch.study import SAMPLERS, InfeasibleSpace, Study
from archsearch.study._samplers import CONSTRAINTS_ATTR, KNOWN, REDRAWN, SpaceExhausted, ask_feasible, draw

# two depths x four mixers per layer; the bound keeps the one-layer architectures and a few two-layer ones
CONSTRAINED = "constraints: {params: {max: 40K}}\n"


def test_sampler_keys_pass_through_to_the_constructor(write_study):
    path = write_study(sampler="nsga2")
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, nsga2: {population_size: 6, mutation_prob: 0.1}}"))
    study = Study.load(path)
    assert dict(study.search.sampler_settings) == {"population_size": 6, "mutation_prob": 0.1}
    sampler = SAMPLERS["nsga2"].build(0, 40, dict(study.search.sampler_settings))
    assert sampler._population_size == 6  # the study's value, not the default sized from the trials
    assert SAMPLERS["nsga2"].build(0, 60)._population_size == 10 and SAMPLERS["nsga2"].build(0, 8)._population_size == 4


@pytest.mark.parametrize(
    ("settings", "key", "fragment"),
    [
        ("nsga2: {populaton_size: 6}", "search.nsga2.populaton_size", "unknown NSGAIISampler setting"),
        ("nsga2: {population_size: 1}", "search.nsga2.population_size", "refuses 1"),
        ("nsga2: {mutation_prob: 2.0}", "search.nsga2.mutation_prob", "refuses 2.0"),
        ("nsga2: {seed: 3}", "search.nsga2.seed", "set by the study"),
        ("nsga2: {crossover: uniform}", "search.nsga2.crossover", "refuses 'uniform'"),
        ("tpe: {n_startup_trials: 3}", "search.tpe", "search.sampler is nsga2"),
        ("nsga2: [1]", "search.nsga2", "expected a mapping"),
    ],
)
def test_bad_sampler_settings_are_one_line(write_study, settings, key, fragment):
    path = write_study(sampler="nsga2")
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, " + settings + "}"))
    with pytest.raises(ConfigError) as info:
        Study.load(path)
    assert info.value.key == key and info.value.line == 5 and fragment in info.value.message
    assert "\n" not in str(info.value)


def _ostudy(study, sampler="random", seed=0):
    return optuna.create_study(directions=[o.direction for o in study.objectives],
                               sampler=SAMPLERS[sampler].build(seed, study.search.trials))


def test_infeasible_draws_are_redrawn_and_recorded_as_constraints(write_study):
    study = Study.load(write_study(extra=CONSTRAINED))
    ostudy = _ostudy(study)
    for _ in range(6):
        trial, config = ask_feasible(ostudy, lambda t: draw(study, t), count_infeasible=False, max_draws=50)
        assert config["reason"] == "" and study.violations(Architecture.from_json(config["arch"])) == []
        assert all(v <= 0 for v in trial.user_attrs[CONSTRAINTS_ATTR])
        ostudy.tell(trial, [1.0, 1.0])
    redrawn = [t for t in ostudy.get_trials() if t.user_attrs.get("status") == REDRAWN]
    assert redrawn, "the bound should have made some draws infeasible"
    for t in redrawn:
        assert t.state == optuna.trial.TrialState.PRUNED and max(t.user_attrs[CONSTRAINTS_ATTR]) > 0
        if hasattr(t, "constraints") and isinstance(t.constraints, dict):  # Optuna 5: the samplers read these
            assert max(t.constraints.values()) > 0


def test_counted_infeasible_draws_are_returned(write_study):
    study = Study.load(write_study(extra=CONSTRAINED))
    ostudy = _ostudy(study)
    reasons = [ask_feasible(ostudy, lambda t: draw(study, t), count_infeasible=True, max_draws=1)[1]["reason"] for _ in range(12)]
    assert any(reasons) and not all(reasons)


def test_a_space_of_infeasible_draws_stops_after_the_bound_with_one_line(write_study):
    study = Study.load(write_study(extra="constraints: {params: {min: 1K}}\n"))  # every draw is feasible here ...
    ostudy = _ostudy(study)
    always = lambda t: {**draw(study, t), "reason": "params too many"}  # ... so make every draw infeasible  # noqa: E731
    with pytest.raises(InfeasibleSpace, match=r"^7 draws in a row were infeasible \(most often: params too many\)") as info:
        ask_feasible(ostudy, always, count_infeasible=False, max_draws=7)
    assert "\n" not in str(info.value) and len(ostudy.get_trials()) == 7


def test_a_measured_architecture_is_told_its_result_and_asked_again_until_the_space_is_exhausted(write_study):
    from archsearch.sampling import enumerate_space

    study = Study.load(write_study())  # 4 mixers at depth 1, 16 at depth 2: 20 architectures
    size = len({a.digest for a in enumerate_space(study.space)})
    ostudy = _ostudy(study)
    known = {}
    with pytest.raises(SpaceExhausted) as info:
        for _ in range(size + 1):
            trial, config = ask_feasible(ostudy, lambda t: draw(study, t), False, 200, known.get)
            assert config["digest"] not in known
            known[config["digest"]] = (optuna.trial.TrialState.COMPLETE, [1.0 + len(known), 2.0])
            ostudy.tell(trial, known[config["digest"]][1])
    assert len(known) == size == 20 and "\n" not in str(info.value)
    assert str(info.value).startswith("200 draws in a row gave architectures measured already (200) or infeasible (0): the space looks exhausted")
    told = [t for t in ostudy.get_trials() if t.user_attrs.get("status") == KNOWN]
    assert len(told) >= 200  # every re-draw was told, with the values its architecture was measured at
    for t in told:
        arch = draw(study, t)  # the walk again, on the trial's own parameters
        assert t.state == optuna.trial.TrialState.COMPLETE and t.values == known[arch["digest"]][1]


def test_re_asks_of_measured_architectures_are_bounded_and_a_running_one_is_told_failed(write_study):
    study = Study.load(write_study())
    ostudy = _ostudy(study)
    running = lambda digest: (optuna.trial.TrialState.FAIL, None)  # every architecture is being measured  # noqa: E731
    with pytest.raises(SpaceExhausted, match=r"^5 draws in a row gave architectures measured already \(5\)"):
        ask_feasible(ostudy, lambda t: draw(study, t), False, 5, running)
    assert [t.state for t in ostudy.get_trials()] == [optuna.trial.TrialState.FAIL] * 5


def test_known_and_redrawn_draws_are_not_counted_as_finished_trials_on_resume(write_study):
    from archsearch.study._optuna_ray import recover

    study = Study.load(write_study(extra=CONSTRAINED))
    ostudy = _ostudy(study)
    trial, _ = ask_feasible(ostudy, lambda t: draw(study, t), False, 50)
    ostudy.tell(trial, [1.0, 2.0])  # the one trial
    everything = lambda digest: (optuna.trial.TrialState.COMPLETE, [1.0, 2.0])  # noqa: E731
    with pytest.raises(SpaceExhausted):
        ask_feasible(ostudy, lambda t: draw(study, t), False, 10, everything)
    statuses = [t.user_attrs.get("status") for t in ostudy.get_trials()]
    assert statuses.count(None) == 1 and KNOWN in statuses and len(statuses) >= 11
    assert recover(ostudy, study) == 1


TWO = "d_model: 32\nn_layers: 1\nlayers: {mixer: {choice: [attn, deltanet]}, channel: glu, heads: 2}\n"


def _searcher(study, sampler="random"):
    from archsearch.study._optuna_ray import ArchSearch, DefineByRun

    return ArchSearch(space=DefineByRun(study, []), metric=["bits_per_byte", "train_tokens_per_s"], mode=["min", "max"],
                      sampler=SAMPLERS[sampler].build(0, study.search.trials))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_a_searcher_with_a_running_trial_pickles_as_tune_pickles_it(write_study, sampler, tmp_path):
    # Tune pickles the searcher with its tuner and at each experiment checkpoint; Optuna 5.1's NSGA-II sampler holds
    # a thread lock, which failed every study at its start
    import ray.cloudpickle

    searcher = _searcher(Study.load(write_study(space=TWO, extra="")), sampler)
    running = searcher.suggest("a")
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))
    assert copy.measuring == {"a": running["digest"]}
    searcher.save(str(tmp_path / "searcher.pkl"))
    assert (tmp_path / "searcher.pkl").stat().st_size > 0
    assert searcher.suggest("b")["digest"] != running["digest"]  # the searcher itself still samples after both


def test_the_searcher_skips_architectures_running_or_measured_and_finishes_when_none_is_new(write_study):
    from ray.tune.search import Searcher

    study = Study.load(write_study(space=TWO, extra=""))
    searcher = _searcher(study)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first["digest"] != second["digest"]  # the second draw skipped the architecture the first is measuring
    row = {"trial": first["trial_number"], "status": "ok", "digest": first["digest"], "bits_per_byte": 2.0, "train_tokens_per_s": 9.0}
    searcher.finish("a", row)
    searcher._space.learn(row)
    assert searcher.suggest("c") == Searcher.FINISHED and searcher.exhausted.startswith("100 draws in a row gave architectures measured already (100)")
    told = [t for t in searcher._ot_study.get_trials() if t.user_attrs.get("status") == KNOWN]
    states = {t.state for t in told}
    assert len(told) == 100 and states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    assert all(t.values == [2.0, 9.0] for t in told if t.state == optuna.trial.TrialState.COMPLETE)


def test_with_remeasure_a_redrawn_architecture_is_a_trial_with_new_seeds(write_study):
    path = write_study(space=TWO)
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, repeats: 2, remeasure: true}"))
    searcher = _searcher(Study.load(path))
    configs = [searcher.suggest(str(i)) for i in range(5)]  # five trials of a two-architecture space
    seeds: dict[str, list[int]] = {}
    for c in configs:
        seeds.setdefault(c["digest"], []).append(c["seed"])
    assert len(seeds) == 2 and all(s == [0, 2, 4, 6, 8][:len(s)] for s in seeds.values())
    assert not any(t.user_attrs.get("status") == KNOWN for t in searcher._ot_study.get_trials())
