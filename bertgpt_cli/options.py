"""Typed command configs are the single source of truth for flags, help, defaults, recipe keys,
HTTP request options and the Python API's keyword arguments.

A command declares one dataclass of `option(...)` fields; the CLI (`cli/typer_options.py`)
turns its fields into Typer parameters, the API into keyword arguments, the server into
request options, so adding an option means adding one field. Nothing here imports Typer.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import UsageError

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
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A command-line option; its field name with `_` -> `-` is the flag and the recipe key.

    `ge`/`gt`/`le`/`lt` bound a number (checked for flags and recipe values alike, before
    anything is loaded: see `validate_config`)."""
    meta = {
        "kind": "option",
        "help": help,
        "short": short,
        "choices": choices,
        "panel": panel,
        "metavar": metavar,
        "flag": flag,
        "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
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


# What a value flag shows in --help when its field names no metavar of its own.
TYPE_METAVARS = {int: "N", float: "FLOAT", str: "TEXT"}


def base_type(annotation: Any) -> Any:
    """`int | None` -> int; `list[str]` stays list[str]."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def help_metavar(field: dataclasses.Field, annotation: Any) -> str | None:
    """Flags show no metavar; values show the field's own (PATH, SPEC...) or their type's."""
    meta = field.metadata
    if meta.get("metavar") is not None:
        return meta["metavar"]
    kind = base_type(annotation)
    if kind is bool:
        return ""
    if meta.get("choices"):
        return None  # Typer shows the choices
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    return TYPE_METAVARS.get(kind)


def config_fields(config_cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_cls) if "kind" in f.metadata]


def validate_config(config: Any) -> None:
    """Every value within its field's bounds, before any data or model is loaded (exit 2)."""
    for f in config_fields(type(config)):
        check_bounds(f, getattr(config, f.name), flag_name(f))


def check_bounds(field: dataclasses.Field, value: Any, where: str) -> None:
    bounds = field.metadata.get("bounds") or {}
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    failed = (
        ("ge" in bounds and not value >= bounds["ge"])
        or ("gt" in bounds and not value > bounds["gt"])
        or ("le" in bounds and not value <= bounds["le"])
        or ("lt" in bounds and not value < bounds["lt"])
    )
    if failed:
        raise UsageError(f"{where} must be {describe_bounds(bounds)}, not {value}")


def describe_bounds(bounds: dict[str, float]) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {_number(v)}" for k, v in bounds.items())


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def coerce_recipe_value(field: dataclasses.Field, annotation: Any, value: Any, where: str) -> Any:
    """A recipe's YAML value as the field's type (`epochs: 3` -> 3.0, `lr: 1e-4` -> 0.0001), or a
    one-line error naming the key (`epochs: three`)."""
    if value is None:
        return None
    kind = base_type(annotation)
    if field.metadata.get("choices") and value not in field.metadata["choices"]:
        raise UsageError(f"{where} must be one of {', '.join(field.metadata['choices'])}, not {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where} must be true or false, not {value!r}")
    if kind in (int, float):
        number = _as_number(value, kind)
        if number is None:
            noun = "a whole number" if kind is int else "a number"
            raise UsageError(f"{where} must be {noun}, not {value!r}")
        return number
    if kind is str:
        if isinstance(value, (dict, list)):
            raise UsageError(f"{where} must be a single value, not {value!r}")
        return str(value)
    if typing.get_origin(kind) is list:
        items = value if isinstance(value, list) else [value]
        return [str(v) for v in items]
    return value


def _as_number(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            return None
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if kind is int and isinstance(value, int):
        return value
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return None


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
        metavar="FIELD",
    )


@dataclasses.dataclass
class ModelOptions:
    model: str = option(
        "minilm",
        "Local model dir, Hub id, or built-in alias (see `bgcli models`).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    offline: bool = option(
        False, "Never touch the network: use local dirs and the HF cache only.", panel="Model"
    )
    revision: str | None = option(None, "Hub branch, tag or commit.", panel="Model", metavar="REV")
    trust_remote_code: bool = option(
        False, "Allow running model code from the Hub (off unless you trust the repo).", panel="Model"
    )


DATA_PANEL = "Data"
NER_PANEL = "Named entities (--task ner)"
QA_PANEL = "Question answering (--task qa)"


@dataclasses.dataclass
class DataColumns:
    """Which columns of a dataset hold what: one group for every command that reads labelled
    data (finetune, pretrain, eval, data check), so a column flag means the same everywhere."""

    text_column: str = option("text", "Column with the text.", panel=DATA_PANEL, metavar="COLUMN")
    text_pair_column: str | None = option(
        None, "Second text column for sentence pairs.", panel=DATA_PANEL, metavar="COLUMN"
    )
    label_column: str = option(
        "label", "Column with the label (ints or strings).", panel=DATA_PANEL, metavar="COLUMN"
    )
    multi_label: bool = option(
        False,
        "Each row may have several labels (a list, or text split on --label-separator).",
        panel=DATA_PANEL,
    )
    label_separator: str = option(",", "Splits a text label column for --multi-label.", panel=DATA_PANEL)
    data_format: str | None = option(
        None, "Force the file format (csv, tsv, json, jsonl, parquet, text, conll).", panel=DATA_PANEL
    )
    tokens_column: str = option(
        "tokens", "Column with each record's list of words.", panel=NER_PANEL, metavar="COLUMN"
    )
    tags_column: str = option(
        "ner_tags",
        "Column with each record's list of tags (names or ClassLabel ids).",
        panel=NER_PANEL,
        metavar="COLUMN",
    )
    tag_column: int | None = option(
        None,
        "CoNLL files: the column (from 1) that holds the tag (default: the last).",
        panel=NER_PANEL,
        ge=2,
    )
    question_column: str = option("question", "Column with the question.", panel=QA_PANEL, metavar="COLUMN")
    context_column: str = option(
        "context", "Column with the context the answer is in.", panel=QA_PANEL, metavar="COLUMN"
    )
    answers_column: str = option(
        "answers",
        "Column with {text: [...], answer_start: [...]} (the Hub's squad layout).",
        panel=QA_PANEL,
        metavar="COLUMN",
    )


def same_option(config_cls: type, name: str, **changes: Any) -> Any:
    """Another command's option, declared once: the same default, help and bounds (e.g. `data
    check` takes finetune's column flags). `changes` override metadata such as the panel."""
    source = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    metadata = {**source.metadata, **changes}
    if source.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=source.default_factory, metadata=metadata)
    return dataclasses.field(default=source.default, metadata=metadata)


@dataclasses.dataclass
class ServerOptions:
    server: str | None = option(
        None,
        "Send the records to a running `bgcli serve` at URL (default: $BGCLI_SERVER) instead of "
        "loading the model here; -m names one of the server's models.",
        panel="Server",
        metavar="URL",
    )
    server_fallback: bool = option(
        False, "When the server is down or lacks the model, load the model here instead.", panel="Server"
    )
