"""The config reader stays within its limits: every hostile file is one line FILE:LINE: [KEY: ]message, fast."""

import os
import re
import time

import pytest
import yaml

from archsearch import _yaml
from archsearch.architecture import Architecture
from archsearch.cli import main
from archsearch.errors import ConfigError, SpaceError
from archsearch.study import Study

SMALL = _yaml.Limits(max_bytes=4096, max_depth=8, max_nodes=200, max_int=10**6)


@pytest.fixture(params=["libyaml", "python"] if yaml.__with_libyaml__ else ["python"], autouse=True)
def parser(request, monkeypatch):
    """Every case holds with libyaml's events and with PyYAML's pure-Python parser (a machine may lack libyaml)."""
    monkeypatch.setattr(_yaml, "_Loader", yaml.CSafeLoader if request.param == "libyaml" else yaml.SafeLoader)
    return request.param


def refused(text: str, limits: _yaml.Limits = _yaml.LIMITS) -> SpaceError:
    start = time.perf_counter()
    with pytest.raises(SpaceError) as info:
        _yaml.load(text, "f.yaml", limits)
    assert time.perf_counter() - start < 2, "a refused file must be refused before the work it asks for"
    message = str(info.value)
    assert "\n" not in message and re.match(r"^f\.yaml:\d+: \S", message), message
    return info.value


def where(e: SpaceError) -> tuple[int, str]:
    return e.line, e.key


# --- size, depth, nodes, aliases ------------------------------------------------------------------------------------


def test_text_over_the_size_limit_is_refused_at_the_line_that_crosses_it():
    text = "".join(f"k{i}: {i}\n" for i in range(1000))  # 8 bytes a line up to k999
    e = refused(text, SMALL)
    assert "over the 4 KiB limit" in e.message
    assert e.line == text.encode()[:4096].count(b"\n") + 1


def test_a_file_over_the_size_limit_is_refused_before_it_is_read_whole(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.write(b"a: 1\n" * (3 << 20))  # 15 MiB
    start = time.perf_counter()
    with pytest.raises(SpaceError) as info:
        _yaml.load_file(str(path))
    assert time.perf_counter() - start < 1
    assert str(info.value).startswith(f"{path}:209716: the file is 15,728,640 bytes, over the 1 MiB limit")


def test_nesting_at_the_limit_is_read_and_one_level_more_is_refused():
    assert _yaml.load("a: " + "[" * 7 + "]" * 7, "f.yaml", SMALL).plain() == {"a": [[[[[[[]]]]]]]}
    e = refused("a: " + "[" * 8 + "]" * 8, SMALL)
    assert "more than 8 levels" in e.message and e.key.startswith("a[0]")


def test_deep_nesting_with_the_default_limit_is_an_error_not_a_recursion_error():
    e = refused("a:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 400)))
    assert "more than 64 levels" in e.message
    refused("[" * 200_000)  # flow style, an unterminated 200,000 levels


def test_an_alias_that_would_nest_too_deep_is_refused_at_the_alias():
    text = "a: &x [[[[[1]]]]]\nb: [[[*x]]]\n"
    e = refused(text, SMALL)
    assert where(e) == (2, "b[0][0][0]") and "*x" in e.message


def test_a_billion_laughs_file_fails_at_the_alias_that_crosses_the_node_limit():
    text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    e = refused(text)
    assert e.line == 5 and e.key.startswith("l4[") and "100,000 values" in e.message


def test_a_flat_list_over_the_node_limit_is_refused():
    e = refused("a: [" + ", ".join(["1"] * 300) + "]\n", SMALL)
    assert e.key.startswith("a[") and "200 values" in e.message


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("a: &x [1, *x]\n", 1, "a[1]", "recursive alias"),
        ("a: &x {b: {c: *x}}\n", 1, "a.b.c", "recursive alias"),
        ("a: *nowhere\n", 1, "a", "no anchor defined above"),
        ("a: &x 1\nb: &x 2\n", 2, "b", "defined twice (first on line 1)"),
    ],
    ids=["in a list", "in a mapping", "undefined", "duplicate anchor"],
)
def test_bad_aliases_are_named(text, line, key, fragment):
    e = refused(text)
    assert where(e) == (line, key) and fragment in e.message


def test_aliases_and_merge_keys_that_stay_small_still_work():
    root = _yaml.load("base: &b {heads: 2, window: 8}\nlayer:\n  <<: *b\n  window: 16\nlist: [*b, *b]\n", "f.yaml")
    assert root.plain()["layer"] == {"heads": 2, "window": 16}
    assert root.value["layer"].line == 2 and root.value["list"].value[1].plain() == {"heads": 2, "window": 8}


# --- text: control characters and encodings --------------------------------------------------------------------------


