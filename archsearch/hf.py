"""Hugging Face transformers integration: an archsearch architecture as a `PretrainedConfig` and a causal LM.

Importing this module registers `ArchsearchConfig` (model_type "archsearch_hybrid") with `AutoConfig` and
`ArchsearchForCausalLM` with `AutoModelForCausalLM`. `save_hf(arch, dir)` writes a directory that
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads without archsearch being imported first:
its config.json maps the auto classes to two small files in the directory that import these classes from the
installed archsearch package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .architecture import Architecture
from .model import HybridLM

MODEL_TYPE = "archsearch_hybrid"

# The files a transformers directory carries so that trust_remote_code finds the classes (they live in archsearch).
REMOTE_FILES = {
    "configuration_archsearch.py": '"""The archsearch hybrid\'s transformers config; the class lives in the installed archsearch package."""\n\n'
    "from archsearch.hf import ArchsearchConfig\n\n__all__ = [\"ArchsearchConfig\"]\n",
    "modeling_archsearch.py": '"""The archsearch hybrid as a transformers causal LM; the class lives in the installed archsearch package."""\n\n'
    "from archsearch.hf import ArchsearchForCausalLM\n\n__all__ = [\"ArchsearchForCausalLM\"]\n",
}
AUTO_MAP = {
    "AutoConfig": "configuration_archsearch.ArchsearchConfig",
    "AutoModelForCausalLM": "modeling_archsearch.ArchsearchForCausalLM",
}


class ArchsearchConfig(PretrainedConfig):
    """Holds one architecture in normal form (`architecture`, the dict of `Architecture.to_dict`).

    hidden_size, num_hidden_layers, vocab_size and tie_word_embeddings are copies of the architecture's, for the
    tools that read them; the architecture is what the model is built from.
    """

    model_type = MODEL_TYPE

    def __init__(self, architecture: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.architecture = architecture
        if architecture is not None:
            arch = Architecture.from_json(json.dumps(architecture))
            self.architecture = arch.to_dict()
            kwargs.update(hidden_size=arch.d_model, num_hidden_layers=arch.n_layers, vocab_size=arch.vocab_size,
                          tie_word_embeddings=arch.tie_embeddings)
        kwargs.setdefault("use_cache", False)  # the model recomputes the prefix; HybridLM.generate decodes recurrently
        super().__init__(**kwargs)

    def arch(self) -> Architecture:
        if self.architecture is None:
            raise ValueError("ArchsearchConfig has no architecture; build it with ArchsearchConfig(architecture=arch.to_dict())")
        return Architecture.from_json(json.dumps(self.architecture))


class ArchsearchForCausalLM(PreTrainedModel, GenerationMixin):
    """`HybridLM` as a transformers causal LM: forward(input_ids, labels) -> CausalLMOutput(loss, logits).

    Labels are shifted inside, as transformers does (labels = input_ids is next-token prediction; -100 is ignored);
    mixture-of-experts blocks add their auxiliary losses to the loss. The model attends causally to every token it is
    given, so pad on the right (an attention mask is accepted, not applied, and refused when it pads on the left,
    which would change the outputs silently). With tied embeddings the head is the
    embedding matrix itself (no separate parameter to tie).
    """

    config_class = ArchsearchConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Layer"]
    _tied_weights_keys = None
    supports_gradient_checkpointing = False

    def __init__(self, config: ArchsearchConfig) -> None:
        super().__init__(config)
        self.model = HybridLM(config.arch())
        self.post_init()

    # HybridLM initialises itself; what from_pretrained leaves uninitialised are the non-persistent buffers
    # (filter positions, router statistics), which the checkpoint does not hold: rebuild them from the block.
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        buffers = getattr(module, "_non_persistent_buffers_set", ())
        if not buffers:
            return
        name = next((n for n, m in self.named_modules() if m is module), None)
        parts = name.split(".") if name else []
        if len(parts) < 4 or parts[:2] != ["model", "layers"]:
            return
        layer, role, rest = int(parts[2]), parts[3], parts[4:]
        spec = getattr(self.model.arch.layers[layer], role)
        with torch.device("cpu"):
            fresh = spec.fam.build(spec.p, self.model.arch.d_model)
        source = fresh.get_submodule(".".join(rest)) if rest else fresh
        for buffer in buffers:
            module.get_buffer(buffer).copy_(source.get_buffer(buffer))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> nn.Module | None:
        return self.model.head  # None with tied embeddings: the head is the embedding matrix

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput | tuple[Tensor, ...]:
        if attention_mask is not None and (attention_mask.diff(dim=-1) > 0).any():
            raise ValueError("ArchsearchForCausalLM attends to every token it is given: pad on the right, not the left")
        out = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(out.logits, labels, kwargs.get("num_items_in_batch"))
            aux = [b.aux_loss for b in self.model.blocks() if b.aux_loss is not None]
            if aux:
                loss = loss + torch.stack(aux).sum()
        if return_dict is False:
            return (out.logits,) if loss is None else (loss, out.logits)
        return CausalLMOutput(loss=loss, logits=out.logits)

    def prepare_inputs_for_generation(self, input_ids: Tensor, **kwargs: Any) -> dict[str, Any]:
        return {"input_ids": input_ids}  # no cache: every step sees the whole sequence


def causal_lm_loss(logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Next-token cross-entropy as transformers computes it: position t predicts labels[t + 1], -100 is ignored; a
    sum over `num_items_in_batch` tokens when the Trainer gives it (exact under gradient accumulation), else a mean."""
    logits, labels = logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten().to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / num_items_in_batch


AutoConfig.register(MODEL_TYPE, ArchsearchConfig, exist_ok=True)
AutoModelForCausalLM.register(ArchsearchConfig, ArchsearchForCausalLM, exist_ok=True)


def hf_config(arch: Architecture) -> ArchsearchConfig:
    """The transformers config of an architecture, with the auto_map that points at the directory's files."""
    config = ArchsearchConfig(architecture=arch.to_dict(), architectures=["ArchsearchForCausalLM"])
    config.auto_map = dict(AUTO_MAP)
    return config


def save_hf(arch: Architecture, out: str | Path, state_dict: dict[str, Tensor] | None = None, seed: int = 0) -> Path:
    """Write a transformers directory for `arch`: config.json, the two remote-code files, and model.safetensors
    (HybridLM's state_dict `state_dict` when given, else the model as `archsearch.build_model` initialises it
    under `seed`, so that from_pretrained works either way)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(arch)
    config.save_pretrained(out)
    for name, text in REMOTE_FILES.items():
        (out / name).write_text(text)
    if state_dict is None:
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(seed)
            state_dict = HybridLM(arch).state_dict()
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out
