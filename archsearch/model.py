"""The hybrid language model: embedding, pre-norm residual layers (mixer, then channel), final norm, head."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .architecture import Architecture, LayerSpec
from .blocks import Block, RMSNorm
from .kernels.linear_cross_entropy import linear_cross_entropy


class Layer(nn.Module):
    """x + mixer(norm(x)), then x + channel(norm(x)) when the layer has a channel block."""

    def __init__(self, spec: LayerSpec, d_model: int) -> None:
        super().__init__()
        self.mixer_norm = RMSNorm(d_model)
        self.mixer: Block = spec.mixer.fam.build(spec.mixer.p, d_model)
        self.channel_norm = RMSNorm(d_model) if spec.channel else None
        self.channel: Block | None = spec.channel.fam.build(spec.channel.p, d_model) if spec.channel else None

    def blocks(self) -> list[Block]:
        return [self.mixer] + ([self.channel] if self.channel is not None else [])

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        if self.channel is not None:
            x = x + self.channel(self.channel_norm(x))
        return x

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
        return tuple(b.init_state(batch, device, dtype) for b in self.blocks())

    def step(self, x: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
        y, mixer_state = self.mixer.step(self.mixer_norm(x), state[0])
        x = x + y
        if self.channel is None:
            return x, (mixer_state,)
        y, channel_state = self.channel.step(self.channel_norm(x), state[1])
        return x + y, (mixer_state, channel_state)


@dataclass
class LMOutput:
    logits: Tensor | None  # [B, T, vocab]; with targets only when asked (keep_logits): training never reads them
    loss: Tensor | None = None  # cross-entropy plus the blocks' auxiliary losses: what to minimise
    ce_loss: Tensor | None = None  # cross-entropy alone: what to report
    aux_loss: Tensor | None = None


class HybridLM(nn.Module):
    """A causal language model whose layers are the blocks an `Architecture` lists."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        d, vocab = arch.d_model, arch.vocab_size
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Layer(spec, d) for spec in arch.layers)
        self.norm = RMSNorm(d)
        self.head = None if arch.tie_embeddings else nn.Linear(d, vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=0.02)
        scale = 1 / math.sqrt(2 * len(self.layers))
        with torch.no_grad():
            for block in self.blocks():
                for name in block.residual_params:
                    block.get_parameter(name).mul_(scale)

    def blocks(self) -> list[Block]:
        return [b for layer in self.layers for b in layer.blocks()]

    def head_weight(self) -> Tensor:
        """[vocab, d]: the head's matrix, the embedding's when they are tied."""
        return self.embed.weight if self.head is None else self.head.weight

    def logits(self, h: Tensor) -> Tensor:
        return F.linear(self.norm(h), self.head_weight())

    def forward(self, idx: Tensor, targets: Tensor | None = None, *, keep_logits: bool = False) -> LMOutput:
        h = self.embed(idx)
        for layer in self.layers:
            h = layer(h)
        return self.output(h, targets, keep_logits)

    def output(self, h: Tensor, targets: Tensor | None, keep_logits: bool = False) -> LMOutput:
        """The head on the last hidden states: logits, or with targets the losses (and the logits if kept). The
        cross-entropy takes the softmax in float32 without keeping float32 logits for the backward."""
        if targets is None:
            return LMOutput(self.logits(h))
        if keep_logits:
            logits = self.logits(h)
            ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        else:
            logits, ce = None, linear_cross_entropy(self.norm(h).flatten(0, 1), self.head_weight(), targets.flatten(), ignore_index=-1)
        aux = [b.aux_loss for b in self.blocks() if b.aux_loss is not None]
        aux_loss = torch.stack(aux).sum() if aux else None
        return LMOutput(logits, ce + aux_loss if aux else ce, ce, aux_loss)

    def compile_regions(self, **options: Any) -> None:
        """Compile each layer and the head on its own, in place (torch.compile's regional compilation): layers of
        one kind share one compiled graph, so compiling costs a layer per kind rather than the whole depth, and a
        cache of compiled graphs serves every model that holds the same layers. `options` go to torch.compile."""
        for layer in self.layers:
            layer.compile(**options)
        self.output = torch.compile(self.output, **options)

    def uncompile_regions(self) -> None:
        """Undo `compile_regions`: the eager modules again (after a failed compile)."""
        for layer in self.layers:
            layer._compiled_call_impl = None  # what nn.Module.compile sets
        self.__dict__.pop("output", None)

    @contextlib.contextmanager
    def eager_regions(self) -> Iterator[None]:
        """The eager modules inside the block (a reference step), the compiled ones again after it, not recompiled."""
        layers, output = [layer._compiled_call_impl for layer in self.layers], self.__dict__.get("output")
        self.uncompile_regions()
        try:
            yield
        finally:
            for layer, compiled in zip(self.layers, layers, strict=True):
                layer._compiled_call_impl = compiled
            if output is not None:
                self.output = output

    def init_state(self, batch: int) -> list[Any]:
        p = next(self.parameters())
        return [layer.init_state(batch, p.device, p.dtype) for layer in self.layers]

    def step(self, token: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """One decoding step: token [B] -> logits [B, vocab], with every block's recurrent or cached state."""
        h = self.embed(token)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer.step(h, s)
            new_state.append(s)
        return self.logits(h), new_state

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
        """Continue each prompt in idx [B, T] by max_new_tokens tokens through the blocks' decode paths."""
        state = self.init_state(idx.shape[0])
        for t in range(idx.shape[1]):  # prefill through the same steps, so every block's state is exact
            logits, state = self.step(idx[:, t], state)
        out = [idx]
        for _ in range(max_new_tokens):
            if temperature == 0:
                token = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(F.softmax(logits.float(), -1), 1)[:, 0]
            out.append(token[:, None])
            logits, state = self.step(token, state)
        return torch.cat(out, 1)


def build_model(arch: Architecture) -> HybridLM:
    """The language model of an architecture, initialised; its parameter count equals `arch.cost().params`."""
    return HybridLM(arch)
