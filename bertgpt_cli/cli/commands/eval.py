"""`bgcli eval`: score saved models on labelled data (engine: training/evaluation.py); the
side-by-side table of `--compare` lives here."""

from __future__ import annotations

import json
import sys

from ...io.output import write_record
from ...training import evaluation

NAME = "eval"
HELP = "Evaluate saved models on labelled data: finetune's test metrics and report; --compare two."
EXAMPLES = (
    "bgcli eval -m runs/rt --data test.csv --label-column sentiment",
    "bgcli eval --compare runs/rt runs/rt-long --data test.csv --label-column sentiment",
    "bgcli eval -m runs/clm --data reviews.txt --stride 256   # sliding-window perplexity",
    "bgcli eval --task retrieval --compare minilm runs/emb --data squad-retrieval@validation",
)
CONFIG = evaluation.EvalConfig


def run(config: evaluation.EvalConfig) -> None:
    summary = evaluation.run(config)
    if config.compare:
        show_comparison(summary, config.format)
    else:
        write_record(summary, config.format)


def show_comparison(record: dict, fmt: str | None) -> None:
    from ...io.output import resolve_format

    fmt = resolve_format(fmt)
    if fmt != "table":
        indent = 2 if fmt == "json" else None
        sys.stdout.write(json.dumps(record, ensure_ascii=False, indent=indent) + "\n")
        return
    from rich.table import Table

    from ...io.console import make_console

    first, second = record["models"]
    table = Table(title=f"{record['task']} on {record['data']} ({record['rows']} rows)")
    for name in ("metric", first, second, "difference"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name, values in record["metrics"].items():
        cells = [values["first"], values["second"], values["difference"]]
        table.add_row(
            name, *("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells)
        )
    console = make_console(stderr=False)
    console.print(table)
    paired = record.get("paired_test")
    if paired and "better_for_first" in paired:  # retrieval: per-query nDCG@10
        verdict = "a real difference" if paired["significant_at_0.05"] else "not distinguishable from noise"
        console.print(
            f"{paired['test']}: {paired['better_for_first']} queries better with {first}, "
            f"{paired['better_for_second']} with {second}, mean difference "
            f"{paired['mean_difference']:+.4f}; p = {paired['p_value']:.4g} ({verdict} at 0.05)",
            markup=False,
        )
    elif paired:
        verdict = "a real difference" if paired["significant_at_0.05"] else "not distinguishable from noise"
        console.print(
            f"{paired['test']}: {paired['only_first_correct']} rows only {first} gets right, "
            f"{paired['only_second_correct']} only {second}; p = {paired['p_value']:.4g} ({verdict} at 0.05)",
            markup=False,
        )
