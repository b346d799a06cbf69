"""The exported transformers directory in a virtual environment with torch and transformers alone (no archsearch):
it loads, honours left padding, generates what archsearch generates with one step per new token and a decode state
that does not grow for recurrent blocks, survives save_pretrained / from_pretrained, and trains under `Trainer`.

The environment is $ARCHSEARCH_BARE_VENV when set (.ci/run makes it once), else one made here with
`python -m venv` and `pip install torch==2.13.0 transformers accelerate` (accelerate: what `Trainer` needs).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from archsearch import Architecture, build_model
from archsearch.hf import save_hf

ARCH = Architecture.from_yaml(textwrap.dedent("""
    d_model: 32
    layers:
      - {mixer: {block: deltanet, heads: 2}, channel: glu}
      - {mixer: {block: attn, heads: 2, kv_heads: 1}, channel: {block: moe, experts: 4, top_k: 2}}
      - {mixer: {block: swa, heads: 2, window: 4}, channel: glu}
      - {mixer: {block: hyena, order: 2}, channel: none}
"""))
NEW_TOKENS = 6

# runs in the bare environment; its arguments: the model directory and the file of expected results
BARE_SCRIPT = r'''
import sys, tempfile
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

try:
    import archsearch
    sys.exit(f"archsearch is importable from {archsearch.__file__}; the test needs an environment without it")
except ModuleNotFoundError:
    pass
model_dir, expected_file = sys.argv[1:]
expected = torch.load(expected_file)
x, mask, pads = expected["x"], expected["mask"], expected["pads"]
model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__

with torch.no_grad():
    torch.testing.assert_close(model(x).logits, expected["logits"], rtol=1e-5, atol=1e-5)
    padded = model(x, attention_mask=mask).logits  # each row as if it were alone and unpadded
    for i, pad in enumerate(pads):
        torch.testing.assert_close(padded[i, pad:], expected["row_logits"][i], rtol=1e-5, atol=1e-5)

embedded = []  # tokens through the embedding: the prompt once, then one per new token (no recomputation)
hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: embedded.append(i[0].numel()))
generated = model.generate(x, attention_mask=mask, max_new_tokens=expected["new"], do_sample=False)
hook.remove()
assert torch.equal(generated[:, x.shape[1]:], expected["generated"]), (generated, expected["generated"])
assert sum(embedded) == sum(x.shape[1] - p for p in pads) + len(pads) * (expected["new"] - 1), embedded

# the recurrent block (DeltaNet, layer 0) and the sliding window (layer 2, window 4) keep a decode state of the
# same size after 4 tokens and after 9; the global attention's cache grows by a token per token
def state_numel(out, layer):
    return sum(t.numel() for _, s in out.decode_state.groups for t in torch.utils._pytree.tree_leaves(s[layer])
               if isinstance(t, torch.Tensor))
with torch.no_grad():
    out = model(x[:, :4], use_cache=True)
    after_4 = [state_numel(out, layer) for layer in (0, 1, 2)]
    for t in range(4, x.shape[1]):
        out = model(x[:, t:t + 1], decode_state=out.decode_state)
    after_9 = [state_numel(out, layer) for layer in (0, 1, 2)]
    assert after_9[0] == after_4[0] and after_9[2] == after_4[2] and after_9[1] > after_4[1], (after_4, after_9)
    torch.testing.assert_close(out.logits[:, -1], expected["logits"][:, -1], rtol=1e-4, atol=1e-4)

with tempfile.TemporaryDirectory() as saved:
    model.save_pretrained(saved)
    again = AutoModelForCausalLM.from_pretrained(saved, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)

    model.train()
    pattern = torch.arange(32) % 8
    data = [{"input_ids": (pattern + i) % 8, "labels": (pattern + i) % 8} for i in range(32)]
    args = TrainingArguments(output_dir=saved + "/trainer", max_steps=12, per_device_train_batch_size=8,
                             learning_rate=1e-2, logging_steps=4, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0], losses
print("bare environment: ok", losses)
'''


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    given = os.environ.get("ARCHSEARCH_BARE_VENV")
    venv = Path(given) if given else tmp_path_factory.mktemp("bare") / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "transformers", "accelerate"],
                       check=True, timeout=900)
    return python


def test_hf_export_runs_trains_and_generates_without_archsearch(bare_python, tmp_path):
    torch.manual_seed(0)
    save_hf(ARCH, tmp_path / "model")
    torch.manual_seed(0)
    reference = build_model(ARCH).eval()
    x = torch.randint(0, 256, (3, 9))
    pads = [0, 2, 5]
    mask = torch.ones_like(x)
    for i, pad in enumerate(pads):
        mask[i, :pad] = 0
    with torch.no_grad():
        expected = {
            "x": x, "mask": mask, "pads": pads, "new": NEW_TOKENS,
            "logits": reference(x).logits,
            "row_logits": [reference(x[i:i + 1, pad:]).logits[0] for i, pad in enumerate(pads)],
            "generated": torch.cat([reference.generate(x[i:i + 1, pad:], NEW_TOKENS, temperature=0)[:, -NEW_TOKENS:]
                                    for i, pad in enumerate(pads)]),
        }
    torch.save(expected, tmp_path / "expected.pt")
    (tmp_path / "bare.py").write_text(BARE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run([str(bare_python), "-I", str(tmp_path / "bare.py"), str(tmp_path / "model"),
                           str(tmp_path / "expected.pt")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bare environment: ok" in done.stdout
