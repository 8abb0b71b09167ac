"""`python -m shears_nncf ...` is the `shears` command."""

import sys

from .cli import main

sys.exit(main())
