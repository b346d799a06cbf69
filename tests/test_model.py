"""The hybrid language model: builds every example space, matches the cost model, decodes, learns."""

import dataclasses
import glob

import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_the_loss_is_the_float32_cross_entropy_of_the_logits_and_has_its_gradients(tied):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny("attn", heads=4), tie_embeddings=tied))
    x, y = torch.randint(0, 16, (2, 12)), torch.randint(0, 16, (2, 12))
    y[:, :3] = -1  # unscored positions
    out = model(x, y)
    assert out.logits is None  # training never reads them: they are not made
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    logits = model(x).logits
    reference = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1)
    reference.backward()
    torch.testing.assert_close(out.loss.detach(), reference.detach(), rtol=1e-6, atol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
    kept = model(x, y, keep_logits=True)
    assert torch.equal(kept.logits, logits) and torch.equal(kept.ce_loss, reference)


def _loss_and_grads(model, forward, x, y):
    model.zero_grad(set_to_none=True)
    loss = forward(x, y).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_compiles_to_the_eager_model(arch, backend="aot_eager", seq_len=16, explain=False):
    """fullgraph=True: any graph break fails the compile, so passing means one graph."""
    torch.manual_seed(0)
    model = build_model(arch)
    x = torch.randint(0, arch.vocab_size, (2, seq_len))
    y = torch.randint(0, arch.vocab_size, (2, seq_len))
    torch._dynamo.reset()
    if explain:
        explained = torch._dynamo.explain(model)(x, y)
        assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    loss, grads = _loss_and_grads(model, model, x, y)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend=backend)
    loss_c, grads_c = _loss_and_grads(model, compiled, x, y)
    torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=1e-5)
    assert grads_c.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_c[name], grads[name], rtol=1e-3, atol=1e-5, msg=name)
    torch._dynamo.reset()


@pytest.mark.parametrize(("mixer", "channel"), [(m, "glu") for m in sorted(SMALL)] + [("attn", "moe")])
def test_every_block_family_compiles_in_one_graph_to_the_eager_models_loss_and_gradients(mixer, channel):
    arch = tiny(mixer, channel, n=1, **SMALL[mixer])
    if channel == "moe":  # top-2 with a capacity: the dispatch's sorts, drops and scatters all in the graph
        moe = BlockSpec.make("moe", {"experts": 4, "top_k": 2, "capacity_factor": 1.0}, 32)
        arch = Architecture(32, tuple(LayerSpec(layer.mixer, moe) for layer in arch.layers), 16, False)
    _assert_compiles_to_the_eager_model(arch)


@pytest.mark.parametrize("path", SPACES)
def test_a_sample_of_every_example_space_compiles_in_one_graph(path):
    arch = next(a for a in (_try_sample(load_space(path), seed) for seed in range(50)) if a is not None)
    # one layer of each kind the sample holds (up to two): the space's blocks at its widths, traced in seconds
    kinds = {}
    for layer in arch.layers:
        kinds.setdefault((layer.mixer.family, layer.channel and layer.channel.family), layer)
    layers = tuple(kinds.values())[:2]
    _assert_compiles_to_the_eager_model(dataclasses.replace(arch, layers=layers, vocab_size=64))


def _try_sample(space, seed):
    try:
        return sample(space, seed)
    except Infeasible:
        return None


def test_a_small_hybrid_compiles_through_inductor_to_the_eager_model_with_no_graph_break():
    d = 32
    layers = (
        LayerSpec(BlockSpec.make("swa", {"heads": 4, "window": 8}, d), BlockSpec.make("glu", {}, d)),
        LayerSpec(BlockSpec.make("hyena", {"filter_width": 16}, d), None),
    )
    _assert_compiles_to_the_eager_model(Architecture(d, layers, 16, False), backend="inductor", explain=True)
