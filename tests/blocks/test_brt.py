"""The Block-Recurrent Transformer cell: block-wise state updates, the reach of the token window, the state's reach."""

import torch

from archsearch.architecture import BlockSpec

D = 32


def build(seed=0, **params):
    torch.manual_seed(seed)
    spec = BlockSpec.make("brt", {"heads": 4, "states": 5, "block_size": 4, **params}, D)
    return spec.fam.build(spec.p, D).eval()


def test_the_state_changes_only_at_block_boundaries():
    block = build()
    x = torch.randn(2, 14, D)
    with torch.no_grad():
        y = block(x)
        state = block.init_state(2, x.device, x.dtype)
        for t in range(14):
            before = state["state"]
            y_t, state = block.step(x[:, t], state)
            torch.testing.assert_close(y_t, y[:, t], atol=1e-5, rtol=1e-5)
            assert torch.equal(state["state"], before) != ((t + 1) % 4 == 0), t


def test_outputs_depend_on_tokens_two_blocks_back_through_the_state():
    block = build()
    x = torch.randn(2, 12, D)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[:, 1] = torch.randn(2, D)  # block 0; block 2 (tokens 8..11) reaches it only through the state
        changed = (block(x2) - y).abs().amax(dim=(0, 2)) > 0
    assert changed[8:].all()


def test_without_state_updates_tokens_see_only_their_block_and_the_previous_one():
    block = build()
    with torch.no_grad():  # gates that ignore the tokens and admit nothing: the state never learns of them
        block.input_gate.weight.zero_()
        block.forget_gate.weight.zero_()
        block.input_gate.bias.fill_(-1e4)
    x = torch.randn(2, 16, D)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[:, 5] = torch.randn(2, D)  # block 1: seen by blocks 1 and 2 only
        changed = (block(x2) - y).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [5 <= t < 12 for t in range(16)]


def test_the_decode_cache_holds_at_most_the_previous_and_current_block():
    block = build(block_size=3)
    state = block.init_state(1, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for _ in range(11):
            _, state = block.step(torch.randn(1, D), state)
            assert state["k"].shape[1] <= 6
    assert state["k"].shape[1] == 3 + 11 % 3  # the completed block 2 and two tokens of block 3
