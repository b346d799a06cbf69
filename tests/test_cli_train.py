"""`archsearch train`'s proxy flags are made from ProxySettings' fields: one per setting, with its default."""

import dataclasses

from archsearch.cli import parser
from archsearch.cli.train import settings_from
from archsearch.proxy import DataSpec, ProxySettings


def test_no_flags_give_the_default_settings():
    assert settings_from(parser().parse_args(["train", "arch.yaml"])) == ProxySettings()


def test_every_scalar_setting_has_a_flag():
    args = ["train", "arch.yaml", "--tokens", "4096", "--seq-len", "32", "--lr", "0.01", "--seconds", "5", "--compile",
            "--inference", "--device", "cpu", "--warmup", "0.1", "--data", "corpus/", "--tokenizer", "tok.json",
            "--val-fraction", "0.2"]
    settings = settings_from(parser().parse_args(args))
    assert settings == dataclasses.replace(
        ProxySettings(), tokens=4096, seq_len=32, lr=0.01, seconds=5.0, compile=True, inference=True, device="cpu",
        warmup=0.1, data=DataSpec(source="corpus/", tokenizer="tok.json", val_fraction=0.2))
    help_text = parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(ProxySettings):
        if f.name not in ("data", "synthetic"):
            assert "--" + f.name.replace("_", "-") in help_text