@pytest.mark.parametrize("ch", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\r", "\u2028", "\u202e", "\ufeff", "\ufffe"])
@pytest.mark.parametrize("place", ["comment", "value", "key"])
def test_a_control_character_anywhere_is_one_line_with_its_line_number(ch, place):
    lines = ["name: test", "d_model: 64", "n_layers: 2 # depth", "layers: {mixer: attn, channel: glu}"]
    if place == "comment":
        lines[2] = f"n_layers: 2 # de{ch}pth"
    elif place == "value":
        lines[2] = f"n_layers: 2{ch}3"
    else:
        lines[2] = f"n_la{ch}yers: 2"
    e = refused("\n".join(lines) + "\n")
    assert e.line == 3 and f"U+{ord(ch):04X}" in e.message


@pytest.mark.parametrize("escape", [r"\x00", r"\e", r"\x1b", r"\r", r"\u202e", r"\x85"])
def test_a_control_character_written_as_an_escape_is_refused_with_its_key(escape):
    e = refused(f'name: test\ndescription: "a{escape}b"\n')
    assert where(e) == (2, "description") and "control or invisible character" in e.message


def test_tabs_line_feeds_crlf_and_a_byte_order_mark_are_fine():
    root = _yaml.load('\ufeffname: "a\\tb"\r\ndescription: |\r\n  two\r\n  lines\r\n', "f.yaml")
    assert root.plain() == {"name": "a\tb", "description": "two\nlines\n"}


def test_a_key_with_a_line_break_is_refused():
    e = refused('"d_\\nmodel": 64\n')
    assert e.line == 1 and "plain name" in e.message


def test_a_key_with_an_escape_character_is_named_printably():
    e = refused('blocks:\n  "at\\x1btn": {heads: 2}\n')
    assert where(e) == (2, "blocks.at\\x1btn")


def test_a_key_longer_than_the_limit_is_refused_and_shortened_in_the_message():
    e = refused(f"? {'k' * 300}\n: 1\n")
    assert "at most 256 characters" in e.message and e.key == "k" * 37 + "..."


def test_a_file_that_is_not_utf8_is_one_line_at_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: test\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SpaceError) as info:
        _yaml.load_file(str(path))
    assert str(info.value) == f"{path}:2: not UTF-8: byte 0xe9 at column 17 cannot be decoded; expected a UTF-8 text file"


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "utf16.yaml"
    path.write_text("name: test\n", encoding="utf-16")
    with pytest.raises(SpaceError, match=r":1: the file is UTF-16; expected UTF-8"):
        _yaml.load_file(str(path))


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpaceError, match="not a regular file"):
        _yaml.load_file(str(fifo))
    with pytest.raises(SpaceError, match="is a directory"):
        _yaml.load_file(str(tmp_path))


# --- numbers and tags ----------------------------------------------------------------------------------------------


def test_integers_up_to_the_limit_pass_and_beyond_it_are_refused_with_their_key():
    assert _yaml.load(f"a: {2**53}\nb: -{2**53}\n", "f.yaml").plain() == {"a": 2**53, "b": -(2**53)}
    e = refused(f"proxy:\n  tokens: {2**53 + 1}\n")
    assert where(e) == (2, "proxy.tokens") and "out of range" in e.message
    assert where(refused("a: [1, -1" + "0" * 30 + "]\n")) == (1, "a[1]")
    assert where(refused("a: 0x" + "f" * 20 + "\n")) == (1, "a")


def test_an_integer_of_ten_thousand_digits_is_refused_at_once():
    e = refused("d_model: " + "9" * 10_000 + "\n")
    assert where(e) == (1, "d_model") and len(str(e)) < 200
    e = refused("lr: 1" + "0" * 10_000 + ".0\n")
    assert where(e) == (1, "lr") and "not a finite number" in e.message and len(str(e)) < 200


@pytest.mark.parametrize("text", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1e999", "-1.0e400", "!!float nan", "1e+999"])
def test_non_finite_numbers_are_refused_with_their_key(text):
    e = refused(f"constraints:\n  params: {{max: {text}}}\n")
    assert where(e) == (2, "constraints.params.max") and "not a finite number" in e.message


def test_scientific_notation_is_still_read_as_a_number():
    assert _yaml.load("lr: 3e-3\nmax: 1E6\nquoted: '1e6'\n", "f.yaml").plain() == {"lr": 0.003, "max": 1e6, "quoted": "1e6"}


@pytest.mark.parametrize(
    "value", ["!!binary aGk=", "!!set {a, b}", "!!omap [a: 1]", "!!python/object:os.system x", "!foo 1", "!!timestamp 2001-01-01"]
)
def test_tags_other_than_plain_yaml_are_refused(value):
    e = refused(f"name: test\nspace: {value}\n")
    assert where(e) == (2, "space") and "not allowed (plain YAML only)" in e.message


def test_a_tag_with_an_escaped_control_character_is_shown_printably():
    e = refused("a: !<tag:x%07y> 1\n")
    assert "\x07" not in str(e) and "not allowed" in e.message


def test_a_value_that_does_not_fit_its_tag_is_an_error_not_a_value_error():
    assert "'abc' is not a valid !!int" in refused("a: !!int abc\n").message


def test_a_date_stays_text_and_an_impossible_date_is_no_traceback():
    assert _yaml.load("a: 2001-13-45\nb: 2024-01-01\n", "f.yaml").plain() == {"a": "2001-13-45", "b": "2024-01-01"}


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: [1, 2\n", 2), ("a: 1\n---\nb: 2\n", 2), ("a: {b: 1\n", 2), ("a:\n\tb: 1\n", 2), ("# only a comment\n", 1), ("", 1)],
    ids=["unclosed list", "two documents", "unclosed mapping", "tab indent", "comment only", "empty"],
)
def test_syntax_errors_are_one_line(text, line):
    assert refused(text).line == line


# --- through the loaders that use the reader ---------------------------------------------------------------------------


def test_check_prints_one_line_and_exits_2_on_a_control_character(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text("d_model: 64  # \x07\nn_layers: 2\nlayers: {mixer: attn, channel: glu}\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:1: control or invisible character U+0007" in err


def test_a_study_or_architecture_file_that_is_not_utf8_is_one_line(tmp_path):
    for load in (Study.load, Architecture.load):
        path = tmp_path / "bad.yaml"
        path.write_bytes(b"name: x\n\xff\xfe: 1\n")
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:2: not UTF-8"):
            load(str(path))
