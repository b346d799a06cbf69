"""The semantics of each operator of the space language."""

from collections import Counter

from archsearch import enumerate_space, sample
from archsearch.architecture import Architecture


def archs(space):
    return {a for a in enumerate_space(space) if isinstance(a, Architecture)}


def mixers(arch):
    return "".join(layer.mixer.fam.letter for layer in arch.layers)


def test_uniform_stack_repeats_the_base_layer(space_of):
    (a,) = archs(space_of("d_model: 64\nn_layers: 3\nlayers: {mixer: deltanet, channel: glu}"))
    assert mixers(a) == "DDD" and all(layer.channel.family == "glu" for layer in a.layers)


def test_every_k_places_the_kth_2kth_layers_and_offset_shifts_them(space_of):
    base = "d_model: 64\nn_layers: 8\nlayers:\n  mixer: deltanet\n  channel: glu\n  place:\n"
    (a,) = archs(space_of(base + "    - {mixer: swa, every: 2}"))
    assert mixers(a) == "DSDSDSDS"
    (a,) = archs(space_of(base + "    - {mixer: swa, every: 4, offset: 0}"))
    assert mixers(a) == "SDDDSDDD"


def test_at_places_explicit_positions_and_negative_counts_from_the_end(space_of):
    (a,) = archs(space_of("d_model: 64\nn_layers: 6\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: attn, at: [1, -1]}]"))
    assert mixers(a) == "DADDDA"


def test_searched_positions_cover_every_k_of_n_combination_once(space_of):
    space = space_of("d_model: 64\nn_layers: 5\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: attn, at: {positions: 2}}]")
    found = sorted(mixers(a) for a in archs(space))
    assert len(found) == 10 and all(Counter(m)["A"] == 2 for m in found)


def test_searched_positions_among_a_subset(space_of):
    space = space_of("d_model: 64\nn_layers: 6\nlayers:\n  mixer: deltanet\n  channel: glu\n  place: [{mixer: attn, at: {positions: 1, among: [2, 4]}}]")
    assert sorted(mixers(a) for a in archs(space)) == ["DDADDD", "DDDDAD"]


def test_later_placements_win_where_they_overlap(space_of):
    (a,) = archs(space_of("d_model: 64\nn_layers: 4\nlayers:\n  mixer: deltanet\n  channel: glu\n  place:\n    - {mixer: swa, every: 1}\n    - {mixer: attn, at: [2]}"))
    assert mixers(a) == "SSAS"


def test_sequence_with_repeat_groups_and_shorthand(space_of):
    space = space_of(
        """
        d_model: 64
        layers:
          - attn+glu
          - repeat: 2
            layers: [deltanet+glu, swa+none]
          - hyena+moe x 2
        """
    )
    (a,) = archs(space)
    assert mixers(a) == "ADSDSYY"
    assert [layer.channel.family if layer.channel else None for layer in a.layers] == ["glu", "glu", None, "glu", None, "moe", "moe"]


def test_repeat_count_can_be_searched(space_of):
    space = space_of("d_model: 64\nlayers:\n  - repeat: {int: [1, 3]}\n    layers: [deltanet+glu]")
    assert sorted(a.n_layers for a in archs(space)) == [1, 2, 3]


def test_block_name_choice_is_one_decision_unless_per_layer(space_of):
    shared = space_of("d_model: 64\nn_layers: 3\nlayers: {mixer: {choice: [attn, deltanet]}, channel: glu}")
    assert sorted(mixers(a) for a in archs(shared)) == ["AAA", "DDD"]
    per_layer = space_of("d_model: 64\nn_layers: 3\nlayers: {mixer: {choice: [attn, deltanet], per_layer: true}, channel: glu}")
    assert len(archs(per_layer)) == 8


def test_conditional_parameter_is_drawn_only_where_its_block_is_chosen(space_of):
    space = space_of("d_model: 64\nn_layers: 2\nlayers: {mixer: {choice: [attn, swa]}, channel: glu, window: {choice: [8, 16]}}")
    results = [a for a in enumerate_space(space)]
    assert len(results) == 3  # attn; swa with window 8; swa with window 16
    windows = sorted(a.layers[0].mixer.p.get("window", 0) for a in results)
    assert windows == [0, 8, 16]


def test_block_parameters_written_inside_a_choice_option(space_of):
    space = space_of("d_model: 64\nn_layers: 1\nlayers:\n  mixer: {choice: [attn, {block: swa, window: {choice: [4, 8]}}]}\n  channel: none")
    assert sorted(a.layers[0].mixer.label() for a in archs(space))[0].startswith("attn")
    assert len(archs(space)) == 3


def test_family_defaults_apply_everywhere_and_placements_override(space_of):
    space = space_of(
        """
        d_model: 64
        n_layers: 4
        layers:
          mixer: deltanet
          channel: glu
          place:
            - {at: [3], heads: 2}
        blocks:
          deltanet: {heads: 4, conv_size: 2}
        """
    )
    (a,) = archs(space)
    assert [layer.mixer.p["heads"] for layer in a.layers] == [4, 4, 4, 2]
    assert {layer.mixer.p["conv_size"] for layer in a.layers} == {2}


def test_a_placement_that_replaces_a_block_does_not_inherit_the_old_blocks_parameters(space_of):
    space = space_of("d_model: 64\nn_layers: 2\nlayers:\n  mixer: {block: attn, heads: 2}\n  channel: glu\n  place: [{mixer: swa, at: [1]}]")
    (a,) = archs(space)
    assert a.layers[0].mixer.p["heads"] == 2 and a.layers[1].mixer.p["heads"] == 8


def test_int_float_and_log_ranges(space_of):
    space = space_of(
        """
        d_model: {int: [64, 128], step: 32}
        n_layers: 1
        layers: {mixer: swa, channel: moe, window: {int: [16, 4096], log: true}}
        blocks:
          moe: {aux_loss: {float: [1e-4, 1e-1], log: true}, capacity_factor: {float: [1.0, 2.0]}}
        """
    )
    seen = [sample(space, seed) for seed in range(200)]
    assert {a.d_model for a in seen} == {64, 96, 128}
    windows = [a.layers[0].mixer.p["window"] for a in seen]
    assert min(windows) >= 16 and max(windows) <= 4096 and sum(w < 256 for w in windows) > 60  # log scale favours small
    aux = [a.layers[0].channel.p["aux_loss"] for a in seen]
    assert min(aux) >= 1e-4 and max(aux) <= 0.1 and sum(x < 1e-2 for x in aux) > 100


def test_constraints_flag_architectures_outside_their_bounds(space_of):
    space = space_of("d_model: {choice: [64, 512]}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\nconstraints: {params: {max: 1M}}")
    small, large = sorted(archs(space), key=lambda a: a.d_model)
    assert space.constraints.violations(small) == []
    assert space.constraints.violations(large)[0].startswith("params ")


def test_family_rules_make_some_combinations_infeasible(space_of):
    import pytest

    from archsearch import Infeasible

    space = space_of("d_model: {choice: [64, 96]}\nn_layers: 1\nlayers: {mixer: attn, channel: glu, heads: {choice: [4, 5]}}")
    results = list(enumerate_space(space))
    assert sum(isinstance(r, Architecture) for r in results) == 2  # 64/4 and 96/4; 5 divides neither
    with pytest.raises(Infeasible, match="heads"):
        sample(space, _FirstThen([0, 1]))


class _FirstThen:
    """A sampler that answers categorical questions from a list (for forcing one assignment)."""

    def __init__(self, picks):
        self.picks = list(picks)

    def categorical(self, name, labels):
        return self.picks.pop(0)
