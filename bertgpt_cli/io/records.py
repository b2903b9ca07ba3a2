"""Reading input records (arguments, a file or stdin; plain text or JSON Lines) and running
them through a command in bounded windows while keeping output order = input order."""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import BgcliError, UsageError
from .console import err_console

BOM = b"\xef\xbb\xbf"


@dataclass
class InputRecord:
    """One input text, with its 1-based line number and the JSONL fields to pass through."""

    line: int
    text: str | None
    fields: dict = field(default_factory=dict)
    error: str | None = None
    blank: bool = False  # an empty line: an error for a command's input, skipped in a corpus


class RecordError(Exception):
    """Raised (or returned) for one record: reported as `line N: reason`, the stream goes on."""


class RecordsFailed(BgcliError):
    """Raised after the whole stream when some records failed (exit status 1)."""


# A producer silent this long has paused (`tail -f log | bgcli ...`): what was read is processed
# and written now instead of waiting for a full window. A fast producer never pauses this long.
INPUT_PAUSE_S = 0.2


class RecordStream:
    """Input records, plus `paused()`: whether the input has stalled (pipes and terminals only)."""

    def __init__(self, records: Iterator[InputRecord], lines: PausableLines | None = None) -> None:
        self._records = records
        self._lines = lines

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> InputRecord:
        return next(self._records)

    def paused(self) -> bool:
        return self._lines is not None and self._lines.paused(INPUT_PAUSE_S)


class PausableLines:
    """The lines of a binary stream. From a pipe, FIFO or terminal they are read with os.read
    on the descriptor, so that select() can tell, without a thread, whether another line
    arrives within a timeout; regular files and in-memory streams are simply read."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.fd = _pollable_fd(stream)
        self.buffer = bytearray()
        self.start = 0  # where the next line begins in `buffer`
        self.eof = False

    def __iter__(self) -> PausableLines:
        return self

    def __next__(self) -> bytes:
        if self.fd is None:
            line = self.stream.readline()
            if not line:
                raise StopIteration
            return line
        end = self.buffer.find(b"\n", self.start)
        while end < 0 and not self.eof:
            self._read()
            end = self.buffer.find(b"\n", self.start)
        if self.start >= len(self.buffer):
            raise StopIteration
        stop = end + 1 if end >= 0 else len(self.buffer)
        line = bytes(self.buffer[self.start : stop])
        self.start = stop
        return line

    def _read(self) -> None:
        if self.start > 65536:  # drop consumed lines now and then, not on every line
            del self.buffer[: self.start]
            self.start = 0
        chunk = os.read(self.fd, 65536)
        if chunk:
            self.buffer += chunk
        else:
            self.eof = True

    def paused(self, timeout: float) -> bool:
        """True when no complete line is waiting and none arrives within `timeout` seconds."""
        if self.fd is None or self.eof or self.buffer.find(b"\n", self.start) >= 0:
            return False
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([self.fd], [], [], remaining)[0]:
                return True
            self._read()
            if self.eof or self.buffer.find(b"\n", self.start) >= 0:
                return False
        return True


def _pollable_fd(stream: BinaryIO) -> int | None:
    """The descriptor of a pipe, FIFO, socket or terminal; None for files and in-memory streams."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode) else None


def read_input_records(
    texts: list[str],
    input_path: str | None,
    input_format: str = "auto",
    text_field: str = "text",
    pair_field: str | None = None,
) -> RecordStream:
    """Resolve where the texts come from; plain text is one text per line. With `pair_field`
    (sentence-pair commands), a TSV line is a text, a tab, and its pair (put in that field)."""
    if texts and input_path:
        raise UsageError("give texts as arguments or --input FILE, not both")
    if texts:
        return RecordStream(parse_text_record(i, t) for i, t in enumerate(texts, start=1))
    if input_format == "auto" and pair_field and (input_path or "").endswith(".tsv"):
        input_format = "tsv"
    if input_path in (None, "-"):
        if sys.stdin is None or sys.stdin.closed:
            raise UsageError("stdin is closed: pass texts as arguments or --input FILE")
        if input_path is None and _stdin_is_terminal():
            raise UsageError("no input: pass texts as arguments, --input FILE, or pipe them on stdin")
        stream, is_jsonl_name = sys.stdin.buffer, False
    else:
        stream, is_jsonl_name = _open_input(input_path), input_path.endswith(".jsonl")
    lines = PausableLines(stream)
    return RecordStream(
        _read_lines(stream, lines, input_format, text_field, is_jsonl_name, pair_field or "text_pair"), lines
    )


