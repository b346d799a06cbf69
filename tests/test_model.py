"""The hybrid language model: builds every example space, matches the cost model, decodes, learns."""

import glob

import pytest
import torch

from archsearch import Architecture, BlockSpec, Infeasible, LayerSpec, load_space, sample
from archsearch.model import build_model

SPACES = sorted(glob.glob("search_spaces/*.yaml"))


@pytest.mark.parametrize("path", SPACES)
def test_build_model_builds_samples_of_every_example_space_at_the_cost_models_size(path):
    space = load_space(path)
    built = 0
    for seed in range(12):
        try:
            arch = sample(space, seed)
        except Infeasible:
            continue
        model = build_model(arch)
        assert sum(p.numel() for p in model.parameters()) == arch.cost().params, arch.summary()
        built += 1
        if built == 2:
            break
    assert built


def tiny(mixer: str, channel: str | None = "glu", d: int = 32, n: int = 2, vocab: int = 16, **params) -> Architecture:
    mixer_spec = BlockSpec.make(mixer, params, d)
    channel_spec = BlockSpec.make(channel, {}, d) if channel else None
    return Architecture(d, tuple(LayerSpec(mixer_spec, channel_spec) for _ in range(n)), vocab, tie_embeddings=False)


SMALL = {
    "attn": {"heads": 4},
    "swa": {"heads": 4, "window": 8},
    "deltanet": {"heads": 2},
    "h3": {"head_dim": 4, "state_size": 8},
    "hyena": {"filter_width": 16},
    "gau": {"qk_dim": 16, "expansion": 1.0, "chunk": 8},
    "brt": {"heads": 4, "states": 4, "block_size": 8},
}


@pytest.mark.parametrize("mixer", sorted(SMALL))
def test_greedy_decoding_through_block_states_equals_the_parallel_forward(mixer):
    torch.manual_seed(0)
    model = build_model(tiny(mixer, **SMALL[mixer])).eval()
    prompt = torch.randint(0, 16, (2, 5))
    out = model.generate(prompt, max_new_tokens=12, temperature=0)
    logits = model(out).logits
    # each generated token is the argmax of the full forward at the position before it
    assert torch.equal(logits[:, 4:-1].argmax(-1), out[:, 5:])


def lagged_copy_batch(batch: int, length: int, vocab: int, lag: int, generator: torch.Generator):
    x = torch.randint(0, vocab, (batch, length), generator=generator)
    y = torch.full_like(x, -1)
    y[:, lag:] = x[:, :-lag]
    return x, y


@pytest.mark.parametrize(("mixer", "channel"), [(m, "glu") for m in sorted(SMALL)] + [("attn", "moe")])
def test_a_tiny_model_learns_to_copy_a_token_from_two_positions_back(mixer, channel):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    params = {"experts": 4, "top_k": 2} if channel == "moe" else {}
    arch = tiny(mixer, channel, **SMALL[mixer])
    if params:
        arch = Architecture(arch.d_model, tuple(LayerSpec(layer.mixer, BlockSpec.make("moe", params, 32)) for layer in arch.layers), 16, False)
    model = build_model(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        x, y = lagged_copy_batch(16, 32, 16, 2, g)
        loss = model(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = lagged_copy_batch(64, 32, 16, 2, g)
    with torch.no_grad():
        accuracy = (model(x).logits.argmax(-1)[:, 2:] == y[:, 2:]).float().mean().item()
    assert accuracy > 0.9, accuracy


def test_mixture_of_experts_losses_reach_the_total_loss():
    torch.manual_seed(0)
    arch = Architecture(32, (LayerSpec(BlockSpec.make("attn", {"heads": 4}, 32), BlockSpec.make("moe", {"experts": 4}, 32)),), 16)
    out = build_model(arch).train()(torch.randint(0, 16, (2, 8)), torch.randint(0, 16, (2, 8)))
    assert out.aux_loss is not None and out.aux_loss > 0
    torch.testing.assert_close(out.loss, out.ce_loss + out.aux_loss)


def test_tied_embeddings_share_the_head_and_untied_do_not():
    tied, untied = build_model(tiny("attn", heads=4).__class__(32, tiny("attn", heads=4).layers, 16, True)), build_model(tiny("attn", heads=4))
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 16 * 32
