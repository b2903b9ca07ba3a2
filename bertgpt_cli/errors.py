"""The one exception type users can cause; the CLI turns it into one line and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cat` reports when `head` closes the pipe


class BgcliError(Exception):
    """A failure the user can fix; printed as `error: <message>` without a traceback.

    Messages name the problem and the way out, in one line.
    """

    exit_code = EXIT_FAILURE


class UsageError(BgcliError):
    """Bad flag value, missing file, unknown column: the command line must change."""

    exit_code = EXIT_USAGE


class ReportedFailure(BgcliError):
    """A failure already reported where it happened (the worker processes of a relaunched run
    printed their own errors): exit with their status and print nothing more."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """The first line of a library's error, for one-line messages (its type if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`); not an error, nothing to print."""
