"""Typed command configs are the single source of truth for flags, help, defaults and recipe keys.

A command declares one dataclass; `typer_command` turns its fields into Typer
parameters, so adding an option means adding one field.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from .console import set_verbosity
from .errors import StdoutClosed

Config = TypeVar("Config")

OUTPUT_FORMATS = ("table", "jsonl", "json", "tsv", "text")
INPUT_FORMATS = ("auto", "text", "jsonl")


def option(
    default: Any,
    help: str,
    *,
    short: str | None = None,
    choices: typing.Sequence[str] | None = None,
    panel: str | None = None,
    metavar: str | None = None,
    flag: str | None = None,
) -> Any:
    """A command-line option; its field name with `_` -> `-` is the flag and the recipe key."""
    meta = {
        "kind": "option",
        "help": help,
        "short": short,
        "choices": choices,
        "panel": panel,
        "metavar": metavar,
        "flag": flag,
    }
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def argument(help: str, *, metavar: str | None = None) -> Any:
    """Positional texts (zero or more)."""
    meta = {"kind": "argument", "help": help, "metavar": metavar}
    return dataclasses.field(default_factory=list, metadata=meta)


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _typer_parameter(field: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    meta = field.metadata
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if meta["kind"] == "argument":
        info = typer.Argument(help=meta["help"], metavar=meta.get("metavar"), show_default=False)
        default = None
    else:
        decls = [flag_name(field)]
        if annotation is bool and default is True:
            decls = [f"{decls[0]}/--no-{decls[0][2:]}"]
        if meta.get("short"):
            decls.append(meta["short"])
        if meta.get("choices"):
            # Typer knows Enum choices (not Literal): present the choices as a str Enum.
            annotation = _choice_enum(field.name, meta["choices"])
            if default is not None:
                default = annotation(default)
        info = typer.Option(
            *decls,
            help=meta["help"],
            rich_help_panel=meta.get("panel"),
            metavar=meta.get("metavar"),
        )
        if isinstance(default, list):
            default = None  # Typer wants None for "not given" on multi-value options
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, info],
    )


def _choice_enum(name: str, choices: typing.Sequence[str]) -> type[enum.Enum]:
    return enum.Enum(name.title().replace("_", ""), {c: c for c in choices}, type=str)


def config_fields(config_cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_cls) if "kind" in f.metadata]


def typer_command(config_cls: type[Config], run: Callable[[Config], Any]) -> Callable[..., Any]:
    """Build a Typer callback whose parameters are the fields of `config_cls`.

    A config class may define `from_command_line(values, explicit)` to merge other sources
    (a recipe): `explicit` names the fields the user typed, which win over everything.
    """
    hints = typing.get_type_hints(config_cls)
    fields = config_fields(config_cls)
    parameters = [_typer_parameter(f, hints[f.name]) for f in fields]
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    @functools.wraps(run)
    def command(ctx: typer.Context, **kwargs: Any) -> Any:
        for f in fields:
            value = kwargs.get(f.name)
            if value is None and f.default_factory is not dataclasses.MISSING:
                kwargs[f.name] = f.default_factory()
            elif isinstance(value, enum.Enum):
                kwargs[f.name] = value.value
        explicit = {f.name for f in fields if _given_by_user(ctx, f.name)}
        build = getattr(config_cls, "from_command_line", None)
        config = build(kwargs, explicit) if build else config_cls(**kwargs)
        if isinstance(config, OutputOptions):
            set_verbosity(quiet=config.quiet, debug=config.debug)
        try:
            return run(config)
        except BrokenPipeError as exc:
            # Typer would turn this into a plain exit 1; let main() report it as SIGPIPE does.
            raise StdoutClosed() from exc

    command.__signature__ = inspect.Signature([context, *parameters])  # type: ignore[attr-defined]
    return command


def _given_by_user(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


# Option groups shared by commands. Commands compose them into their own config.


@dataclasses.dataclass
class OutputOptions:
    format: str | None = option(
        None,
        "Output format. Default: a table on a terminal, JSON Lines when piped.",
        short="-f",
        choices=OUTPUT_FORMATS,
        panel="Output",
    )
    quiet: bool = option(False, "Only print errors on stderr.", short="-q", panel="Output")
    debug: bool = option(False, "Show debug logs and full tracebacks.", panel="Output")


@dataclasses.dataclass
class InputOptions:
    texts: list[str] = argument("Texts to process. Omit them to read --input or stdin.", metavar="TEXT")
    input: str | None = option(
        None,
        "Read texts from FILE, one per line (or JSON Lines); `-` is stdin.",
        short="-i",
        metavar="FILE",
        panel="Input",
    )
    input_format: str = option(
        "auto",
        "How to read the input: plain text lines or JSON Lines. "
        "auto: JSONL for a .jsonl file or when the first non-empty line is a JSON object.",
        choices=INPUT_FORMATS,
        panel="Input",
    )
    text_field: str = option(
        "text",
        "JSONL field holding the text; every other field is passed through to the output.",
        panel="Input",
    )


@dataclasses.dataclass
class ModelOptions:
    model: str = option(
        "minilm",
        "Local model dir, Hub id, or built-in alias (see `bgcli models`).",
        short="-m",
        panel="Model",
    )
    offline: bool = option(
        False, "Never touch the network: use local dirs and the HF cache only.", panel="Model"
    )
    revision: str | None = option(None, "Hub branch, tag or commit.", panel="Model")
    trust_remote_code: bool = option(
        False, "Allow running model code from the Hub (off unless you trust the repo).", panel="Model"
    )
