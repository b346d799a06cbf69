"""An fla export loads in fla itself (flash-linear-attention 0.6: DeltaNetForCausalLM) and gives our logits.

fla's Triton kernels run on the CPU under the interpreter (tests/conftest.py turns it on). Triton's autotuner would
time each config there and needs a GPU driver to do so; under the interpreter timing means nothing, so, as our own
kernels do (archsearch.kernels._triton.autotune), each autotuned fla kernel runs its first config. fla's attention
layer calls flash-attn (CUDA only): for the attention hybrids, `flash_attn_func` is replaced by its definition in
PyTorch (flash-attn's documented causal and window semantics), so everything else of fla's layer (projections,
rotary embedding, window, heads) runs as fla runs it.
"""

import os
import textwrap

import pytest
import torch

from archsearch import Architecture, build_model
from archsearch.export import export_fla

DELTANET = """
    d_model: 32
    layers:
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
"""
# no short convolution, no output gate, a wider MLP, its own output head
PLAIN_DELTANET = """
    d_model: 32
    tie_embeddings: false
    layers:
      - {mixer: {block: deltanet, heads: 4, conv_size: 0, gate: false}, channel: {block: glu, expansion: 4}}
      - {mixer: {block: deltanet, heads: 4, conv_size: 0, gate: false}, channel: {block: glu, expansion: 4}}
"""


# global attention at one layer, sliding windows at others: two fla attention specs beside DeltaNet
ATTENTION_HYBRID = """
    d_model: 32
    layers:
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: attn, heads: 4}, channel: glu}
      - {mixer: {block: swa, heads: 2, window: 5}, channel: glu}
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: swa, heads: 2, window: 5}, channel: glu}
"""


def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1), softmax_scale=None):
    """flash-attn's flash_attn_func in PyTorch: q [B, T, H, D], k and v [B, S, H_kv, D]; query i sees key j when
    i - left <= j <= i + right (a side of -1 is unbounded), and j <= i when causal; scale 1/sqrt(D)."""
    heads, kv_heads = q.shape[2], k.shape[2]
    k, v = (x.repeat_interleave(heads // kv_heads, dim=2) for x in (k, v))
    scale = softmax_scale or q.shape[-1] ** -0.5
    scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * scale
    i = torch.arange(q.shape[1])[:, None]
    j = torch.arange(k.shape[1])[None, :]
    left, right = window_size
    visible = torch.ones_like(i - j, dtype=torch.bool)
    if left >= 0:
        visible &= j >= i - left
    if right >= 0:
        visible &= j <= i + right
    if causal:
        visible &= j <= i
    weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    return torch.einsum("bhij,bjhd->bihd", weights, v.float()).to(q.dtype)


@pytest.fixture
def first_config_under_the_interpreter(monkeypatch):
    from triton.runtime.autotuner import Autotuner

    if os.environ.get("TRITON_INTERPRET") == "1":
        prune = Autotuner.prune_configs
        monkeypatch.setattr(Autotuner, "prune_configs", lambda self, kwargs: prune(self, kwargs)[:1])


@pytest.mark.parametrize("text", [DELTANET, PLAIN_DELTANET, ATTENTION_HYBRID], ids=["deltanet", "plain-deltanet", "attention-hybrid"])
def test_fla_loads_the_exported_config_and_weights_and_gives_our_logits(text, tmp_path, first_config_under_the_interpreter, monkeypatch):
    import fla.layers.attn
    from fla.models import DeltaNetForCausalLM

    monkeypatch.setattr(fla.layers.attn, "flash_attn_func", flash_attn_func)

    arch = Architecture.from_yaml(textwrap.dedent(text))
    torch.manual_seed(0)
    ours = build_model(arch).eval()
    with torch.no_grad():  # away from the initialisation (norm weights of one would hide a swapped or missing norm)
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    export_fla(arch, tmp_path, ours.state_dict())
    fla = DeltaNetForCausalLM.from_pretrained(tmp_path).eval()
    assert fla.config.tie_word_embeddings == arch.tie_embeddings
    assert sum(p.numel() for p in fla.parameters()) == sum(p.numel() for p in ours.parameters())
    x = torch.randint(0, arch.vocab_size, (2, 16))
    with torch.no_grad():
        expected, got = ours(x).logits, fla(x).logits
    assert got.shape == expected.shape == (2, 16, arch.vocab_size)
    # float32 both sides; fla's fused kernels and ours differ in summation order only (seen: 4e-6 at logits of ~2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_exported_hybrid_trains_in_fla(tmp_path, first_config_under_the_interpreter, monkeypatch):
    """What a researcher does next: fla's own model class, loaded from the export, learns (the loss taken from its
    logits: fla's fused cross-entropy for `labels` is CUDA only)."""
    import fla.layers.attn
    from fla.models import DeltaNetForCausalLM

    monkeypatch.setattr(fla.layers.attn, "flash_attn_func", flash_attn_func)
    arch = Architecture.from_yaml(textwrap.dedent(ATTENTION_HYBRID))
    torch.manual_seed(0)
    export_fla(arch, tmp_path, build_model(arch).state_dict())
    fla = DeltaNetForCausalLM.from_pretrained(tmp_path).train()
    opt = torch.optim.AdamW(fla.parameters(), lr=3e-3)
    x = torch.randint(0, arch.vocab_size, (1, 16))
    losses = []
    for _ in range(3):
        logits = fla(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.05, losses
