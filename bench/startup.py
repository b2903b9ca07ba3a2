"""Start-up: `bgcli --help` vs `transformers --help` (what a shell user waits for)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .runner import Result, compare_times

BIN = Path(sys.executable).parent


def run_help(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run() -> list[Result]:
    return [
        compare_times(
            "startup: --help",
            lambda: run_help([str(BIN / "bgcli"), "--help"]),
            lambda: run_help([str(BIN / "transformers"), "--help"]),
            baseline_name="transformers --help",
            repeats=7,
        ),
        compare_times(
            "startup: subcommand --help",
            lambda: run_help([str(BIN / "bgcli"), "tokenize", "--help"]),
            lambda: run_help([str(BIN / "transformers"), "chat", "--help"]),
            baseline_name="transformers chat --help",
            repeats=7,
        ),
    ]
