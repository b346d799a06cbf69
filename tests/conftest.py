import textwrap

import pytest

from archsearch import SearchSpace


@pytest.fixture
def space_of():
    """Parse a YAML text (dedented) as a search space named test.yaml."""

    def parse(text: str) -> SearchSpace:
        return SearchSpace.from_yaml(textwrap.dedent(text), "test.yaml")

    return parse
