"""Output formats: JSON Lines when piped, a table on a terminal, json / tsv / text on request."""

from __future__ import annotations

import json

from bertgpt_cli.io.output import RecordWriter, resolve_format

RECORDS = [
    {"text": "a\tb", "score": 0.5, "tags": ["x", "y"]},
    {"line": 2, "error": "empty line"},
    {"text": "c\nd", "score": 1.0, "tags": []},
]


def write_all(fmt, capsys, **kwargs):
    writer = RecordWriter(fmt, **kwargs)
    for record in RECORDS:
        writer.write(record)
    writer.close()
    return capsys.readouterr().out


def test_default_is_jsonl_when_piped_and_table_on_a_terminal(monkeypatch):
    monkeypatch.setattr("bertgpt_cli.io.output.stdout_is_terminal", lambda: False)
    assert resolve_format(None) == "jsonl"
    monkeypatch.setattr("bertgpt_cli.io.output.stdout_is_terminal", lambda: True)
    assert resolve_format(None) == "table"
    assert resolve_format("tsv") == "tsv"


def test_jsonl_keeps_every_record_including_errors(capsys):
    lines = write_all("jsonl", capsys).splitlines()
    assert [json.loads(x) for x in lines] == RECORDS


def test_json_is_one_list(capsys):
    assert json.loads(write_all("json", capsys)) == RECORDS


def test_tsv_escapes_tabs_and_newlines_and_skips_errors(capsys):
    lines = write_all("tsv", capsys).splitlines()
    assert lines[0] == "text\tscore\ttags"
    assert lines[1] == 'a\\tb\t0.5\t["x", "y"]'
    assert lines[2] == "c\\nd\t1.0\t[]"
    assert len(lines) == 3


def test_text_prints_the_main_field(capsys):
    # one line per record: a newline inside a value is escaped, as in TSV
    assert write_all("text", capsys, text_key="text") == "a\tb\nc\\nd\n"


def test_table_shows_rows_and_errors(capsys):
    out = write_all("table", capsys)
    assert "score" in out and "empty line" in out and "0.5" in out
