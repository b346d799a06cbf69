"""`archsearch check` on every example space."""

import glob

import pytest

from archsearch.cli import main

SPACES = sorted(glob.glob("search_spaces/*.yaml"))


def test_there_is_an_example_space_per_seed_paper_and_an_open_one():
    names = {p.rsplit("/", 1)[-1] for p in SPACES}
    assert {"deltanet_swa.yaml", "deltanet_2attn.yaml", "h3_2attn.yaml", "hyena.yaml", "gau.yaml", "moe_switch.yaml", "brt.yaml", "open.yaml"} <= names


@pytest.mark.parametrize("path", SPACES)
def test_check_validates_sizes_and_samples_every_example(path, capsys):
    assert main(["check", path, "--samples", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "size:" in out and "searched parameters" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit() and " d=" in line]
    assert len(rows) == 4


def test_check_output_is_deterministic_for_a_seed(capsys):
    main(["check", "search_spaces/open.yaml", "--samples", "5", "--seed", "11"])
    first = capsys.readouterr().out
    main(["check", "search_spaces/open.yaml", "--samples", "5", "--seed", "11"])
    assert capsys.readouterr().out == first
