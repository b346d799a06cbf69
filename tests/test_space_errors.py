"""Every malformed space gets one line FILE:LINE: KEY: what was expected, exit code 2, no traceback."""

import subprocess
import sys
import textwrap

import pytest

from archsearch import SpaceError, space_from_yaml
from archsearch.cli import main

OK = """\
d_model: 64
n_layers: 4
layers:
  mixer: deltanet
  channel: glu
"""

# (name, YAML text, line, key, a fragment of the message)
CASES = [
    ("a block given a number range (fuzzed)", "d_model: 64\nn_layers: 2\nlayers: {mixer: {int: [1, 9]}, channel: glu}\n", 3, "layers.mixer", "a mixer block is a name"),
    ("too many layers", "d_model: 64\nn_layers: 100000\nlayers: {mixer: attn, channel: glu}\n", 2, "n_layers", "at most 1,024"),
    ("a layer range past the cap", "d_model: 64\nn_layers: {int: [1, 9000000000000000]}\nlayers: {mixer: attn, channel: glu}\n", 2, "n_layers", "at most 1,024"),
    ("shorthand repeated past the cap", "d_model: 64\nlayers: [attn+glu x 100000]\n", 2, "layers[0]", "at most 1,024 layers"),
    ("repeat groups past the cap", "d_model: 64\nlayers:\n  - repeat: 1000000000000\n    layers: [attn+glu]\n", 2, "layers", "at most 1,024"),
    ("d_model past the cap", "d_model: {choice: [64, 1000000]}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model", "at most 65,536"),
    ("an integer block parameter past the cap", "d_model: 64\nn_layers: 2\nlayers: {mixer: swa, channel: glu, window: 9007199254740992}\n", 3, "layers.window", "at most 1048576"),
    ("context past the cap", OK + "constraints: {context: 9007199254740992}\n", 6, "constraints.context", "at most 1,048,576"),
    ("an infinite quantity", OK + "constraints: {params: {max: 1e400M}}\n", 6, "constraints.params.max", "non-negative quantity"),
    ("invalid yaml", "d_model: 64\nlayers: [deltanet+glu\n", 3, "", "invalid YAML"),
    ("not a mapping", "- 1\n- 2\n", 1, "", "expected a mapping"),
    ("empty file", "", 1, "", "empty"),
    ("unknown top key", OK + "n_layer: 4\n", 6, "n_layer", "unknown key"),
    ("missing d_model", "n_layers: 4\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model", "missing"),
    ("missing n_layers", "d_model: 64\nlayers: {mixer: attn, channel: glu}\n", 1, "n_layers", "missing"),
    ("n_layers with a sequence", "d_model: 64\nn_layers: 2\nlayers: [attn+glu]\n", 2, "n_layers", "sets the depth"),
    ("wrong type d_model", "d_model: wide\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model", "positive integer"),
    ("unknown mixer", "d_model: 64\nn_layers: 2\nlayers: {mixer: mamba, channel: glu}\n", 3, "layers.mixer", "unknown mixer block 'mamba'"),
    ("channel used as mixer", "d_model: 64\nn_layers: 2\nlayers: {mixer: glu, channel: glu}\n", 3, "layers.mixer", "glu is a channel block"),
    ("missing channel", "d_model: 64\nn_layers: 2\nlayers: {mixer: attn}\n", 3, "layers.channel", "use 'none'"),
    ("unknown block param", OK + "blocks:\n  deltanet: {heads: 4, hedas: 2}\n", 7, "blocks.deltanet.hedas", "no parameter 'hedas'"),
    ("unknown block family in defaults", OK + "blocks:\n  mamba: {heads: 4}\n", 7, "blocks.mamba", "unknown block family"),
    ("unknown flat layer param", "d_model: 64\nn_layers: 2\nlayers:\n  mixer: attn\n  channel: glu\n  window: 4\n", 6, "layers.window", "no block here"),
    ("ambiguous flat param", "d_model: 64\nn_layers: 2\nlayers:\n  mixer: gau\n  channel: glu\n  expansion: 2\n", 6, "layers.expansion", "ambiguous"),
    ("empty choice", "d_model: {choice: []}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model.choice", "non-empty list"),
    ("duplicate choice", "d_model: {choice: [64, 64]}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model.choice[1]", "listed twice"),
    ("two domain kinds", "d_model: {choice: [64], int: [1, 2]}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model", "one of choice, int, float"),
    ("int range reversed", "d_model: {int: [128, 64]}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model.int", "above high"),
    ("log range from zero", OK + "blocks:\n  moe: {aux_loss: {float: [0, 1], log: true}}\n", 7, "blocks.moe.aux_loss.log", "low > 0"),
    ("float range on int param", OK + "blocks:\n  deltanet: {heads: {float: [1, 4]}}\n", 7, "blocks.deltanet.heads", "integer"),
    ("bad enum value", OK + "blocks:\n  glu: {kind: swishglu}\n", 7, "blocks.glu.kind", "expected one of swiglu"),
    ("param below its minimum", OK + "blocks:\n  deltanet: {heads: 0}\n", 7, "blocks.deltanet.heads", "at least 1"),
    ("position out of range", OK + "  place: [{mixer: attn, at: [4]}]\n", 6, "layers.place[0].at", "out of range for 4 layers"),
    ("position out of range for the smallest depth", "d_model: 64\nn_layers: {choice: [4, 8]}\nlayers:\n  mixer: attn\n  channel: glu\n  place: [{mixer: swa, at: [6]}]\n", 6, "layers.place[0].at", "out of range for 4 layers"),
    ("too many searched positions", OK + "  place: [{mixer: attn, at: {positions: 5}}]\n", 6, "layers.place[0].at.positions", "cannot choose 5 of 4"),
    ("every larger than depth", OK + "  place: [{mixer: attn, every: 8}]\n", 6, "layers.place[0].every", "selects no layer"),
    ("placement with two selectors", OK + "  place: [{mixer: attn, every: 2, at: [1]}]\n", 6, "layers.place[0]", "exactly one of every or at"),
    ("placement with nothing to set", OK + "  place: [{every: 2}]\n", 6, "layers.place[0]", "must set"),
    ("offset not below every", OK + "  place: [{mixer: attn, every: 2, offset: 2}]\n", 6, "layers.place[0].offset", "[0, every)"),
    ("per_layer at top level", "d_model: {choice: [64, 128], per_layer: true}\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model.per_layer", "only meaningful inside layers"),
    ("bad shorthand", "d_model: 64\nlayers: [deltanet]\n", 2, "layers[0]", "MIXER+CHANNEL"),
    ("repeat without layers", "d_model: 64\nlayers:\n  - repeat: 2\n", 3, "layers[0].layers", "missing"),
    ("duplicate key", "d_model: 64\nd_model: 128\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 2, "d_model", "appears twice"),
    ("heads do not divide d_model", "d_model: 100\nn_layers: 2\nlayers: {mixer: attn, channel: glu, heads: 8}\n", 3, "layers.heads", "8 must divide d_model 100"),
    ("default heads do not divide d_model", "d_model: 100\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n", 1, "d_model", "must divide d_model 100"),
    ("impossible constraint min above max", OK + "constraints:\n  params: {min: 10M, max: 1M}\n", 7, "constraints.params", "impossible"),
    ("constraint no architecture meets", OK + "constraints:\n  params: {max: 10K}\n", 7, "constraints.params", "no architecture of all 1"),
    ("unknown constraint", OK + "constraints:\n  latency: {max: 3}\n", 7, "constraints.latency", "unknown constraint"),
    ("bad quantity", OK + "constraints:\n  params: {max: lots}\n", 7, "constraints.params.max", "quantity"),
    ("vocab as a domain", OK + "vocab_size: {choice: [256, 512]}\n", 6, "vocab_size", "fixed by the tokenizer"),
    ("top_k above experts", "d_model: 64\nn_layers: 2\nlayers: {mixer: attn, channel: moe, experts: 2, top_k: 3}\n", 3, "layers.top_k", "exceeds experts"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_space_is_named_by_file_line_and_key(text, line, key, fragment):
    with pytest.raises(SpaceError) as info:
        space_from_yaml(text, "bad.yaml")
    e = info.value
    assert (e.file, e.line, e.key) == ("bad.yaml", line, key), str(e)
    assert fragment in e.message, str(e)
    assert str(e).startswith(f"bad.yaml:{line}: ") and "\n" not in str(e)


def test_there_are_at_least_twenty_malformed_cases():
    assert len(CASES) >= 20


def test_check_reports_one_line_and_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(OK + "blocks:\n  deltanet: {heads: 4, hedas: 2}\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:7: blocks.deltanet.hedas:" in err


def test_a_missing_file_is_one_line_too(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read the file" in capsys.readouterr().err


def test_the_console_script_prints_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("d_model: 64\nlayers: {mixer: attn, channel: glu}\n"))
    proc = subprocess.run([sys.executable, "-m", "archsearch.cli", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_bad_flags_are_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "x.yaml", "--samples", "-3"])
    assert info.value.code == 2 and "--samples" in capsys.readouterr().err


def test_yaml_is_loaded_with_the_safe_loader():
    with pytest.raises(SpaceError, match="invalid YAML"):
        space_from_yaml("d_model: !!python/object/apply:os.system ['true']\n", "evil.yaml")
