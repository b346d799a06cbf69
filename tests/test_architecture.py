"""The normal form: round trips, hashing, summaries and the cost model."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archsearch import Architecture, BlockSpec, ConfigError, LayerSpec, load_space, sample
from archsearch.blocks import REGISTRY

OPEN = load_space("search_spaces/open.yaml")


def feasible(seed):
    try:
        return sample(OPEN, seed)
    except Exception:
        return None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9))
def test_yaml_and_json_round_trips_are_exact(seed):
    arch = feasible(seed)
    if arch is None:
        return
    assert Architecture.from_yaml(arch.to_yaml()) == arch
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_yaml(arch.to_yaml()).digest == arch.digest


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.randoms(use_true_random=False), st.booleans())
def test_equal_architectures_hash_equal_however_written(seed, rnd, spell_out):
    arch = feasible(seed)
    if arch is None:
        return
    doc = arch.to_dict()
    for layer in doc["layers"]:
        for role in ("mixer", "channel"):
            block = layer[role]
            if block == "none":
                continue
            fam = REGISTRY[block["block"]]
            items = [(k, v) for k, v in block.items() if k != "block"]
            if not spell_out:  # leave out parameters at their default
                items = [(k, v) for k, v in items if fam.params[k].default != v]
            items = [(k, int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in items]  # 2.0 -> 2
            rnd.shuffle(items)
            layer[role] = {"block": block["block"], **dict(items)} if items else block["block"]
    keys = list(doc)
    rnd.shuffle(keys)
    rewritten = Architecture.from_yaml(json.dumps({k: doc[k] for k in keys}))
    assert rewritten == arch and hash(rewritten) == hash(arch) and rewritten.digest == arch.digest


def test_digest_is_stable_across_processes():
    a = Architecture(64, (LayerSpec(BlockSpec.make("attn", {"heads": 4}, 64), BlockSpec.make("glu", {}, 64)),))
    assert a.digest == Architecture.from_yaml(a.to_yaml()).digest and len(a.digest) == 12
    import subprocess
    import sys

    code = "from archsearch import *; a = Architecture(64, (LayerSpec(BlockSpec.make('attn', {'heads': 4}, 64), BlockSpec.make('glu', {}, 64)),)); print(a.digest)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == a.digest


def test_the_committed_tables_digests_are_those_of_their_architectures_today():
    # a parameter added later (omit_default) must not move the digests that committed tables are keyed by
    import pandas as pd

    rows = pd.read_csv("benchmarks/tabular.h200.csv", comment="#", dtype={"digest": str})
    assert any("deltanet" in a for a in rows["arch"])
    assert [Architecture.from_json(a).digest for a in rows["arch"]] == list(rows["digest"])
    assert "qv_conv" not in Architecture(64, (LayerSpec(BlockSpec.make("deltanet", {}, 64), None),)).to_yaml()
    changed = Architecture(64, (LayerSpec(BlockSpec.make("deltanet", {"qv_conv": False}, 64), None),))
    assert "qv_conv: false" in changed.to_yaml() and Architecture.from_yaml(changed.to_yaml()) == changed


def test_summary_names_mixers_channels_width_and_size():
    layer = lambda m, c: LayerSpec(BlockSpec.make(m, {}, 384), BlockSpec.make(c, {}, 384) if c else None)  # noqa: E731
    a = Architecture(384, tuple(layer(m, "glu") for m in ["deltanet"] * 2 + ["swa"] + ["deltanet"] * 2 + ["swa", "attn", "deltanet"]))
    assert a.summary().startswith("DDSDDSAD d=384 ") and a.summary().endswith("M")
    b = Architecture(384, (layer("gau", None), layer("attn", "moe")))
    assert b.summary().startswith("GA/-m d=384 ")


def test_parameter_count_by_hand_for_a_small_attention_model():
    d, v = 64, 256
    a = Architecture(d, (LayerSpec(BlockSpec.make("attn", {"heads": 4, "kv_heads": 2}, d), BlockSpec.make("glu", {"kind": "mlp", "expansion": 4.0}, d)),), v, tie_embeddings=False)
    attn = d * d * 2 + 2 * d * (2 * 16)  # Wq, Wo, and Wk, Wv for 2 kv heads of 16
    mlp = 2 * d * 256
    assert a.cost().params == 2 * v * d + d + 2 * d + attn + mlp


def test_mixture_of_experts_counts_active_parameters_separately():
    d = 64
    moe = BlockSpec.make("moe", {"experts": 8, "top_k": 2}, d)
    a = Architecture(d, (LayerSpec(BlockSpec.make("attn", {"heads": 4}, d), moe),))
    expert = 3 * d * 192  # swiglu, hidden ceil(8/3 * 64 / 64) * 64
    assert a.cost().params - a.cost().active_params == 6 * expert


def test_state_bytes_grow_with_context_only_for_growing_caches():
    d = 64
    arch = lambda m, p: Architecture(d, (LayerSpec(BlockSpec.make(m, p, d), None),))  # noqa: E731
    for name, p, grows in [("attn", {"heads": 4}, True), ("swa", {"heads": 4, "window": 64}, False), ("deltanet", {"heads": 4}, False), ("h3", {}, False), ("hyena", {}, True)]:
        small, large = arch(name, p).cost(128).state_bytes, arch(name, p).cost(4096).state_bytes
        assert (large > small) == grows, name
    assert arch("attn", {"heads": 4}).cost(1000).state_bytes == 2 * 64 * 1000 * 2  # K and V, 64 wide, bf16


def test_flops_per_token_of_attention_grow_with_context():
    d = 64
    a = Architecture(d, (LayerSpec(BlockSpec.make("attn", {"heads": 4}, d), None),))
    assert a.cost(2048).flops_per_token - a.cost(1024).flops_per_token == pytest.approx(4 * d * (2049 - 1025) / 2)
    assert math.isfinite(a.cost(1).flops_per_token)


def test_constructing_an_architecture_that_breaks_a_family_rule_fails():
    from archsearch import ConstraintViolation

    with pytest.raises(ConstraintViolation, match="heads"):
        Architecture(60, (LayerSpec(BlockSpec.make("attn", {"heads": 8}, 60), None),))


def test_loading_an_architecture_with_an_unknown_parameter_names_it(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text("d_model: 64\nlayers:\n  - mixer: {block: attn, heads: 4, windw: 3}\n    channel: none\n")
    with pytest.raises(ConfigError, match=r"arch.yaml:3: layers\[0\].mixer.windw: attn has no such parameter"):
        Architecture.load(str(path))


def test_a_block_name_that_is_not_a_string_is_one_line(tmp_path):  # found by the fuzzer
    path = tmp_path / "arch.yaml"
    path.write_text("d_model: 64\nlayers:\n- mixer: {block: [0, 1], heads: 2}\n  channel: glu\n")
    with pytest.raises(ConfigError, match=r"arch.yaml:3: layers\[0\].mixer: unknown mixer block \[0, 1\]"):
        Architecture.load(str(path))
