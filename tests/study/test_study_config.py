"""Study files: what they may say, and one-line errors for what they may not."""

import pytest

from archsearch.errors import ConfigError, SpaceError
from archsearch.study import Study


def test_a_study_loads_with_its_space_objectives_and_search(write_study):
    study = Study.load(write_study(trials=7, concurrency=3, sampler="tpe"))
    assert study.name == "t" and study.space.name == "tiny" and study.search.trials == 7 and study.search.sampler == "tpe"
    assert [(o.metric, o.direction) for o in study.objectives] == [("bits_per_byte", "minimize"), ("train_tokens_per_s", "maximize")]
    assert study.proxy.tokens == 2048 and study.proxy.device == "cpu"


def test_a_fidelity_ladder_takes_token_counts_and_its_top_rung_is_the_proxy_budget(write_study):
    ladder = "fidelity: {rungs: [8K, 32K, 128K], keep: 0.25}\n"
    path = write_study(tokens="128K", extra=ladder)
    path.write_text(path.read_text().replace("{train_tokens_per_s: max}", "{params: min}"))  # what every rung measures
    study = Study.load(path)
    assert study.fidelity.rungs == (8000, 32000, 128000) and study.fidelity.keep == 0.25
    assert study.proxy.tokens == 128000 and study.fidelity.lower == (8000, 32000) and study.fidelity.top == 2
    assert study.frozen["proxy"]["tokens"] == 128000  # the frozen study (what a resume compares) reloads the same
    path.write_text(path.read_text().replace("tokens: 128K, ", ""))  # without proxy.tokens, the top rung sets it
    assert Study.load(path).proxy.tokens == 128000
    assert Study.load(write_study()).fidelity is None


def test_every_token_count_of_the_proxy_takes_suffixes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space: {d_model: 32, n_layers: 2, layers: {mixer: attn, channel: glu}}\nobjectives: [val_loss]\n"
                    "proxy: {tokens: 1M, eval_tokens: 64K, warmup_tokens: 7K, predict_tokens: 1.5M}\n")
    proxy = Study.load(path).proxy
    assert (proxy.tokens, proxy.eval_tokens, proxy.warmup_tokens, proxy.predict_tokens) == (1_000_000, 64_000, 7_000, 1_500_000)
    path.write_text(path.read_text().replace("predict_tokens: 1.5M", "predict_tokens: null"))
    assert Study.load(path).proxy.predict_tokens is None
    path.write_text(path.read_text().replace("warmup_tokens: 7K", "warmup_tokens: soon"))
    with pytest.raises(ConfigError, match=r"s.yaml:3: proxy.warmup_tokens: expected a whole number of tokens"):
        Study.load(path)


def test_an_inline_space_works_and_its_errors_name_the_study_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space:\n  d_model: 32\n  n_layers: 2\n  layers: {mixer: attn, channel: glu, heads: 3}\nobjectives: [val_loss]\n")
    with pytest.raises(SpaceError, match=r"s.yaml:4: space.layers.heads|s.yaml:4: layers.heads"):
        Study.load(path)


