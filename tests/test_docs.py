"""The documentation's generated parts match the code they are generated from."""

from pathlib import Path

from archsearch.blocks import param_table
from archsearch.metrics import metric_table

END = "<!-- end of the generated table -->\n"


def generated(doc: str, function: str) -> str:
    """The part of `doc` between the markers that name `function` as its generator."""
    begin = f"<!-- the table below is generated from the registry: {function}(); tests/test_docs.py checks it -->\n"
    text = Path(doc).read_text()
    assert begin in text and END in text
    return text.split(begin, 1)[1].split(END, 1)[0]


def test_the_block_parameter_table_in_the_docs_is_the_registrys():
    assert generated("docs/search-spaces.md", "archsearch.blocks.param_table") == param_table(), \
        "regenerate the table: python -c 'from archsearch.blocks import param_table; print(param_table(), end=\"\")'"


def test_the_metric_table_in_the_docs_is_the_registrys():
    assert generated("docs/studies.md", "archsearch.metrics.metric_table") == metric_table(), \
        "regenerate the table: python -c 'from archsearch.metrics import metric_table; print(metric_table(), end=\"\")'"


def test_the_table_lists_every_parameter_of_every_family_with_its_doc():
    from archsearch.blocks import BUILTIN, REGISTRY

    table = param_table()
    for fam in (REGISTRY[name] for name in BUILTIN):
        assert f"`{fam.name}` ({fam.letter}) | {fam.role}" in table
        for name, p in fam.params.items():
            assert f"| `{name}` |" in table and p.doc in table
