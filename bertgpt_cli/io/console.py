"""stderr console shared by every command: logs, warnings and progress never touch stdout."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from rich.console import Console


@dataclass
class Verbosity:
    quiet: bool = False
    debug: bool = False


VERBOSITY = Verbosity()


def _no_color() -> bool:
    # https://no-color.org: any non-empty value disables colour.
    return bool(os.environ.get("NO_COLOR"))


def make_console(stderr: bool) -> Console:
    # NO_COLOR: no ANSI styling at all (bold included), so logs stay plain text.
    no_color = _no_color()
    return Console(
        stderr=stderr,
        no_color=no_color,
        color_system=None if no_color else "auto",
        highlight=False,
        soft_wrap=stderr,
    )


err_console = make_console(stderr=True)


def set_verbosity(quiet: bool = False, debug: bool = False) -> None:
    VERBOSITY.quiet = quiet and not debug
    VERBOSITY.debug = debug
    _quiet_hf_libraries()


def _quiet_hf_libraries() -> None:
    """HF libraries log and draw tqdm bars on their own; keep them to --debug.

    Environment variables are read when the libraries are imported, which happens
    later inside the command, so setting them here is enough and costs nothing.
    """
    if VERBOSITY.debug:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def info(message: str) -> None:
    """Progress and facts the user may want; silenced by --quiet."""
    if not VERBOSITY.quiet:
        err_console.print(message, markup=False, style="dim")


def warn(message: str) -> None:
    if not VERBOSITY.quiet:
        err_console.print(f"warning: {message}", markup=False, style="yellow")


def debug(message: str) -> None:
    if VERBOSITY.debug:
        err_console.print(f"debug: {message}", markup=False, style="dim")


def error(message: str) -> None:
    """Errors are printed even with --quiet."""
    err_console.print(f"error: {message}", markup=False, style="bold red")


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
