"""Input conventions: arguments / file / stdin, text or JSONL, bad records, order, bounded memory."""

from __future__ import annotations

import itertools
import json

import pytest

from bertgpt_cli.errors import UsageError
from bertgpt_cli.io.records import (
    InputRecord,
    PausableLines,
    RecordError,
    _read_lines,
    read_input_records,
    run_stream,
)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def reference_tokens(model_dir, text: str) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return " ".join(tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"]))


def test_plain_text_lines_with_bom_and_crlf(cli, tiny_bert_dir):
    data = b"\xef\xbb\xbfhello world\r\nthe cat\r\n"
    result = cli(["tokenize", "-m", str(tiny_bert_dir)], input=data)
    assert result.code == 0, result.stderr
    records = jsonl(result.stdout)
    expected = [reference_tokens(tiny_bert_dir, t) for t in ("hello world", "the cat")]
    assert [r["tokens_text"] for r in records] == expected
    assert not records[0]["tokens"][1].startswith("\ufeff")


def test_bad_records_are_reported_and_the_stream_goes_on(cli, tiny_bert_dir):
    data = b"first\n\n   \nbad \xff byte\nlast\n"
    result = cli(["tokenize", "-m", str(tiny_bert_dir)], input=data)
    assert result.code == 1
    records = jsonl(result.stdout)
    assert [r.get("line") for r in records] == [None, 2, 3, 4, None]  # input order kept
    assert records[0]["tokens_text"] == reference_tokens(tiny_bert_dir, "first")
    assert records[4]["tokens_text"] == reference_tokens(tiny_bert_dir, "last")
    assert "empty line" in records[1]["error"] and "empty line" in records[2]["error"]
    assert "not valid UTF-8" in records[3]["error"]
    for n in (2, 3, 4):
        assert f"line {n}: " in result.stderr
    assert "3 of 5 records failed" in result.stderr


def test_jsonl_is_detected_and_fields_pass_through(cli, tiny_bert_dir):
    data = (
        '{"text": "the movie", "id": 7, "meta": {"a": 1}}\n'
        '{"id": 8}\n[1, 2]\n{"text": "", "id": 9}\nnot json\n'
    )
    result = cli(["tokenize", "-m", str(tiny_bert_dir)], input=data)
    assert result.code == 1
    records = jsonl(result.stdout)
    assert records[0]["id"] == 7 and records[0]["meta"] == {"a": 1} and "text" not in records[0]
    assert records[1] == {"id": 8, "line": 2, "error": records[1]["error"]}
    assert "no 'text' field (fields: id); choose one with --text-field" in records[1]["error"]
    assert "expected a JSON object" in records[2]["error"]
    assert records[3]["id"] == 9 and "is empty" in records[3]["error"]
    assert "not valid JSON" in records[4]["error"]


def test_text_field_option_and_jsonl_extension(cli, tiny_bert_dir, tmp_path):
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"review": "great film", "stars": 5}\n')
    result = cli(["tokenize", "-m", str(tiny_bert_dir), "-i", str(source), "--text-field", "review"])
    assert result.code == 0, result.stderr
    (record,) = jsonl(result.stdout)
    assert record["stars"] == 5 and record["num_tokens"] >= 3


def test_explicit_text_format_reads_json_lines_as_text(cli, tiny_bert_dir):
    result = cli(["tokenize", "-m", str(tiny_bert_dir), "--input-format", "text"], input='{"text": "x"}\n')
    assert result.code == 0
    record = jsonl(result.stdout)[0]
    assert record["tokens_text"] == reference_tokens(tiny_bert_dir, '{"text": "x"}')


def test_arguments_are_texts(cli, tiny_bert_dir):
    result = cli(["tokenize", "-m", str(tiny_bert_dir), "one", "two words"])
    expected = [len(reference_tokens(tiny_bert_dir, t).split()) for t in ("one", "two words")]
    assert [r["num_tokens"] for r in jsonl(result.stdout)] == expected


