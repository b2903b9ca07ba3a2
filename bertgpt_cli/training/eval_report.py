"""`bgcli eval --output DIR`: eval.json (every number), README.md (tables people read) and the
plots of finetune's test report, written into a folder that holds nothing else of anyone's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io.atomic import write_text_atomically
from ..io.console import info


def write_eval_report(folder: Path, config, results: list, summary: dict[str, Any]) -> None:
    from .run_report import plot_confusion

    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# bgcli eval: {', '.join(r.model for r in results)} on `{config.data}`", ""]
    details = []
    for index, result in enumerate(results):
        report = result.report or {}
        plots = []
        if "confusion_matrix" in report:
            names = report.get("confusion_labels") or result.labels
            plot = plot_confusion(folder, report["confusion_matrix"], names)
            renamed = folder / f"confusion_matrix_{index + 1}.png" if len(results) > 1 else folder / plot
            (folder / plot).replace(renamed)
            plots.append(renamed.name)
        lines += model_section(result, plots)
        details.append(
            {
                "model": result.model,
                "task": result.task,
                "rows": result.rows,
                "metrics": result.metrics,
                "report": result.report,
                "protocol": result.protocol,
            }
        )
    if "paired_test" in summary:
        paired = summary["paired_test"]
        lines += [
            "## Paired test",
            "",
            f"{paired['test']} on {paired['rows']} rows: {paired['only_first_correct']} rows only the "
            f"first model gets right, {paired['only_second_correct']} only the second; "
            f"p = {paired['p_value']:.4g}.",
            "",
        ]
    write_text_atomically(folder / "README.md", "\n".join(lines) + "\n")
    body = {"data": config.data, "summary": summary, "models": details}
    write_text_atomically(folder / "eval.json", json.dumps(body, indent=2, default=str) + "\n")
    info(f"report written to {folder}")


def model_section(result, plots: list[str]) -> list[str]:
    lines = [f"## {result.model} ({result.task}, {result.rows} rows)", ""]
    if result.protocol:
        lines += [f"Protocol: {result.protocol}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    for name, value in result.metrics.items():
        lines.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    lines.append("")
    per_class = (result.report or {}).get("per_class")
    if per_class:
        lines += ["| label | precision | recall | F1 | rows |", "|---|---|---|---|---|"]
        for label, scores in per_class.items():
            if isinstance(scores, dict) and "support" in scores:
                lines.append(
                    f"| {label} | {scores['precision']:.4f} | {scores['recall']:.4f} | "
                    f"{scores['f1-score']:.4f} | {int(scores['support'])} |"
                )
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    if result.task_object is not None:  # the task's own sections, as in a finetune model card
        metrics = {"test": {f"test_{k}": v for k, v in result.metrics.items()}, "test_report": result.report}
        lines += result.task_object.report_lines(metrics)
    return lines