@pytest.mark.parametrize(
    ("extra_or_change", "line", "key", "fragment"),
    [
        ("unknown: 1\n", 6, "unknown", "unknown key"),
        ("plugins: [nope.py]\n", 6, "plugins", "no such file"),
        ("constraints: {params: {max: 1K}}\n", 6, "constraints.params", "no architecture"),
    ],
)
def test_bad_study_sections_are_one_line(write_study, extra_or_change, line, key, fragment):
    with pytest.raises(ConfigError) as info:
        Study.load(write_study(extra=extra_or_change))
    assert (info.value.line, info.value.key) == (line, key) and fragment in info.value.message


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("space: space.yaml\nobjectives: [loss]\n", "objectives[0]", "unknown metric 'loss'"),
        ("space: space.yaml\nobjectives: [accuracy]\n", "objectives[0]", "synthetic proxy task"),
        ("space: space.yaml\nobjectives: [{val_loss: up}]\n", "objectives[0].val_loss", "min or max"),
        ("space: space.yaml\nobjectives: [decode_tokens_per_s]\n", "objectives[0]", "inference: true"),
        ("space: space.yaml\nobjectives: [val_loss, val_loss]\n", "objectives[1]", "listed twice"),
        ("space: space.yaml\nobjectives: []\n", "objectives", "non-empty"),
        ("space: missing.yaml\nobjectives: [val_loss]\n", "space", "no such file"),
        ("space: space.yaml\nobjectives: [val_loss]\nsearch: {sampler: cmaes}\n", "search.sampler", "nsga2"),
        ("space: space.yaml\nobjectives: [val_loss]\nsearch: {trials: 0}\n", "search.trials", "positive"),
        ("space: space.yaml\nobjectives: [val_loss]\nsearch: {resources: {tpu: 1}}\n", "search.resources", "cpu"),
        ("space: space.yaml\nobjectives: [val_loss]\nsearch: {early_stopping: {grace: 2}}\n", "search.early_stopping", "use fidelity"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M]}\n", "fidelity.rungs", "2 to 8 ascending"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [4M, 1M]}\n", "fidelity.rungs[1]", "above the rung before (4,000,000)"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M, 1M]}\n", "fidelity.rungs[1]", "above the rung before"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M, lots]}\n", "fidelity.rungs[1]", "whole number of tokens"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [100, 1M]}\n", "fidelity.rungs[0]", "one training step (4,096 tokens"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M, 4M], keep: 1}\n", "fidelity.keep", "between 0 and 1"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M, 4M], keep: 0}\n", "fidelity.keep", "between 0 and 1"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {keep: 0.5}\n", "fidelity.rungs", "missing"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: [1M, 4M]\n", "fidelity", "mapping of rungs, keep"),
        ("space: space.yaml\nobjectives: [val_loss]\nfidelity: {rungs: [1M, 4M], promote: 2}\n", "fidelity.promote", "unknown setting"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {tokens: 2M}\nfidelity: {rungs: [1M, 4M]}\n", "fidelity.rungs", "proxy.tokens says 2,000,000 (line 3)"),
        ("space: space.yaml\nobjectives: [val_loss, decode_tokens_per_s]\nproxy: {inference: true}\nfidelity: {rungs: [1M, 4M]}\n", "objectives[1]", "not measured at the fidelity ladder's rungs"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {tokens: 1.5}\n", "proxy.tokens", "whole number of tokens"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {tokens: lots}\n", "proxy.tokens", "whole number of tokens"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {lr: fast}\n", "proxy.lr", "number"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {tokenz: 5}\n", "proxy.tokenz", "unknown proxy setting"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {task: poetry}\n", "proxy.task", "unknown proxy task"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {lr: -1}\n", "proxy.lr", "above 0"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {decay: 2}\n", "proxy.decay", "from 0 to 1"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {device: tpu}\n", "proxy.device", "unknown device"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {seq_len: 100000000}\n", "proxy.seq_len", "at most 1,048,576"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {data: no/such/corpus}\n", "proxy.data", "no such file or folder"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {data: {val_fraction: 0}}\n", "proxy.data.val_fraction", "between 0 and 1"),
        ("space: space.yaml\nobjectives: [val_loss]\nplugins: [no_such_plugin_module]\n", "plugins", "ModuleNotFoundError"),
        ("space: space.yaml\nobjectives: [val_loss]\nproxy: {data: {sauce: x}}\n", "proxy.data.sauce", "unknown setting"),
        ("space: space.yaml\nobjectives: [{val_loss: {repeat: 3}}]\n", "objectives[0].val_loss", "expected min or max"),  # fuzzed
    ],
)
def test_bad_study_values_are_one_line(write_study, tmp_path, text, key, fragment):
    write_study()
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Study.load(path)
    assert info.value.key == key and fragment in info.value.message and str(info.value).startswith(f"{path}:")


def test_the_documented_study_example_loads(tmp_path):
    import re
    from pathlib import Path

    block = re.search(r"```yaml\n(.*?)```", Path("docs/studies.md").read_text(), re.S).group(1)
    space = str(Path("search_spaces/deltanet_swa.yaml").resolve())
    (tmp_path / "my_blocks.py").write_text("")  # the documented plugin, empty
    path = tmp_path / "study.yaml"
    path.write_text(block.replace("../search_spaces/deltanet_swa.yaml", space))
    study = Study.load(path)
    assert study.name == "deltanet-hybrids" and study.search.sampler == "nsga2" and study.constraints.bounds


def test_a_settings_field_added_later_keeps_the_keys_of_results_recorded_before_it():
    import dataclasses
    import json
    from pathlib import Path

    study = Study.load("studies/gpu.yaml")  # it sets lr_width 256
    plain = dataclasses.replace(study, proxy=dataclasses.replace(study.proxy, lr_width=None))
    records = Path("benchmarks/validation.20.h200/validation.jsonl").read_text().splitlines()
    recorded = {json.loads(line)["settings"] for line in records}
    assert plain.proxy_key in recorded  # recorded before proxy.lr_width existed: the key holds it only when set
    assert study.proxy_key != plain.proxy_key
    widened = json.loads(Path("benchmarks/validation.20w.h200/validation.json").read_text())
    assert widened["proxy_key"] == study.proxy_key  # the validation of the study as it is
