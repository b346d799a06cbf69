import os
import textwrap

import pytest
import torch

# Triton kernels run on the CPU through Triton's interpreter; it must be on before any kernel module is imported
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from archsearch import SearchSpace, space_from_yaml


@pytest.fixture
def space_of():
    """Parse a YAML text (dedented) as a search space named test.yaml."""

    def parse(text: str) -> SearchSpace:
        return space_from_yaml(textwrap.dedent(text), "test.yaml")

    return parse
