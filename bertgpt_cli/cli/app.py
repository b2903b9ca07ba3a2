"""The thin CLI layer: registers commands and turns failures into one line and an exit code.

Nothing here imports torch / transformers / datasets: every `--help` must stay instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer

try:  # typer >= 0.24 vendors click; its exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions

from .. import __version__
from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, BgcliError, StdoutClosed
from ..inference import classify as classify_command
from ..inference import fill_mask as fill_mask_command
from ..inference import generate as generate_command
from ..inference import ner as ner_command
from ..inference import qa as qa_command
from ..inference import tokenize as tokenize_command
from ..io.console import VERBOSITY, error
from ..models import export as export_command
from ..options import PlainHelpCommand, PlainHelpGroup, examples_epilog, typer_command
from ..training import finetune as finetune_command
from ..training import pretrain as pretrain_command
from .commands import data as data_command
from .commands import embed as embed_command
from .commands import env as env_command
from .commands import eval as eval_command
from .commands import models as models_command
from .commands import recipes as recipes_command
from .commands import search as search_command
from .commands import serve as serve_command
from .commands import tokenizer as tokenizer_command

app = typer.Typer(
    name="bgcli",
    cls=PlainHelpGroup,
    help="BERT- and GPT-style models from the shell: fill-mask, generate, classify, NER, fine-tune.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"bgcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """BERT- and GPT-style models from the shell: fill-mask, generate, classify, NER, fine-tune.

    Data goes to stdout (a table on a terminal, JSON Lines in a pipe); logs go to stderr.
    """


def _register(module) -> None:
    app.command(
        name=module.NAME, help=module.HELP, epilog=examples_epilog(module.EXAMPLES), cls=PlainHelpCommand
    )(typer_command(module.CONFIG, module.run))


# Order = the order of `bgcli --help` and docs/reference.md.
COMMAND_MODULES = (
    finetune_command,
    pretrain_command,
    fill_mask_command,
    generate_command,
    classify_command,
    ner_command,
    qa_command,
    embed_command,
    search_command,
    eval_command,
    serve_command,
    export_command,
    env_command,
    models_command,
    tokenize_command,
)
for _module in COMMAND_MODULES:
    _register(_module)
app.add_typer(recipes_command.APP, name=recipes_command.NAME)
app.add_typer(data_command.APP, name=data_command.NAME)
app.add_typer(tokenizer_command.APP, name=tokenizer_command.NAME)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the app and map every way it can end to an exit status."""
    try:
        result = app(args=list(argv) if argv is not None else None, prog_name="bgcli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except BgcliError as exc:
        if VERBOSITY.debug:
            raise
        error(str(exc))
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except click_exceptions.ClickException as exc:
        error(_one_line_click_error(exc))
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BrokenPipeError, StdoutClosed):
        return _exit_quietly_on_broken_pipe()


# Commands that only read a model and write records: they end without the interpreter's teardown.
QUICK_EXIT_COMMANDS = {
    "classify",
    "fill-mask",
    "generate",
    "ner",
    "qa",
    "embed",
    "search",
    "tokenize",
    "eval",
}


def entry() -> None:
    """The `bgcli` program (and `python -m bertgpt_cli`): main(), then exit.

    After an inference command the interpreter's own teardown (finalising the thousands of
    modules torch and transformers import) takes ~1.2 s of a ~5 s one-text call and does
    nothing the user needs, so those commands end with os._exit once stdout and stderr are
    flushed and the atexit handlers (temp-folder cleanup, logging) have run. Training and
    serving keep the normal exit (worker threads, process groups)."""
    code = main()
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in QUICK_EXIT_COMMANDS:
        _exit_without_teardown(code)
    sys.exit(code)


def _exit_without_teardown(code: int) -> None:
    import atexit

    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):  # the reader went away: as main() does for it
        code = EXIT_BROKEN_PIPE if code == 0 else code
    try:
        sys.stderr.flush()
    except OSError:
        pass
    atexit._run_exitfuncs()  # what a normal exit runs before the teardown we skip
    os._exit(code)


def _one_line_click_error(exc: Exception) -> str:
    message = exc.format_message().replace("\n", " ").replace("Value error, ", "")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click_exceptions.UsageError) and ctx is not None:
        return f"{message} (see '{ctx.command_path} --help')"
    return message


def _exit_quietly_on_broken_pipe() -> int:
    """The reader went away (`| head -1`): stop without a traceback.

    Point stdout at /dev/null so the interpreter's final flush cannot raise again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE
