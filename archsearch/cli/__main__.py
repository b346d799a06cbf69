"""`python -m archsearch.cli`: the same as the `archsearch` command."""

import sys

from . import main

sys.exit(main())
