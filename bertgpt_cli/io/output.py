"""Writing records to stdout as a Rich table, JSON Lines, JSON, TSV or plain text."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .console import make_console, stdout_is_terminal


def resolve_format(requested: str | None) -> str:
    """A table for people, JSON Lines for pipes."""
    if requested:
        return requested
    return "table" if stdout_is_terminal() else "jsonl"


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return to_json(value)
    return str(value)


def _one_line(text: str) -> str:
    """Backslashes, newlines and CRs escaped, so a value never spans lines."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _tsv_cell(value: Any) -> str:
    text = _cell(value) if not isinstance(value, float) else repr(value)
    return _one_line(text).replace("\t", "\\t")


class RecordWriter:
    """Streams records (dicts) to stdout in one format.

    jsonl and tsv write as they go (pipelines see results early); json and table
    need every record, so they are written on close(). Error records
    ({"line", "error"}) are data in jsonl/json/table and left out of tsv/text, whose
    consumers expect uniform rows; the error is on stderr in every case.
    """

    def __init__(
        self,
        fmt: str | None,
        columns: Sequence[str] | None = None,
        text_key: str | None = None,
        title: str | None = None,
        table_cells: dict[str, Callable[[Any], str]] | None = None,
        table_shows_input: bool = False,
    ) -> None:
        self.format = resolve_format(fmt)
        self.columns = list(columns) if columns else None
        self.text_key = text_key
        self.title = title
        # Table only (the formats for programs keep the record as is): readable cells for
        # nested values, and the input text as a first column, so a person sees which
        # answer belongs to which text.
        self.table_cells = table_cells or {}
        self.input_key = "text" if table_shows_input and self.format == "table" else None
        self._held: list[dict] = []
        self._tsv_header: list[str] | None = None

    def write(self, record: dict) -> None:
        fmt = self.format
        if fmt == "jsonl":
            sys.stdout.write(to_json(record) + "\n")
        elif fmt in ("json", "table"):
            self._held.append(record)
        elif "error" in record:
            return
        elif fmt == "tsv":
            self._write_tsv(record)
        elif fmt == "text":
            self._write_text(record)

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self) -> None:
        if self.format == "json":
            sys.stdout.write(json.dumps(self._held, ensure_ascii=False, indent=2, default=str) + "\n")
        elif self.format == "table":
            self._write_table()
        sys.stdout.flush()

    def _write_tsv(self, record: dict) -> None:
        if self._tsv_header is None:
            self._tsv_header = self.columns or list(record)
            sys.stdout.write("\t".join(self._tsv_header) + "\n")
        sys.stdout.write("\t".join(_tsv_cell(record.get(c)) for c in self._tsv_header) + "\n")

    def _write_text(self, record: dict) -> None:
        """One line per record: newlines inside a value (a multi-line completion) are escaped
        as `\\n` and backslashes as `\\\\`, as in TSV, so a line is always one record."""
        if self.text_key is not None:
            value = record.get(self.text_key)
            sys.stdout.write(_one_line(value if isinstance(value, str) else _cell(value)) + "\n")
        else:
            sys.stdout.write("\t".join(_one_line(_cell(v)) for v in record.values()) + "\n")

    def _write_table(self) -> None:
        from rich.table import Table

        if not self._held:
            return
        columns = self.columns or _union_keys(self._held)
        if any("error" in r for r in self._held):
            columns += [c for c in ("line", "error") if c not in columns]
        table = Table(title=self.title, show_lines=False)
        for name in columns:
            table.add_column(name, overflow="fold", min_width=min(len(name), 12))
        for record in self._held:
            style = "red" if "error" in record else None
            cells = [self.table_cells.get(c, _cell)(record[c]) if c in record else "" for c in columns]
            table.add_row(*cells, style=style)
        make_console(stderr=False).print(table)


def write_record(record: dict | None, fmt: str | None, **writer_options: Any) -> None:
    """One result record (a run's summary, a report) in the chosen format; None writes nothing."""
    if record is None:
        return
    writer = RecordWriter(fmt, **writer_options)
    writer.write(record)
    writer.close()


def _union_keys(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for record in records:
        if "error" not in record:
            keys.update(dict.fromkeys(record))
    return list(keys)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b": value}; lists of dicts are numbered (`cuda.0.name`)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{index}."))
        else:
            flat[name] = _cell(value) if not isinstance(value, list) or value else "none"
    return flat