def test_arguments_and_input_file_together_is_a_usage_error(cli, tiny_bert_dir, tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    result = cli(["tokenize", "-m", str(tiny_bert_dir), "-i", str(tmp_path / "a.txt"), "text"])
    assert result.code == 2 and "not both" in result.stderr


class EndlessStream:
    """A stdin that never ends: reading it all would never return."""

    def __init__(self):
        self.lines_read = 0

    def readline(self):
        self.lines_read += 1
        return f"text number {self.lines_read - 1}\n".encode()

    def close(self):
        pass


def test_stdin_is_read_incrementally():
    stream = EndlessStream()
    records = _read_lines(stream, PausableLines(stream), "auto", "text", is_jsonl_name=False)
    first = list(itertools.islice(records, 5))
    assert [r.text for r in first] == [f"text number {i}" for i in range(5)]
    assert stream.lines_read <= 6


def test_run_stream_keeps_input_order_and_bounded_windows():
    records = [InputRecord(i, f"t{i}") for i in range(1, 8)]
    records[2].error = "bad"
    windows, written = [], []

    def process(batch):
        windows.append(len(batch))
        # Process in reverse, as a length-sorted batch would, but return in batch order.
        return [RecordError("odd") if r.line == 5 else [{"n": r.line}] for r in batch]

    ok, failed = run_stream(records, process, written.append, window=3)
    assert (ok, failed) == (5, 2)
    assert max(windows) <= 3
    assert [w.get("n", w.get("line")) for w in written] == [1, 2, 3, 4, 5, 6, 7]
    assert written[4] == {"line": 5, "error": "odd"}


def test_stdin_on_a_terminal_without_texts_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("bertgpt_cli.io.records._stdin_is_terminal", lambda: True)
    with pytest.raises(UsageError, match="no input"):
        read_input_records([], None)


SLOW_PRODUCER = """
import sys, time
print("paris", flush=True)
time.sleep({pause})
print("london", flush=True)
"""


def test_a_pause_in_the_input_flushes_what_was_read(tiny_classifier_dir):
    """`tail -f log | bgcli classify`: the first line's result comes out while the producer
    sleeps, not after the second line (the window of 8 batches is far from full)."""
    import subprocess
    import sys
    import time

    from .conftest import BGCLI, ROOT

    producer = subprocess.Popen(
        [sys.executable, "-c", SLOW_PRODUCER.format(pause=12)], stdout=subprocess.PIPE
    )
    consumer = subprocess.Popen(
        [*BGCLI, "classify", "-m", str(tiny_classifier_dir), "--format", "jsonl"],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    producer.stdout.close()
    started = time.monotonic()
    first = consumer.stdout.readline()
    waited = time.monotonic() - started
    second = consumer.stdout.readline()
    assert consumer.wait(timeout=120) == 0 and producer.wait() == 0
    assert json.loads(first)["label"] and json.loads(second)["label"]
    assert waited < 11, f"the first result waited {waited:.1f} s for the second line"


def test_ctrl_c_while_waiting_for_a_slow_producer_stops_cleanly(tiny_classifier_dir):
    """Ctrl-C while classify waits for the producer's next line (after the pause flush): it stops
    at once with exit 130 and no traceback, and the result already printed stays printed."""
    import subprocess
    import sys
    import time

    from .conftest import BGCLI, interrupt_and_wait, start_interruptible

    producer = subprocess.Popen(
        [sys.executable, "-c", SLOW_PRODUCER.format(pause=120)], stdout=subprocess.PIPE
    )
    consumer = start_interruptible(
        [*BGCLI, "classify", "-m", str(tiny_classifier_dir), "--format", "jsonl"],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    producer.stdout.close()
    try:
        first = consumer.stdout.readline()  # the first line is answered; now it waits for more
        started = time.monotonic()
        stderr = interrupt_and_wait(consumer, timeout=60).decode()
        waited = time.monotonic() - started
    finally:
        producer.kill()
        producer.wait()
    assert json.loads(first)["label"]
    assert consumer.returncode == 130 and waited < 10  # not when the producer's 120 s end
    assert "Traceback" not in stderr