def _open_input(input_path: str) -> BinaryIO:
    """Anything that can be opened for reading: a file, a named pipe, `<(cmd)` (/dev/fd/N)."""
    path = Path(input_path)
    if path.is_dir():
        raise UsageError(f"--input '{input_path}' is a directory; pass a file (or - for stdin)")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"input file '{input_path}' not found; check the path, or use - for stdin") from None
    except OSError as exc:
        raise UsageError(f"cannot read --input '{input_path}': {exc.strerror}") from None


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _read_lines(
    stream: BinaryIO,
    raw_lines: Iterable[bytes],
    input_format: str,
    text_field: str,
    is_jsonl_name: bool,
    pair_field: str = "text_pair",
) -> Iterator[InputRecord]:
    """Decode lines one at a time so endless stdin runs in bounded memory."""
    lines = _decoded_lines(stream, raw_lines)
    if input_format == "auto":
        # Decided by the first character, so one malformed first line is a bad record
        # (reported by number), not a silent switch of the whole stream to plain text.
        peeked, lines = _peek_first_non_empty(lines)
        jsonl = is_jsonl_name or (peeked is not None and peeked.lstrip().startswith("{"))
    else:
        jsonl = input_format == "jsonl"
    for number, text, decode_error in lines:
        if decode_error:
            yield InputRecord(number, None, error=decode_error)
        elif jsonl:
            yield parse_jsonl_record(number, text, text_field)
        elif input_format == "tsv":
            yield _tsv_record(number, text, pair_field)
        else:
            yield parse_text_record(number, text)


def _decoded_lines(stream: BinaryIO, raw_lines: Iterable[bytes]) -> Iterator[tuple[int, str, str | None]]:
    try:
        for number, raw in enumerate(raw_lines, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            elif number == 1:
                refuse_wide_encodings(raw)
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if b"\x00" in raw:  # binary data, or UTF-16 without its BOM: never embed NULs
                yield number, "", "holds NUL bytes (binary data, or UTF-16/32 text?); give UTF-8 text"
                continue
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 1].hex()
                reason = (
                    f"not valid UTF-8 (byte 0x{bad} at column {exc.start + 1}); re-encode the input as UTF-8"
                )
                yield number, "", reason
    finally:
        if stream is not getattr(sys.stdin, "buffer", None):
            stream.close()


WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def wide_encoding(first_bytes: bytes) -> str | None:
    """UTF-16 / UTF-32 when the data starts with their byte-order mark, else None."""
    return next((encoding for bom, encoding in WIDE_BOMS if first_bytes.startswith(bom)), None)


def refuse_wide_encodings(first_line: bytes) -> None:
    """A UTF-16/32 file read as lines would be NUL-interleaved garbage: refuse it whole."""
    encoding = wide_encoding(first_line)
    if encoding:
        raise UsageError(
            f"the input is {encoding} (it starts with a {encoding} byte-order mark); re-encode it "
            f"as UTF-8, e.g. iconv -f {encoding} -t UTF-8 FILE"
        )


def _peek_first_non_empty(lines: Iterator[tuple[int, str, str | None]]):
    buffered = []
    first = None
    for item in lines:
        buffered.append(item)
        if item[2] is None and item[1].strip():
            first = item[1]
            break
    return first, itertools.chain(buffered, lines)


def parse_text_record(number: int, text: str) -> InputRecord:
    if not text.strip():
        return InputRecord(number, None, error="empty line; remove it or give it a text", blank=True)
    return InputRecord(number, text)


