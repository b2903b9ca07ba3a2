"""The per-task inference engines used by the CLI, the Python API, the server and `eval`.

Each command's module (classify, fill_mask, generate, ner, qa, embed, search, tokenize) holds
its typed CONFIG, `load(config)` (the heavy part a server keeps warm), `processor(loaded,
config)` (records -> results) and `process(config, records, writer)` (the whole stream).
Nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def engine(command: str) -> ModuleType:
    """The inference module behind a command name (`classify`, `fill-mask`, ...)."""
    return importlib.import_module(f"{__name__}.{command.replace('-', '_')}")
