"""The documentation's generated parts match the code they are generated from."""

from pathlib import Path

from archsearch.blocks import param_table

BEGIN = "<!-- the table below is generated from the registry: archsearch.blocks.param_table(); tests/test_docs.py checks it -->\n"
END = "<!-- end of the generated table -->\n"


def test_the_block_parameter_table_in_the_docs_is_the_registrys():
    text = Path("docs/search-spaces.md").read_text()
    assert BEGIN in text and END in text
    written = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert written == param_table(), "regenerate the table: python -c 'from archsearch.blocks import param_table; print(param_table(), end=\"\")'"


def test_the_table_lists_every_parameter_of_every_family_with_its_doc():
    from archsearch.blocks import REGISTRY

    table = param_table()
    for fam in REGISTRY.values():
        assert f"`{fam.name}` ({fam.letter}) | {fam.role}" in table
        for name, p in fam.params.items():
            assert f"| `{name}` |" in table and p.doc in table
