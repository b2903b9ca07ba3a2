"""`python -m bertgpt_cli` (also what `accelerate launch -m bertgpt_cli` runs)."""

from .cli.app import entry

entry()
