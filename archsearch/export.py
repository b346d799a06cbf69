"""Hand a trial to a trainer: its normal-form YAML, a transformers directory, or an fla config, with proxy weights.

Which trial: `--trial N` (it must have finished ok), `--pick knee` (the knee of the study's front) or
`--pick best:METRIC` (the ok trial best on one metric). Formats:
- yaml: DIR/architecture.yaml, which `Architecture.load` and `archsearch.build_model` read;
- hf: a directory `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` loads with transformers and
  torch alone (see `archsearch.hf`);
- fla: DIR/config.json for fla's DeltaNet model (model_type delta_net, attention specs at any layers) where fla can
  express the hybrid, and with weights DIR/model.safetensors in fla's parameter names.
`--scale d_model=N,n_layers=N` exports the architecture at another size (`scale_architecture`; docs/export.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import front
from .architecture import Architecture, BlockSpec, LayerSpec
from .errors import ArchsearchError
from .study import Run


class ExportError(ArchsearchError):
    """A trial, a format or an architecture that `export` cannot hand over."""


# --- which trial -----------------------------------------------------------------------------------------------------


def pick_trial(run: Run, trial: int | None = None, pick: str | None = None) -> tuple[int, str]:
    """The trial to export and why it was chosen: `trial` itself (checked), or by `pick` ("knee", "best:METRIC")."""
    if (trial is None) == (pick is None):
        raise ExportError("export: expected one of --trial N or --pick knee|best:METRIC")
    if trial is not None:
        ok_row(run, trial)
        return trial, "chosen with --trial"
    if pick == "knee":
        f = front.compute_front(run)
        names = ", ".join(o.metric for o in f.objectives)
        return f.knee, f"the knee of the front of {names} ({int(f.mask.sum())} trials on the front)"
    if pick is not None and pick.startswith("best:"):
        metric = pick.removeprefix("best:")
        number = front.best_trial(run, metric)
        (objective,) = front.objectives(run, [metric], flag=f"--pick {pick}")
        return number, f"the best {metric} ({'lowest' if objective.direction == 'minimize' else 'highest'}) of the ok trials"
    raise ExportError(f"export: --pick {pick}: expected knee or best:METRIC, e.g. best:bits_per_byte")


def ok_row(run: Run, trial: int) -> dict[str, Any]:
    """Trial `trial`'s row of the trials table; it must have finished ok."""
    trials = run.trials
    table = run.trials_file
    rows = trials[trials["trial"] == trial]
    if rows.empty:
        known = sorted(int(t) for t in trials["trial"])
        listed = f"trials {known[0]}..{known[-1]}" if known else "no trials"
        raise ExportError(f"export: --trial {trial}: no such trial in {table} ({listed})")
    row = rows.iloc[0].to_dict()
    if row["status"] != "ok":
        reason = f": {row['reason']}" if isinstance(row.get("reason"), str) and row["reason"] else ""
        raise ExportError(f"export: --trial {trial}: status {row['status']}{reason}; expected a trial that finished ok")
    return row


def trial_architecture(run: Run, trial: int) -> Architecture:
    """The normal-form architecture a trial trained (the vocabulary is the one it was trained with)."""
    return Architecture.from_json(ok_row(run, trial)["arch"], f"{run.trials_file} (trial {trial})")


def weights_file(run: Run, trial: int) -> Path:
    """The trial's saved proxy weights, else another ok trial's of the same architecture (see `Run.find_weights`).
    Raises when the run kept none."""
    found = run.find_weights(trial, ok_row(run, trial)["digest"])
    if found is not None:
        return found
    raise ExportError(f"export: --weights: {run.weights_file(trial)}: missing; the run saved no weights for trial {trial} "
                      "(set search.save_weights: true in the study to keep them)")


def load_weights(run: Run, trial: int, arch: Architecture) -> tuple[Architecture, dict[str, Any]]:
    """The trial's weights as a HybridLM state_dict, and the architecture they fit (the vocabulary they were
    trained with, should the table's differ)."""
    from safetensors.torch import load_file

    path = weights_file(run, trial)
    state = {k.removeprefix("_orig_mod."): v for k, v in load_file(path).items()}
    vocab = state["embed.weight"].shape[0] if "embed.weight" in state else arch.vocab_size
    if vocab != arch.vocab_size:
        arch = dataclasses.replace(arch, vocab_size=vocab)
    from .model import HybridLM

    expected = HybridLM(arch).state_dict()
    if set(expected) != set(state) or any(expected[k].shape != state[k].shape for k in expected):
        raise ExportError(f"export: --weights: {path}: the tensors do not fit trial {trial}'s architecture {arch.summary()}")
    return arch, state


