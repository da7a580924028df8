"""`python -m hyperpeft.cli ...`, as `accelerate launch -m hyperpeft.cli train ...` runs it."""

import sys

from . import main

sys.exit(main())
