"""`archsearch train`'s proxy flags are made from ProxySettings' fields: one per setting, with its default."""

import dataclasses

from archsearch.cli import parser
from archsearch.cli.train import settings_from
from archsearch.proxy import DataSpec, ProxySettings


def test_no_flags_give_the_default_settings():
    assert settings_from(parser().parse_args(["train", "arch.yaml"])) == ProxySettings()


def test_every_scalar_setting_has_a_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data paths must exist: they are checked with the settings
    (tmp_path / "corpus").mkdir()
    (tmp_path / "tok.json").write_text("{}")
    args = ["train", "arch.yaml", "--tokens", "4096", "--seq-len", "32", "--lr", "0.01", "--seconds", "5", "--compile",
            "--inference", "--device", "cpu", "--warmup-tokens", "4096", "--data", "corpus/", "--tokenizer", "tok.json",
            "--val-fraction", "0.2"]
    settings = settings_from(parser().parse_args(args))
    assert settings == dataclasses.replace(
        ProxySettings(), tokens=4096, seq_len=32, lr=0.01, seconds=5.0, compile=True, inference=True, device="cpu",
        warmup_tokens=4096, data=DataSpec(source="corpus/", tokenizer="tok.json", val_fraction=0.2))
    help_text = parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(ProxySettings):
        if f.name not in ("data", "synthetic"):
            assert "--" + f.name.replace("_", "-") in help_text


ARCH = "d_model: 32\nvocab_size: 256\nlayers: [{mixer: {block: attn, heads: 2}, channel: glu}]\n"


def _token_folder(path, tokens=5000, meta=None):
    import numpy as np

    path.mkdir()
    for split in ("train", "val"):
        np.arange(tokens, dtype=np.uint16).tofile(path / f"{split}.bin")
    if meta is not None:
        (path / "meta.json").write_text(meta)
    return path


def test_bad_train_input_is_one_line_before_any_training(tmp_path, capsys):
    import pytest

    from archsearch.cli import main

    arch = tmp_path / "arch.yaml"
    arch.write_text(ARCH)
    short = _token_folder(tmp_path / "short")
    bad_meta = _token_folder(tmp_path / "meta", meta="{bad")
    cases = [
        (["--lr", "nan"], "--lr: expected a number above 0"),
        (["--decay", "2"], "--decay: expected a number from 0 to 1"),
        (["--data", str(tmp_path / "missing")], "--data: "),
        (["--json", str(tmp_path)], "is a directory"),
        (["--data", str(short), "--seq-len", "8000"], "the train split has 5000 tokens; expected at least 8002"),
        (["--data", str(bad_meta)], "meta.json: cannot read it"),
        (["--task", "selective_copy", "--seq-len", "20"], "--task selective_copy --seq-len 20: num_tokens: 16 tokens need seq_len >= 33"),
        (["--task", "mqar", "--seq-len", "2"], "--task mqar --seq-len 2: num_kv_pairs: expected a positive integer"),
    ]
    for flags, fragment in cases:
        assert main(["train", str(arch), "--tokens", "64", *flags]) == 2, flags
        captured = capsys.readouterr()
        assert "training" not in captured.out  # refused before the progress bar
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (flags, lines)
    with pytest.raises(SystemExit):
        main(["train", str(arch), "--lr", "fast"])