# --- scaling --------------------------------------------------------------------------------------------------------

SCALABLE = ("d_model", "n_layers")


def parse_scale(text: str) -> dict[str, int]:
    """`d_model=1024,n_layers=24` -> {"d_model": 1024, "n_layers": 24} (either or both)."""
    out: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if key not in SCALABLE or not sep:
            raise ExportError(f"export: --scale {text}: {key or '(empty)'}: expected KEY=N with KEY one of "
                              f"{', '.join(SCALABLE)}, e.g. d_model=1024,n_layers=24")
        if not value.isdigit() or int(value) < 1:
            raise ExportError(f"export: --scale {text}: {key}: expected a positive integer, got {value!r}")
        out[key] = int(value)
    return out


def period(layers: tuple[LayerSpec, ...]) -> int:
    """The length of the shortest run of layers whose repetition is the whole list."""
    n = len(layers)
    return next(p for p in range(1, n + 1) if n % p == 0 and all(layers[i] == layers[i % p] for i in range(n)))


def scaled_depth(layers: tuple[LayerSpec, ...], n_layers: int) -> tuple[LayerSpec, ...]:
    """`n_layers` layers in the pattern of `layers`: a periodic pattern is repeated when n_layers is a multiple of
    its period; otherwise layer j of the new depth is the layer found at the same fraction of depth (the layer
    whose share [i/N, (i+1)/N) of the old depth holds (j + 1/2) / n_layers), so every block keeps its share of
    depth and its place."""
    p = period(layers)
    if n_layers % p == 0:
        return tuple(layers[j % p] for j in range(n_layers))
    n = len(layers)
    return tuple(layers[int((j + 0.5) * n / n_layers)] for j in range(n_layers))


def _scaled_block(block: BlockSpec, d_model: int, new_d: int, where: str) -> BlockSpec:
    """`block` at width new_d: heads keep their head_dim (the ratio heads / d_model), kv_heads their ratio to heads;
    among the head counts the family allows at new_d (heads divide d_model and so on), the nearest to that ratio.
    Every other parameter (windows, expansions, state sizes, kernel sizes) is a size of its own and is kept."""
    p = block.p
    if "heads" not in p:
        return BlockSpec.make(block.family, p, new_d)
    target = p["heads"] * new_d / d_model
    group = p["heads"] // p["kv_heads"] if "kv_heads" in p else None
    for heads in sorted(range(1, new_d + 1), key=lambda h: (abs(h - target), h)):
        candidate = {**p, "heads": heads}
        if group is not None:
            if heads % group:
                continue
            candidate["kv_heads"] = heads // group
        spec = BlockSpec.make(block.family, candidate, new_d)
        if not spec.fam.violations(spec.p, new_d):
            return spec
    raise ExportError(f"export: --scale d_model={new_d}: {where} {block.family}: no head count fits d_model {new_d}")


def scale_architecture(arch: Architecture, d_model: int | None = None, n_layers: int | None = None) -> Architecture:
    """`arch` at another width and depth, keeping its pattern and the family rules (see `scaled_depth` and
    `_scaled_block`; docs/export.md states the rule)."""
    new_d = d_model or arch.d_model
    layers = tuple(
        LayerSpec(_scaled_block(layer.mixer, arch.d_model, new_d, f"layer {i} mixer"),
                  _scaled_block(layer.channel, arch.d_model, new_d, f"layer {i} channel") if layer.channel else None)
        for i, layer in enumerate(arch.layers)
    )
    if n_layers is not None:
        layers = scaled_depth(layers, n_layers)
    return dataclasses.replace(arch, d_model=new_d, layers=layers)


# --- formats ---------------------------------------------------------------------------------------------------------


