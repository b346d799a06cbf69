"""`archsearch export`: normal-form YAML, a transformers directory that loads and trains, fla configs."""

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from archsearch import Architecture, build_model
from archsearch.cli import main
from archsearch.export import ExportError, fla_config, period, scale_architecture
from archsearch.metrics import human, human_bytes
from archsearch.study import TABLE_COLUMNS

STUDY = """\
name: tiny
space:
  name: tiny
  d_model: {choice: [32, 64]}
  n_layers: {choice: [2, 3, 4]}
  layers:
    mixer: deltanet
    channel: glu
    place:
      - {mixer: attn, at: {positions: 1}}
  blocks:
    deltanet: {heads: 2}
    attn: {heads: 2}
objectives: [{bits_per_byte: min}, {train_tokens_per_s: max}]
"""


def arch_of(text: str) -> Architecture:
    return Architecture.from_yaml(textwrap.dedent(text))


HYBRID = arch_of("""
    d_model: 32
    layers:
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: attn, heads: 2, kv_heads: 1}, channel: glu}
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: attn, heads: 2, kv_heads: 1}, channel: glu}
""")
SWA = arch_of("""
    d_model: 32
    layers:
      - {mixer: {block: swa, heads: 2, window: 16}, channel: glu}
      - {mixer: {block: deltanet, heads: 4, conv_size: 0, gate: false}, channel: {block: glu, expansion: 4}}
""")
HYENA = arch_of("""
    d_model: 32
    layers:
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: attn, heads: 2}, channel: glu}
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: hyena, filter_width: 8}, channel: glu}
""")
UNTIED = arch_of("""
    d_model: 32
    tie_embeddings: false
    layers:
      - {mixer: {block: hyena, filter_width: 8}, channel: {block: moe, experts: 4}}
      - {mixer: {block: attn, heads: 2}, channel: glu}
""")

# trial: (architecture, status, bits_per_byte, train_tokens_per_s)
TRIALS = {
    0: (HYBRID, "ok", 1.5, 900.0),
    1: (SWA, "ok", 1.2, 500.0),
    2: (HYENA, "ok", 1.9, 1000.0),
    3: (HYBRID, "diverged", None, None),
    4: (UNTIED, "ok", 1.4, 300.0),
    5: (HYBRID, "ok", 1.5, 900.0),  # trial 0's architecture again: its result (and weights) reused
}


