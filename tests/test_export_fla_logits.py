"""An fla export loads in fla itself (flash-linear-attention 0.6: DeltaNetForCausalLM) and gives our logits.

fla's Triton kernels run on the CPU under the interpreter (tests/conftest.py turns it on). Triton's autotuner would
time each config there and needs a GPU driver to do so; under the interpreter timing means nothing, so, as our own
kernels do (archsearch.kernels._triton.autotune), each autotuned fla kernel runs its first config. fla's attention
layer cannot be built without flash-attn (CUDA only), so the hybrids compared here are DeltaNet ones; attention specs
are checked against fla's fields and parameter shapes in tests/test_export.py.
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


@pytest.fixture
def first_config_under_the_interpreter(monkeypatch):
    from triton.runtime.autotuner import Autotuner

    if os.environ.get("TRITON_INTERPRET") == "1":
        prune = Autotuner.prune_configs
        monkeypatch.setattr(Autotuner, "prune_configs", lambda self, kwargs: prune(self, kwargs)[:1])


@pytest.mark.parametrize("text", [DELTANET, PLAIN_DELTANET], ids=["deltanet", "plain-deltanet"])
def test_fla_loads_the_exported_config_and_weights_and_gives_our_logits(text, tmp_path, first_config_under_the_interpreter):
    from fla.models import DeltaNetForCausalLM

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