def export_yaml(arch: Architecture, out: Path, state: dict[str, Any] | None = None) -> list[Path]:
    """DIR/architecture.yaml (and DIR/model.safetensors, HybridLM's state_dict, with weights)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "architecture.yaml"
    path.write_text(arch.to_yaml())
    written = [path]
    if state is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
        written.append(out / "model.safetensors")
    return written


def export_hf(arch: Architecture, out: Path, state: dict[str, Any] | None = None) -> list[Path]:
    """A transformers directory; model.safetensors holds the proxy weights, or a fresh initialisation without."""
    from .hf import BUNDLE_FILE, REMOTE_FILES, save_hf

    save_hf(arch, out, state)
    return [out / name for name in ("config.json", *REMOTE_FILES, BUNDLE_FILE, "model.safetensors")]


@dataclass(frozen=True)
class FlaLayer:
    """How one of our mixer families maps onto fla's delta_net model. DeltaNet layers share one `group` of settings
    (fla's DeltaNetConfig has one), so every such layer must agree on `keys`; attention layers become fla attention
    specs (`attn`: a list of {layers, num_heads, num_kv_heads, window_size, rope_theta}), one per distinct setting."""

    group: str
    keys: tuple[str, ...]
    attention: bool = False  # an entry of fla's attn list rather than the model's shared setting


_FLA_ATTENTION = FlaLayer("attention", ("heads", "kv_heads", "rope_base", "window"), attention=True)
FLA_MIXERS: dict[str, FlaLayer] = {
    "deltanet": FlaLayer("deltanet", ("heads", "conv_size", "gate")),
    "attn": _FLA_ATTENTION,
    "swa": _FLA_ATTENTION,
}


def fla_config(arch: Architecture) -> dict[str, Any]:
    """fla's DeltaNet config (fla.models.DeltaNetConfig, fla 0.6) for a hybrid fla can express: deltanet mixers
    (one setting), global or sliding-window attention at any layers (one fla attention spec per distinct setting,
    each with its layers and window), swiglu glu channels of one width."""
    groups: dict[str, dict[str, Any]] = {"deltanet": {}, "glu": {}}
    specs: dict[tuple[Any, ...], list[int]] = {}  # attention setting -> its layers
    for i, layer in enumerate(arch.layers):
        mixer, channel = layer.mixer, layer.channel
        kind = FLA_MIXERS.get(mixer.family)
        if kind is None:
            raise ExportError(f"export: fla has no {mixer.family!r} layer (layer {i})")
        if not mixer.p.get("qv_conv", True):
            raise ExportError(f"export: fla's DeltaNet convolves q, k and v alike; layer {i} has qv_conv false (k only)")
        if kind.attention:
            specs.setdefault(tuple(mixer.p.get(k) for k in kind.keys), []).append(i)
        else:
            _same(groups[kind.group], {k: mixer.p.get(k) for k in kind.keys}, i, kind.group, kind.keys)
        if channel is None:
            raise ExportError(f"export: fla's delta_net has an MLP in every layer; layer {i} has none")
        if channel.family != "glu":
            raise ExportError(f"export: fla has no {channel.family!r} layer (layer {i} channel)")
        if channel.p["kind"] != "swiglu":
            raise ExportError(f"export: fla's GatedMLP is swiglu; layer {i} has glu kind {channel.p['kind']!r}")
        _same(groups["glu"], {"hidden": channel.fam.hidden(channel.p, arch.d_model)}, i, "glu", ("hidden",))
    deltanet, glu = groups["deltanet"], groups["glu"]
    heads = deltanet.get("heads", next(iter(specs))[0] if specs else None)
    config: dict[str, Any] = {
        "model_type": "delta_net",
        "architectures": ["DeltaNetForCausalLM"],
        "attn_mode": "chunk",
        "hidden_size": arch.d_model,
        "num_hidden_layers": arch.n_layers,
        "num_heads": heads,
        "expand_k": 1.0,
        "expand_v": 1.0,
        "use_short_conv": deltanet.get("conv_size", 4) > 0,
        "conv_size": deltanet.get("conv_size", 4) or 4,
        "use_gate": deltanet.get("gate", True),
        "use_beta": True,
        "use_output_norm": True,
        "qk_norm": "l2",
        "qk_activation": "silu",
        # fla's GatedMLP width is intermediate_size when given; hidden_ratio (of which it would take 2/3) only describes it
        "hidden_ratio": round(glu["hidden"] / arch.d_model * 3 / 2, 6),
        "intermediate_size": glu["hidden"],
        "hidden_act": "swish",
        "norm_eps": 1e-6,
        "vocab_size": arch.vocab_size,
        "tie_word_embeddings": arch.tie_embeddings,
        "initializer_range": 0.02,
        "attn": [
            {"layers": layers, "num_heads": h, "num_kv_heads": kv, "qkv_bias": False, "window_size": window,
             "rope_theta": rope}
            for (h, kv, rope, window), layers in specs.items()
        ] or None,
    }
    return config


def _same(seen: dict[str, Any], params: dict[str, Any], layer: int, kind: str, keys: tuple[str, ...]) -> None:
    """fla configures each kind of layer once: every layer of a kind must agree with the first on `keys`."""
    if not seen:
        seen.update({k: params[k] for k in params}, first=layer)
        return
    for key in keys:
        if params[key] != seen[key]:
            why = f"fla's delta_net has one {kind} setting for all of its layers"
            first, this = (_setting(key, v) for v in (seen[key], params[key]))
            raise ExportError(f"export: {why}; layer {seen['first']} has {kind} {first}, layer {layer} has {this}")


def _setting(key: str, value: Any) -> str:
    return f"{key}={value}"


# our parameter names inside a layer -> fla's (DeltaNetForCausalLM, fla 0.6), and how the tensor changes
_FLA_NAMES = {
    "mixer_norm.weight": "attn_norm.weight",
    "channel_norm.weight": "mlp_norm.weight",
    **{f"mixer.{p}_proj.weight": f"attn.{p}_proj.weight" for p in ("q", "k", "v", "b", "g", "o")},
    **{f"mixer.{p}_conv1d.weight": f"attn.{p}_conv1d.weight" for p in ("q", "k", "v")},
    "mixer.o_norm.weight": "attn.o_norm.weight",
    "mixer.wq.weight": "attn.q_proj.weight",
    "mixer.wk.weight": "attn.k_proj.weight",
    "mixer.wv.weight": "attn.v_proj.weight",
    "mixer.wo.weight": "attn.o_proj.weight",
    "channel.w1": "mlp.gate_proj.weight",
    "channel.w3": "mlp.up_proj.weight",
    "channel.w2": "mlp.down_proj.weight",
}


def fla_state_dict(arch: Architecture, state: dict[str, Any]) -> dict[str, Any]:
    """HybridLM's state_dict in fla's parameter names and layouts (for `fla_config(arch)`): nn.Linear weights are
    [out, in] (our MLP stores [in, out]: transposed), fla's short convolutions are Conv1d weights [C, 1, K]."""
    fla_config(arch)  # what fla cannot express is refused here too
    out = {"model.embeddings.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    if "head.weight" in state:
        out["lm_head.weight"] = state["head.weight"]
    for key, tensor in state.items():
        if not key.startswith("layers."):
            continue
        _, layer, rest = key.split(".", 2)
        if rest not in _FLA_NAMES:
            raise ExportError(f"export: --weights: layer {layer}: fla has no parameter for {rest}")
        if rest.startswith("channel.w"):
            tensor = tensor.t()
        elif "_conv1d." in rest:
            tensor = tensor[:, None, :]
        out[f"model.layers.{layer}.{_FLA_NAMES[rest]}"] = tensor.contiguous()
    return out


def export_fla(arch: Architecture, out: Path, state: dict[str, Any] | None = None) -> list[Path]:
    """DIR/config.json for fla's DeltaNetForCausalLM and the architecture.yaml it came from; with weights,
    DIR/model.safetensors in fla's parameter names (`fla_state_dict`)."""
    config = fla_config(arch)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    (out / "architecture.yaml").write_text(arch.to_yaml())
    written = [path, out / "architecture.yaml"]
    if state is not None:
        from safetensors.torch import save_file

        save_file(fla_state_dict(arch, state), out / "model.safetensors", metadata={"format": "pt"})
        written.append(out / "model.safetensors")
    return written


EXPORTERS: dict[str, Callable[[Architecture, Path, dict[str, Any] | None], list[Path]]] = {
    "yaml": export_yaml,
    "hf": export_hf,
    "fla": export_fla,
}


def export(run: Run, trial: int, to: str, out: str | Path, weights: bool = False,
           scale: dict[str, int] | None = None) -> list[Path]:
    """Write trial `trial` of `run` (scaled by `scale`, see `scale_architecture`) in format `to` into `out`;
    returns the files written."""
    if to not in EXPORTERS:
        raise ExportError(f"export: --to {to}: expected one of {', '.join(EXPORTERS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"export: --out {out}: is a file; expected a directory (it is created if missing)")
    if scale and weights:
        raise ExportError("export: --weights goes without --scale; the proxy's weights fit the proxy's size only")
    arch = trial_architecture(run, trial)
    if scale:
        arch = scale_architecture(arch, **scale)
    state = None
    if to == "fla":
        fla_config(arch)  # an inexpressible hybrid is the error to report, before any about weights
    if weights:
        arch, state = load_weights(run, trial, arch)
    return EXPORTERS[to](arch, out, state)
