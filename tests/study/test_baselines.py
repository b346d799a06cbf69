"""Baselines: seed hybrids and architecture files read from the study, enqueued with the space's parameters where
the space can express them, else as fixed architectures the walk passes through (no Ray)."""

import optuna
import pytest

from archsearch.errors import ConfigError
from archsearch.study import SEEDS, Study, seed_hybrid
from archsearch.study._baselines import BASELINE_ATTR, FIXED_ATTR, enqueue_baselines, space_params
from archsearch.study._samplers import ask_feasible, draw


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


def test_seed_hybrids_place_their_attention_where_the_papers_do():
    mixers = lambda name, n: [layer.mixer.family for layer in seed_hybrid(name, 64, n, 256, False).layers]  # noqa: E731
    assert mixers("deltanet-swa", 4) == ["deltanet", "swa", "deltanet", "swa"]
    assert [i for i, m in enumerate(mixers("deltanet-2attn", 12)) if m == "attn"] == [1, 6]
    assert [i for i, m in enumerate(mixers("h3-2attn", 8)) if m == "attn"] == [1, 4]
    assert set(SEEDS) >= {"deltanet-swa", "deltanet-2attn", "h3-2attn", "transformer"}


def test_baselines_are_read_enqueued_and_marked(write_study, tmp_path):
    arch = seed_hybrid("transformer", 32, 2, 256, False)
    (tmp_path / "mine.yaml").write_text(arch.to_yaml().replace("heads: 8", "heads: 4"))
    study = Study.load(write_study(extra="baselines: [deltanet, mine.yaml, {seed: transformer, n_layers: 3}]\n"))
    assert [b.name for b in study.baselines] == ["deltanet", "mine", "transformer@32x3"]
    assert Study.load(write_study(extra="baselines: [deltanet, mine.yaml, {seed: transformer, n_layers: 3}]\n")).frozen["baselines"]
    inside = study.baselines[0].arch
    assert space_params(study.space, inside) is None  # the space fixes DeltaNet's heads at 2, the seed has 4
    ostudy = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    lines = enqueue_baselines(ostudy, study.space, study.baselines)
    assert len(lines) == 3 and all("fixed architecture" in line for line in lines)
    assert enqueue_baselines(ostudy, study.space, study.baselines) == []  # a resume queues none twice
    configs = []
    for _ in range(4):
        trial, config = ask_feasible(ostudy, lambda t: draw(study, t), count_infeasible=False, max_draws=50)
        ostudy.tell(trial, [1.0, 1.0])
        configs.append(config)
    assert [c["baseline"] for c in configs] == ["deltanet", "mine", "transformer@32x3", ""]
    assert configs[0]["digest"] == inside.digest and configs[1]["arch"] and configs[3]["digest"]


def test_a_baseline_the_space_expresses_is_enqueued_as_parameters(write_study):
    study = Study.load(write_study())
    seed = seed_hybrid("transformer", 32, 1, 256, True)
    heads2 = seed.from_yaml(seed.to_yaml().replace("heads: 8", "heads: 2"))  # the space's attention has 2 heads
    params = space_params(study.space, heads2)
    assert params is not None
    ostudy = optuna.create_study(directions=["minimize", "maximize"])
    ostudy.enqueue_trial(params, user_attrs={BASELINE_ATTR: "t"})
    trial, config = ask_feasible(ostudy, lambda t: draw(study, t), count_infeasible=False, max_draws=5)
    assert config["digest"] == heads2.digest and FIXED_ATTR not in trial.user_attrs and trial.params == params


@pytest.mark.parametrize(
    ("entry", "key", "fragment"),
    [
        ("[gpt5]", "baselines[0]", "unknown seed hybrid 'gpt5'"),
        ("[nope.yaml]", "baselines[0]", "no such file"),
        ("[deltanet, deltanet]", "baselines[1]", "listed twice"),
        ("[{seed: deltanet, width: 3}]", "baselines[0]", "expected {seed: NAME"),
        ("[{seed: transformer, d_model: 36}]", "baselines[0]", "heads"),
        ("deltanet", "baselines", "expected a list"),
    ],
)
def test_bad_baselines_are_one_line(write_study, entry, key, fragment):
    with pytest.raises(ConfigError) as info:
        Study.load(write_study(extra=f"baselines: {entry}\n"))
    assert (info.value.line, info.value.key) == (6, key) and fragment in info.value.message, str(info.value)


def test_the_front_marks_baselines_and_says_which_it_dominates(tmp_path, capsys):
    import pandas as pd

    from archsearch.cli import main
    from archsearch.front import compute_front, plot_front
    from archsearch.study import load_run
    from tests.test_front import TABLE, make_run

    path = make_run(tmp_path / "run", TABLE)
    trials = pd.read_csv(path / "trials.csv")
    trials["baseline"] = trials["trial"].map({3: "deltanet-2attn", 4: "transformer"})  # 3 is dominated, 4 on the front
    trials.to_csv(path / "trials.csv", index=False)
    front = compute_front(load_run(path))
    assert front.baselines() == [("deltanet-2attn", 3, [1, 4]), ("transformer", 4, [])]
    assert "transformer" in set(front.table()["baseline"].dropna())
    assert plot_front(front, tmp_path / "f.png").stat().st_size > 1000
    assert main(["front", str(path)]) == 0
    out = capsys.readouterr().out
    assert "baseline deltanet-2attn (trial 3): dominated by the front's trials 1, 4" in out
    assert "baseline transformer (trial 4): on the front (not dominated)" in out


@pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine
def test_a_study_run_trains_its_baseline_first_and_spends_no_trial_on_infeasible_draws(write_study, tmp_path, ray_shutdown):
    """The one Ray run of these tests: the glue asks through the feasible-only loop and enqueues the baselines."""
    import pandas as pd

    from archsearch.study import run

    extra = "constraints: {params: {max: 42.6K}}\nbaselines: [{seed: transformer, n_layers: 1}]\n"
    run_dir = run(str(write_study(trials=3, concurrency=1, extra=extra)), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 3 and set(table["status"]) == {"ok"}
    baseline = table["baseline"] if "baseline" in table.columns else table["p:baseline"]
    assert baseline.fillna("").tolist()[0].startswith("transformer")