@pytest.fixture
def run_dir(tmp_path):
    """A run by hand: the tiny study, the trials above, proxy weights saved for trials 0 and 4."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "study.yaml").write_text(STUDY)
    rows = []
    for trial, (arch, status, bpb, tps) in TRIALS.items():
        row = dict.fromkeys(TABLE_COLUMNS)
        row.update(trial=trial, status=status, reason="" if status == "ok" else "loss is nan at step 3",
                   summary=arch.summary(), digest=arch.digest, arch=arch.to_json(), params=arch.cost().params,
                   bits_per_byte=bpb, train_tokens_per_s=tps, seed=0)
        rows.append(row)
    pd.DataFrame(rows).to_csv(path / "trials.csv", index=False)
    (path / "weights").mkdir()
    for trial in (0, 4):
        torch.manual_seed(100 + trial)
        model = build_model(TRIALS[trial][0])
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "weights" / f"trial_{trial}.safetensors")
    return path


def proxy_model(run_dir, trial):
    model = build_model(TRIALS[trial][0])
    model.load_state_dict(load_file(run_dir / "weights" / f"trial_{trial}.safetensors"))
    return model.eval()


# --- yaml --------------------------------------------------------------------------------------------------------------


def test_yaml_export_round_trips_and_builds(run_dir, tmp_path, capsys):
    out = tmp_path / "t1"
    assert main(["export", str(run_dir), "--trial", "1", "--to", "yaml", "--out", str(out)]) == 0
    assert "trial 1: SD" in capsys.readouterr().out
    arch = Architecture.load(str(out / "architecture.yaml"))
    assert arch == SWA and arch.digest == SWA.digest
    assert sum(p.numel() for p in build_model(arch).parameters()) == SWA.cost().params


def test_yaml_export_with_weights_writes_the_proxy_state_dict(run_dir, tmp_path):
    out = tmp_path / "t0"
    assert main(["export", str(run_dir), "--trial", "0", "--to", "yaml", "--out", str(out), "--weights"]) == 0
    model = build_model(Architecture.load(str(out / "architecture.yaml")))
    model.load_state_dict(load_file(out / "model.safetensors"))
    x = torch.randint(0, 256, (1, 12))
    assert torch.equal(model.eval()(x).logits, proxy_model(run_dir, 0)(x).logits)


def test_a_reused_result_exports_the_weights_of_the_trial_that_trained_them(run_dir, tmp_path):
    out = tmp_path / "t5"
    assert main(["export", str(run_dir), "--trial", "5", "--to", "yaml", "--out", str(out), "--weights"]) == 0
    assert torch.equal(load_file(out / "model.safetensors")["embed.weight"], proxy_model(run_dir, 0).embed.weight)


# --- picking -----------------------------------------------------------------------------------------------------------


def test_pick_knee_and_best_choose_among_ok_trials(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--pick", "best:bits_per_byte", "--to", "yaml", "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.startswith("trial 1:")
    assert main(["export", str(run_dir), "--pick", "best:train_tokens_per_s", "--to", "yaml", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.startswith("trial 2:")
    assert main(["export", str(run_dir), "--pick", "best:params", "--to", "yaml", "--out", str(tmp_path / "c")]) == 0
    smallest = min((t for t, v in TRIALS.items() if v[1] == "ok"), key=lambda t: TRIALS[t][0].cost().params)
    assert capsys.readouterr().out.startswith(f"trial {smallest}:")
    # front (1.2, 500) (1.5, 900) (1.9, 1000): scaled (0, 1) (0.43, 0.2) (1, 0), the middle one is the knee
    assert main(["export", str(run_dir), "--pick", "knee", "--to", "yaml", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trial 0:") and "the knee of the front of bits_per_byte, train_tokens_per_s" in out


@pytest.mark.parametrize("args, expected", [
    (["--trial", "9"], "--trial 9: no such trial in"),
    (["--trial", "3"], "--trial 3: status diverged: loss is nan at step 3; expected a trial that finished ok"),
    (["--trial", "1", "--weights"], "trial_1.safetensors: missing"),
    (["--pick", "best"], "--pick best: expected knee or best:METRIC"),
    (["--pick", "best:speed"], "--pick best:speed: unknown metric 'speed'"),
    (["--trial", "2", "--to", "fla"], "export: fla has no 'hyena' layer (layer 3)"),
    (["--trial", "0", "--scale", "width=64"], "--scale width=64: width: expected KEY=N with KEY one of d_model, n_layers"),
    (["--trial", "0", "--scale", "d_model=x"], "--scale d_model=x: d_model: expected a positive integer, got 'x'"),
    (["--trial", "0", "--scale", "n_layers=8", "--weights"], "--weights goes without --scale"),
])
def test_bad_export_requests_are_one_line_and_exit_code_2(run_dir, tmp_path, capsys, args, expected):
    to = [] if "--to" in args else ["--to", "yaml"]
    assert main(["export", str(run_dir), *args, *to, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--trial", "0", "--to", "hf", "--out", str(tmp_path / "x")]) == 2
    assert "no such run directory" in capsys.readouterr().err


# --- scaling -----------------------------------------------------------------------------------------------------------


def test_scaling_repeats_a_periodic_pattern_and_keeps_head_dims_and_windows():
    hybrid = arch_of("""
        d_model: 64
        layers:
          - {mixer: {block: deltanet, heads: 2}, channel: glu}
          - {mixer: {block: attn, heads: 4, kv_heads: 2}, channel: glu}
          - {mixer: {block: deltanet, heads: 2}, channel: glu}
          - {mixer: {block: swa, heads: 4, window: 16}, channel: {block: glu, expansion: 4}}
    """)
    big = scale_architecture(hybrid, d_model=1024, n_layers=24)
    assert big.d_model == 1024 and big.n_layers == 24
    assert "".join(layer.mixer.fam.letter for layer in big.layers) == "DADS" * 6
    deltanet, attn, _, swa = (layer.mixer.p for layer in big.layers[:4])
    assert 1024 // deltanet["heads"] == 64 // 2 and 1024 // attn["heads"] == 64 // 4  # head_dim kept
    assert attn["heads"] // attn["kv_heads"] == 2 and swa["window"] == 16  # grouping and window kept
    assert big.layers[3].channel.p["expansion"] == 4.0
    assert big.cost().params > 100 * hybrid.cost().params


def test_scaling_to_a_depth_off_the_period_keeps_each_blocks_share_of_depth():
    hybrid = arch_of("""
        d_model: 32
        layers:
          - {mixer: {block: deltanet, heads: 2}, channel: glu}
          - {mixer: {block: deltanet, heads: 2}, channel: glu}
          - {mixer: {block: attn, heads: 2}, channel: glu}
    """)
    assert period(hybrid.layers) == 3
    assert "".join(layer.mixer.fam.letter for layer in scale_architecture(hybrid, n_layers=6).layers) == "DDA" * 2
    assert "".join(layer.mixer.fam.letter for layer in scale_architecture(hybrid, n_layers=5).layers) == "DDDAA"


def test_scaling_keeps_the_family_rules_when_the_ratio_does_not_divide():
    # 3 heads of head_dim 32 at d_model 96; at 80, 80 / 32 = 2.5 heads: the nearest count that divides 80 with an
    # even head_dim (rotary) and divides by the kv grouping
    narrow = arch_of("""
        d_model: 96
        layers:
          - {mixer: {block: attn, heads: 6, kv_heads: 3}, channel: glu}
    """)
    attn = scale_architecture(narrow, d_model=80).layers[0].mixer.p
    assert 80 % attn["heads"] == 0 and (80 // attn["heads"]) % 2 == 0 and attn["heads"] == 2 * attn["kv_heads"]
    assert abs(attn["heads"] - 5) <= 1


def test_export_scale_prints_the_scaled_cost_and_writes_the_scaled_architecture(run_dir, tmp_path, capsys):
    out = tmp_path / "big"
    assert main(["export", str(run_dir), "--pick", "knee", "--scale", "d_model=128,n_layers=8", "--to", "yaml",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    big = Architecture.load(str(out / "architecture.yaml"))
    assert big == scale_architecture(HYBRID, d_model=128, n_layers=8)
    cost = big.cost()
    assert f"scaled to d_model=128,n_layers=8: {big.summary()}" in printed
    assert f"params={human(cost.params)} flops_per_token={human(cost.flops_per_token)}" in printed
    assert f"state_bytes={human_bytes(cost.state_bytes)}" in printed
    assert main(["export", str(run_dir), "--trial", "0", "--scale", "n_layers=8", "--to", "fla",
                 "--out", str(tmp_path / "fla")]) == 0
    assert json.loads((tmp_path / "fla" / "config.json").read_text())["attn"][0]["layers"] == [1, 3, 5, 7]


# --- Hugging Face ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trial", [0, 4])
def test_hf_export_loads_with_automodel_and_matches_build_model(run_dir, tmp_path, trial):
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--trial", str(trial), "--to", "hf", "--out", str(out), "--weights"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "archsearch_hybrid"
    assert config["auto_map"] == {"AutoConfig": "configuration_archsearch.ArchsearchConfig",
                                  "AutoModelForCausalLM": "modeling_archsearch.ArchsearchForCausalLM"}
    assert config["tie_word_embeddings"] == TRIALS[trial][0].tie_embeddings
    assert AutoConfig.from_pretrained(out, trust_remote_code=True).arch() == TRIALS[trial][0]
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        logits = model(x).logits
        expected = proxy_model(run_dir, trial)(x).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    # labels are the input ids; the loss is next-token cross-entropy (plus the experts' balancing loss)
    with torch.no_grad():
        loss = model(x, labels=x).loss
        ce = torch.nn.functional.cross_entropy(expected[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    aux = [b.aux_loss for b in model.model.blocks() if b.aux_loss is not None]
    torch.testing.assert_close(loss, ce + (torch.stack(aux).sum() if aux else 0))


def test_hf_export_without_weights_is_build_models_initialisation(run_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--trial", "1", "--to", "hf", "--out", str(out)]) == 0
    assert "fresh initialisation" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    torch.manual_seed(0)
    reference = build_model(SWA).eval()
    x = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x).logits, rtol=0, atol=0)
    generated = model.generate(x[:, :5], max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, reference.generate(x[:, :5], 4, temperature=0))
    right_padded = torch.ones_like(x).index_fill_(1, torch.tensor([18, 19]), 0)
    assert torch.equal(model(x, attention_mask=right_padded).logits, model(x).logits)
    with torch.no_grad():  # left padding: the row's logits are those of its tokens alone
        left = model(x, attention_mask=right_padded.flip(1)).logits
        torch.testing.assert_close(left[0, 2:], reference(x[:, 2:]).logits[0], rtol=1e-5, atol=1e-5)
    holed = torch.ones_like(x).index_fill_(1, torch.tensor([7]), 0)
    with pytest.raises(ValueError, match="left or right padding"):
        model(x, attention_mask=holed)


def test_hf_export_loads_in_a_fresh_process_through_auto_map(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--trial", "4", "--to", "hf", "--out", str(out), "--weights"]) == 0
    code = ("import sys, torch; from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True); "
            "print(type(m).__name__, m(torch.arange(8)[None]).logits.shape)")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ArchsearchForCausalLM torch.Size([1, 8, 256])" in done.stdout


def test_hf_trainer_trains_the_exported_model(run_dir, tmp_path):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--trial", "0", "--to", "hf", "--out", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    pattern = torch.arange(32) % 8
    data = [{"input_ids": (pattern + i) % 8, "labels": (pattern + i) % 8} for i in range(32)]
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=12, per_device_train_batch_size=8,
                             learning_rate=1e-2, logging_steps=4, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert losses[-1] < losses[0]


# --- fla ---------------------------------------------------------------------------------------------------------------

# fla's DeltaNetConfig.__init__ parameters (fla/models/delta_net/configuration_delta_net.py)
FLA_FIELDS = {
    "attn_mode", "hidden_size", "expand_k", "expand_v", "use_gate", "use_short_conv", "conv_size", "use_beta",
    "use_output_norm", "num_heads", "qk_norm", "qk_activation", "max_position_embeddings", "hidden_ratio",
    "intermediate_size", "hidden_act", "num_hidden_layers", "norm_eps", "attn", "use_cache", "pad_token_id",
    "bos_token_id", "eos_token_id", "tie_word_embeddings", "initializer_range", "fuse_norm", "fuse_swiglu",
    "fuse_cross_entropy", "use_l2warp", "vocab_size",
}


def test_fla_export_of_a_deltanet_attention_hybrid(run_dir, tmp_path):
    out = tmp_path / "fla"
    assert main(["export", str(run_dir), "--trial", "0", "--to", "fla", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert set(config) - {"model_type", "architectures"} <= FLA_FIELDS
    assert config["model_type"] == "delta_net"
    assert config["attn"] == [{"layers": [1, 3], "num_heads": 2, "num_kv_heads": 1, "qkv_bias": False,
                               "window_size": None, "rope_theta": 10000.0}]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_heads"]) == (32, 4, 2)
    assert config["use_short_conv"] and config["conv_size"] == 4 and config["use_gate"]
    assert (config["qk_norm"], config["qk_activation"], config["hidden_act"]) == ("l2", "silu", "swish")
    glu = HYBRID.layers[0].channel
    assert config["intermediate_size"] == glu.fam.hidden(glu.p, 32) == 128
    assert config["vocab_size"] == 256 and config["tie_word_embeddings"] is True
    assert Architecture.load(str(out / "architecture.yaml")) == HYBRID


def test_fla_export_of_sliding_windows_carries_the_window():
    config = fla_config(SWA)
    assert config["attn"] == [{"layers": [0], "num_heads": 2, "num_kv_heads": 2, "qkv_bias": False, "window_size": 16,
                               "rope_theta": 10000.0}]
    assert config["use_short_conv"] is False and config["use_gate"] is False and config["num_heads"] == 4
    assert config["intermediate_size"] == 128 and config["hidden_ratio"] == 6


def test_fla_export_gives_each_attention_setting_its_own_spec():
    mixed = arch_of("""
        d_model: 32
        layers:
          - {mixer: {block: swa, heads: 2, window: 8}, channel: glu}
          - {mixer: {block: deltanet, heads: 2}, channel: glu}
          - {mixer: {block: attn, heads: 4, kv_heads: 2}, channel: glu}
          - {mixer: {block: swa, heads: 2, window: 8}, channel: glu}
          - {mixer: {block: swa, heads: 2, window: 16}, channel: glu}
    """)
    specs = fla_config(mixed)["attn"]
    assert [(s["layers"], s["num_heads"], s["num_kv_heads"], s["window_size"]) for s in specs] == [
        ([0, 3], 2, 2, 8), ([2], 4, 2, None), ([4], 2, 2, 16)]


# fla 0.6's DeltaNetForCausalLM(DeltaNetConfig(hidden_size=32, num_heads=2, num_hidden_layers=2, use_gate=True,
# intermediate_size=128, vocab_size=256)).named_parameters(), layer 0 (layer 1 alike), as fla prints them
FLA_DELTANET_LAYER = {
    "attn_norm.weight": (32,), "attn.q_proj.weight": (32, 32), "attn.k_proj.weight": (32, 32),
    "attn.v_proj.weight": (32, 32), "attn.b_proj.weight": (2, 32), "attn.q_conv1d.weight": (32, 1, 4),
    "attn.k_conv1d.weight": (32, 1, 4), "attn.v_conv1d.weight": (32, 1, 4), "attn.g_proj.weight": (32, 32),
    "attn.o_norm.weight": (16,), "attn.o_proj.weight": (32, 32), "mlp_norm.weight": (32,),
    "mlp.gate_proj.weight": (128, 32), "mlp.up_proj.weight": (128, 32), "mlp.down_proj.weight": (32, 128),
}
# fla.layers.attn.Attention's projections (q_proj, k_proj, v_proj, o_proj as nn.Linear [out, in])
FLA_ATTENTION_MIXER = {"attn.q_proj.weight": (32, 32), "attn.k_proj.weight": (16, 32), "attn.v_proj.weight": (16, 32),
                       "attn.o_proj.weight": (32, 32)}


def test_fla_weights_carry_fla_names_and_layouts(run_dir, tmp_path):
    out = tmp_path / "fla"
    assert main(["export", str(run_dir), "--trial", "0", "--to", "fla", "--out", str(out), "--weights"]) == 0
    fla = load_file(out / "model.safetensors")
    ours = proxy_model(run_dir, 0).state_dict()
    mixer_keys = {k for k in FLA_DELTANET_LAYER if k.startswith("attn.") }
    expected = {"model.embeddings.weight": (256, 32), "model.norm.weight": (32,)}
    for i in range(4):  # HYBRID: deltanet, attn (kv_heads 1), deltanet, attn
        layer = FLA_DELTANET_LAYER if i % 2 == 0 else {
            **{k: v for k, v in FLA_DELTANET_LAYER.items() if k not in mixer_keys}, **FLA_ATTENTION_MIXER}
        expected.update({f"model.layers.{i}.{k}": v for k, v in layer.items()})
    assert {k: tuple(v.shape) for k, v in fla.items()} == expected
    assert torch.equal(fla["model.layers.0.mlp.gate_proj.weight"], ours["layers.0.channel.w1"].t())
    assert torch.equal(fla["model.layers.0.mlp.down_proj.weight"], ours["layers.0.channel.w2"].t())
    assert torch.equal(fla["model.layers.0.attn.k_conv1d.weight"][:, 0], ours["layers.0.mixer.k_conv1d.weight"])
    assert torch.equal(fla["model.layers.1.attn.k_proj.weight"], ours["layers.1.mixer.wk.weight"])


@pytest.mark.parametrize("text, expected", [
    ("""
     d_model: 32
     layers:
       - {mixer: {block: deltanet, heads: 2}, channel: glu}
       - {mixer: {block: deltanet, heads: 4}, channel: glu}
     """, "one deltanet setting for all of its layers; layer 0 has deltanet heads=2, layer 1 has heads=4"),
    ("""
     d_model: 32
     layers:
       - {mixer: deltanet, channel: {block: glu, kind: geglu}}
     """, "fla's GatedMLP is swiglu; layer 0 has glu kind 'geglu'"),
    ("""
     d_model: 32
     layers:
       - {mixer: deltanet, channel: {block: moe, experts: 4}}
     """, "fla has no 'moe' layer (layer 0 channel)"),
    ("""
     d_model: 32
     layers:
       - {mixer: deltanet, channel: none}
     """, "layer 0 has none"),
    ("""
     d_model: 32
     layers:
       - {mixer: {block: deltanet, qv_conv: false}, channel: glu}
     """, "fla's DeltaNet convolves q, k and v alike; layer 0 has qv_conv false"),
])
def test_fla_export_names_what_fla_lacks(text, expected):
    with pytest.raises(ExportError) as e:
        fla_config(arch_of(text))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_archsearch_hf_registers_the_auto_classes():
    from transformers import AutoConfig, AutoModelForCausalLM

    from archsearch.hf import ArchsearchForCausalLM

    config = AutoConfig.for_model("archsearch_hybrid", architecture=HYBRID.to_dict())
    model = AutoModelForCausalLM.from_config(config)
    assert isinstance(model, ArchsearchForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == HYBRID.cost().params


def test_hf_directory_carries_archsearchs_model_sources_unchanged(tmp_path):
    from archsearch.bundle import module_closure
    from archsearch.hf import save_hf

    save_hf(HYBRID, tmp_path)
    namespace = {}
    exec((tmp_path / "archsearch_bundle.py").read_text(), namespace)  # the bundle is plain Python: read its table
    modules = module_closure("archsearch.hf")
    assert {"archsearch.model", "archsearch.blocks.deltanet", "archsearch.kernels.delta_rule.reference"} <= set(modules)
    assert "archsearch.study" not in modules and "archsearch.proxy" not in modules  # the search stack stays out
    for name, path in modules.items():
        if name != "archsearch":
            assert namespace["SOURCES"][name.removeprefix("archsearch.")] == path.read_text(), name


def test_hf_generate_steps_once_per_new_token(tmp_path):
    from transformers import AutoModelForCausalLM

    from archsearch.hf import save_hf

    torch.manual_seed(0)
    save_hf(HYBRID, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    seen = []
    model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model.generate(torch.randint(0, 256, (2, 7)), max_new_tokens=5, do_sample=False)
    assert seen == [torch.Size([2])] * (7 + 4)  # prefill step by step, then one step per new token
