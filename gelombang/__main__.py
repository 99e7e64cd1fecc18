"""`python -m gelombang` is the `gelombang` command."""

import sys

from gelombang.cli import main

sys.exit(main())
