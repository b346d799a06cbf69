"""The chunked cross-entropy of a linear head equals the float32 reference, value and gradients, and keeps no logits."""

import pytest
import torch

from archsearch.kernels.linear_cross_entropy import chunked, linear_cross_entropy, linear_cross_entropy_reference


def inputs(n=37, d=16, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, requires_grad=True)
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[::5] = -1  # ignored rows
    return h, weight, targets


def loss_and_grads(fn, h, weight, targets):
    h.grad = weight.grad = None
    loss = fn(h, weight, targets)
    (3.0 * loss).backward()  # an upstream gradient other than one
    return loss.detach(), h.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 1000], ids=["row", "uneven", "exact", "one-chunk"])
def test_chunked_cross_entropy_equals_the_float32_reference_and_its_gradients(monkeypatch, chunk_rows):
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", chunk_rows * 50)
    h, weight, targets = inputs()
    for got, want in zip(loss_and_grads(linear_cross_entropy, h, weight, targets),
                         loss_and_grads(linear_cross_entropy_reference, h, weight, targets), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_without_gradients_it_is_the_reference_value(monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 8 * 50)
    h, weight, targets = inputs(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, weight, targets), linear_cross_entropy_reference(h, weight, targets), rtol=1e-6, atol=0)


def test_under_bf16_autocast_it_follows_the_references_rounding():
    h, weight, targets = inputs(n=64, vocab=300, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_and_grads(linear_cross_entropy, h, weight, targets)
        want = loss_and_grads(linear_cross_entropy_reference, h, weight, targets)
    assert got[1].dtype == got[2].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=0)  # the same bf16 head, the same float32 softmax
    for g, w in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-3)


def test_no_tensor_of_the_logits_shape_is_kept_for_the_backward():
    h, weight, targets = inputs(n=40, vocab=70)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(tuple(t.shape)) or t, lambda t: t):
        linear_cross_entropy(h, weight, targets)
    assert kept and (40, 70) not in kept, kept
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(tuple(t.shape)) or t, lambda t: t):
        linear_cross_entropy_reference(h, weight, targets)
    assert (40, 70) in kept  # what the reference keeps: the float32 log-softmax


def test_it_compiles_in_one_graph_to_the_same_loss_and_gradients():
    h, weight, targets = inputs(seed=3)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(linear_cross_entropy)(h, weight, targets)
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    compiled = torch.compile(linear_cross_entropy, fullgraph=True, dynamic=False, backend="aot_eager")
    for got, want in zip(loss_and_grads(compiled, h, weight, targets), loss_and_grads(linear_cross_entropy, h, weight, targets), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch._dynamo.reset()
