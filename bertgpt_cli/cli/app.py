"""The thin CLI layer: registers commands and turns failures into one line and an exit code.

Nothing here imports torch / transformers / datasets: every `--help` must stay instant.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import typer
import typer.core
import typer.main

try:  # typer >= 0.24 vendors click; its exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions

from .. import __version__
from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, BgcliError, ReportedFailure, StdoutClosed
from ..io.console import VERBOSITY, error
from .typer_options import PlainHelpCommand, PlainHelpGroup, examples_epilog, typer_command


@dataclass(frozen=True)
class Command:
    """A command as `bgcli --help` lists it, without importing its module (which may pull in
    half the package): the module under cli/commands/, its one-line help (a test keeps it equal
    to the module's HELP), and whether it ends without the interpreter's teardown (`entry`)."""

    module: str
    help: str
    quick_exit: bool = False

    @property
    def name(self) -> str:
        return self.module.replace("_", "-")


# Order = the order of `bgcli --help` and docs/reference.md.
COMMANDS: tuple[Command, ...] = (
    Command(
        "finetune",
        "Fine-tune with the HF Trainer: sequence classification, named entities (ner), question "
        "answering (qa), masked-LM (mlm) or causal-LM (clm); recipes in recipes/.",
    ),
    Command(
        "sweep",
        "Search hyper-parameters (optuna): trials as finetune run dirs, a study database, pruning, resume.",
    ),
    Command(
        "pretrain",
        "Pre-train from scratch: BERT with masked LM + next-sentence prediction, or GPT-2 with "
        "next-token prediction, on your corpus (tokenizer trained on the fly or given).",
    ),
    Command(
        "fill_mask",
        "Predict the [MASK] tokens of each text (BERT-style masked LMs); same answers as transformers.",
        quick_exit=True,
    ),
    Command(
        "generate",
        "Continue each prompt with a causal LM (GPT-2, SmolLM2, ...): greedy by default, --sample to sample.",
        quick_exit=True,
    ),
    Command(
        "classify",
        "Label each text with a fine-tuned classifier (a `bgcli finetune` run dir or a Hub id).",
        quick_exit=True,
    ),
    Command(
        "ner",
        "Find named entities (people, places, ...) with character offsets; whole documents, any length.",
        quick_exit=True,
    ),
    Command(
        "qa",
        "Answer questions from a context (extractive QA): answer span, score and character offsets.",
        quick_exit=True,
    ),
    Command(
        "embed",
        "Embed texts: one vector per text (cls/mean/max pooling) or per token, JSONL or a "
        ".npy/.parquet file.",
        quick_exit=True,
    ),
    Command(
        "search",
        "Semantic search: the corpus texts closest to each query (cosine of embeddings), with scores; "
        "--rerank re-scores the top hits with a cross-encoder.",
        quick_exit=True,
    ),
    Command(
        "eval",
        "Evaluate saved models on labelled data: finetune's test metrics and report; --compare two.",
        quick_exit=True,
    ),
    Command(
        "serve",
        "Serve models over HTTP: OpenAI-compatible completions/chat/embeddings and the CLI's task endpoints.",
    ),
    Command(
        "export", "Export a model to ONNX (optionally int8) for onnxruntime; classify/fill-mask/embed run it."
    ),
    Command("env", "Show versions, devices, caches and offline state (paste it into bug reports)."),
    Command(
        "models", "List built-in model aliases (offline) and common Hub ids, with size and install state."
    ),
    Command(
        "tokenize",
        "Split texts into a model's tokens: ids, counts, and whether they fit its length limit.",
        quick_exit=True,
    ),
    Command("recipes", "List, show and copy the ready-made fine-tuning recipes."),
    Command("data", "Check a dataset before training: duplicates, split overlap, labels, lengths."),
    Command("tokenizer", "Train a tokenizer from scratch: WordPiece (BERT) or byte-level BPE (GPT-2)."),
)
BY_NAME = {command.name: command for command in COMMANDS}


def command_module(command: Command) -> ModuleType:
    return importlib.import_module(f"{__package__}.commands.{command.module}")


def command_modules() -> list[ModuleType]:
    """Every command's module (imports them all: for docs/reference.md and tests, not `--help`)."""
    return [command_module(command) for command in COMMANDS]


def build_command(command: Command):
    """The Typer command (or `bgcli NAME SUBCOMMAND` group) of a command's module."""
    module = command_module(command)
    if hasattr(module, "APP"):  # data, recipes, tokenizer: groups of subcommands
        built = typer.main.get_group(module.APP)  # a group even with one subcommand
    else:
        single = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)
        single.command(
            name=command.name, help=module.HELP, epilog=examples_epilog(module.EXAMPLES), cls=PlainHelpCommand
        )(typer_command(module.CONFIG, module.run))
        built = typer.main.get_command(single)
    built.name = command.name
    return built


LISTING = "bgcli.listing"  # set in ctx.meta while `bgcli --help` lists the commands


class LazyGroup(PlainHelpGroup):
    """Imports a command's module only when that command runs (or shows its own --help):
    `bgcli --help` lists the commands from the static table above."""

    def list_commands(self, ctx) -> list[str]:
        return list(BY_NAME)

    def get_command(self, ctx, cmd_name: str):
        command = BY_NAME.get(cmd_name)
        if command is None:
            return None
        if ctx.meta.get(LISTING):
            return typer.core.TyperCommand(name=command.name, help=command.help)
        return build_command(command)

    def format_help(self, ctx, formatter) -> None:
        ctx.meta[LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(LISTING, None)


app = typer.Typer(
    name="bgcli",
    cls=LazyGroup,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the app and map every way it can end to an exit status."""
    try:
        result = app(args=list(argv) if argv is not None else None, prog_name="bgcli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except BgcliError as exc:
        if VERBOSITY.debug and not isinstance(exc, ReportedFailure):
            raise
        if not isinstance(exc, ReportedFailure):
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


def entry() -> None:
    """The `bgcli` program (and `python -m bertgpt_cli`): main(), then exit.

    After an inference command the interpreter's own teardown (finalising the thousands of
    modules torch and transformers import) takes ~1.2 s of a ~5 s one-text call and does
    nothing the user needs, so those commands end with os._exit once stdout and stderr are
    flushed and the atexit handlers (temp-folder cleanup, logging) have run. Training and
    serving keep the normal exit (worker threads, process groups)."""
    code = main()
    name = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    command = BY_NAME.get(name or "")
    if command is not None and command.quick_exit:
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
