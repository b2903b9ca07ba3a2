"""Typed configs -> Typer commands: each config field becomes a parameter with its help, panel,
choices and bounds; `--help` looks plain (no type tags), ends with examples.

Only the CLI imports Typer; the configs themselves (`options.py`) do not.
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
import typer.core

from ..errors import StdoutClosed
from ..io.console import set_verbosity
from ..options import OutputOptions, base_type, config_fields, flag_name, help_metavar, validate_config

Config = TypeVar("Config")


def _typer_parameter(field: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    meta = field.metadata
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if meta["kind"] == "argument":
        info = typer.Argument(help=meta["help"], metavar=help_metavar(field, annotation), show_default=False)
        default = None
    else:
        decls = [flag_name(field)]
        if base_type(annotation) is bool and default is not False:  # True, or None = "auto"
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
            metavar=help_metavar(field, annotation),
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
        validate_config(config)
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


def _plain_help_params(params: list) -> list:
    """--help without Typer's type tags: flags (--help, --version, --quiet...) show no
    metavar, positional texts show their name only; value options keep theirs (N, SPEC...)."""
    for param in params:
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx: ""
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class PlainHelpCommand(typer.core.TyperCommand):
    def get_params(self, ctx):
        return _plain_help_params(super().get_params(ctx))


class PlainHelpGroup(typer.core.TyperGroup):
    def get_params(self, ctx):
        return _plain_help_params(super().get_params(ctx))


def examples_epilog(examples: typing.Sequence[str]) -> str:
    """The end of a command's --help: a few commands to copy (escaped: `[MASK]` is not markup)."""
    from rich.markup import escape

    return "Examples:\n" + "\n".join(f"  {escape(line)}" for line in examples)


def command_group(help: str, examples: typing.Sequence[str]) -> typer.Typer:
    """A `bgcli NAME SUBCOMMAND` group (data, recipes, tokenizer) with the commands' help style."""
    return typer.Typer(
        help=help,
        epilog=examples_epilog(examples),
        no_args_is_help=True,
        rich_markup_mode="rich",
        cls=PlainHelpGroup,
    )