def _tsv_record(number: int, line: str, pair_field: str) -> InputRecord:
    """`text<TAB>pair`: the two texts of a sentence pair (tabs and newlines inside a text are
    escaped as `\\t`, `\\n` in TSV, as bgcli writes them)."""
    if not line.strip():
        return InputRecord(number, None, error="empty line; remove it or give it a text", blank=True)
    columns = [_tsv_unescape(c) for c in line.split("\t")]
    if len(columns) != 2:
        reason = f"expected 2 tab-separated texts (text, pair), got {len(columns)} columns"
        return InputRecord(number, None, error=reason)
    if not all(c.strip() for c in columns):
        return InputRecord(number, None, error="the text or its pair is empty")
    return InputRecord(number, columns[0], {pair_field: columns[1]})


def _tsv_unescape(cell: str) -> str:
    return re.sub(r"\\([\\tnr])", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m[1], m[1]), cell)


def parse_jsonl_record(number: int, line: str, text_field: str) -> InputRecord:
    if not line.strip():
        return InputRecord(number, None, error="empty line; every line must be a JSON object", blank=True)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputRecord(number, None, error=f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        return InputRecord(number, None, error=f"expected a JSON object, got {kind}")
    fields = {k: v for k, v in obj.items() if k != text_field}
    if text_field not in obj:
        have = ", ".join(obj) or "none"
        reason = f"no '{text_field}' field (fields: {have}); choose one with --text-field"
        return InputRecord(number, None, fields, error=reason)
    text = obj[text_field]
    if not isinstance(text, str):
        return InputRecord(number, None, fields, error=f"field '{text_field}' is not a string")
    if not text.strip():
        return InputRecord(number, None, fields, error=f"field '{text_field}' is empty")
    return InputRecord(number, text, fields)


# Processing -----------------------------------------------------------------------------

ProcessBatch = Callable[[list[InputRecord]], list]


def report_bad_record(record: InputRecord) -> None:
    err_console.print(f"line {record.line}: {record.error}", markup=False, style="red")


def error_output(record: InputRecord) -> dict:
    return {**record.fields, "line": record.line, "error": record.error}


def run_stream(
    records: Iterable[InputRecord],
    process_batch: ProcessBatch,
    write: Callable[[dict], None],
    window: int,
    flush: Callable[[], None] = lambda: None,
    input_key: str | None = None,
) -> tuple[int, int]:
    """Process records `window` at a time; write results in input order.

    `process_batch` gets the good records of a window and returns, for each, a list of
    output dicts or a RecordError. Bad records never stop the stream. With `input_key`,
    each output also carries its input text under that key. Returns (ok, failed).
    """
    ok = failed = 0
    for chunk in _windows(records, window):
        good = [r for r in chunk if r.error is None]
        results = iter(process_batch(good) if good else [])
        for record in chunk:
            if record.error is None:
                outcome = next(results)
                if isinstance(outcome, RecordError):
                    record.error = str(outcome)
                else:
                    shown = {input_key: record.text} if input_key else {}
                    for out in outcome:
                        write({**shown, **record.fields, **out})
                    ok += 1
                    continue
            report_bad_record(record)
            write(error_output(record))
            failed += 1
        flush()
    return ok, failed


def _windows(records: Iterable[InputRecord], window: int) -> Iterator[list[InputRecord]]:
    """Chunks of `window` records, or fewer when the input pauses (see RecordStream)."""
    paused = getattr(records, "paused", lambda: False)
    chunk: list[InputRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= window or paused():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def stream_to_writer(
    records: Iterable[InputRecord], process_batch: ProcessBatch, writer, window: int
) -> None:
    """What every stream command does: run the records into `writer` (always closed, so a
    table or JSON list still shows what was done), then fail if any record failed."""
    try:
        ok, failed = run_stream(records, process_batch, writer.write, window, writer.flush, writer.input_key)
    finally:
        writer.close()
    raise_if_failed(ok, failed)


def raise_if_failed(ok: int, failed: int) -> None:
    if failed:
        total = ok + failed
        raise RecordsFailed(f"{failed} of {total} records failed (reported above by line number)")
