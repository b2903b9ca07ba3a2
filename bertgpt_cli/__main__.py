"""`python -m bertgpt_cli` (also what `accelerate launch -m bertgpt_cli` runs)."""

import sys

from .cli import main

sys.exit(main())
