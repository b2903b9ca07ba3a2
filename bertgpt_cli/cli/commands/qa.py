"""`bgcli qa`: extractive question answering over documents of any length (engine:
inference/qa.py); the terminal view with the answer highlighted in its context lives here."""

from __future__ import annotations

from ...inference import qa
from ...io.output import RecordWriter

NAME = "qa"
HELP = "Answer questions from a context (extractive QA): answer span, score and character offsets."
EXAMPLES = (
    'bgcli qa -m runs/qa --question "Who won Super Bowl 50?" --context article.txt',
    "cat questions.jsonl | bgcli qa -m runs/qa | jq -c '{id, answer, score}'",
    "bgcli qa -m runs/qa --questions questions.txt --context article.txt --top-k 3",
)
CONFIG = qa.QaConfig


def run(config: qa.QaConfig) -> None:
    qa.validate(config)
    records, shared_context = qa.question_records(config)
    writer = AnswerWriter(config.format, shared_context, config.context_field)
    qa.process(config, records, writer, shared_context)


class AnswerWriter(RecordWriter):
    """On a terminal: the question, the answer, and the context around it, answer highlighted."""

    def __init__(self, fmt: str | None, shared_context: str | None, context_field: str) -> None:
        super().__init__(fmt, text_key="answer")
        self.shared_context, self.context_field = shared_context, context_field
        if self.format == "table":
            self.input_key = "question"  # shown beside its answer

    def _write_table(self) -> None:
        from rich.table import Table
        from rich.text import Text

        from ...io.console import make_console

        if not self._held:
            return
        table = Table(show_lines=True)
        for name in ("question", "answer", "score", "in context"):
            table.add_column(name, overflow="fold")
        for record in self._held:
            if "error" in record:
                table.add_row(f"line {record['line']}: {record['error']}", "", "", "", style="red")
                continue
            context = record.get(self.context_field) or self.shared_context or ""
            shown = Text()
            if record.get("start") is not None and context:
                start, end = record["start"], record["end"]
                shown.append(("..." if start > 80 else "") + context[max(0, start - 80) : start])
                shown.append(context[start:end], style="bold green")
                shown.append(context[end : end + 80] + ("..." if end + 80 < len(context) else ""))
            score = "" if record.get("score") is None else f"{record['score']:.3f}"
            table.add_row(record.get("question", ""), record.get("answer", ""), score, shown)
        make_console(stderr=False).print(table)
