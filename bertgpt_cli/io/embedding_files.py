"""Embedding matrices written as a stream: .npy, .safetensors or .parquet, in bounded memory.

Rows are appended window by window (a 1M-line input never sits in RAM) into a hidden temp
file beside the target; the row count goes into the header at the end (both formats allow
a space-padded header) and the file is renamed into place, so a reader never sees half a
file and an interrupted run leaves none. For .npy and .safetensors the rows' fields (input
line, text, passed-through JSONL fields) go to a side file `NAME.rows.jsonl`, one line per
row in the same order; parquet keeps them as columns beside `embedding`.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line
from .atomic import remove_dead_writers_temps, temp_prefix, umask_mode

FILE_FORMATS = (".npy", ".safetensors", ".parquet")
NPY_HEADER_BYTES = 128  # room for any (rows, dim) shape; a multiple of 64 as numpy writes
SAFETENSORS_HEADER_BYTES = 1024  # 8-aligned; JSON header padded with spaces


def check_output_path(output: str, overwrite: bool = False) -> Path:
    """A vectors file to write: a known format, in an existing folder, and (unless `overwrite`)
    replacing neither an existing file nor the rows sidecar it would write beside it."""
    path = Path(output)
    if path.suffix not in FILE_FORMATS:
        raise UsageError(f"--output '{output}' must end in {', '.join(FILE_FORMATS)} (the file format)")
    if path.is_dir():
        raise UsageError(f"--output '{output}' is a directory; name a file")
    if not path.parent.is_dir():
        raise UsageError(f"--output folder '{path.parent}' does not exist; create it first")
    if not overwrite:
        written = [path] + ([rows_path(path)] if path.suffix != ".parquet" else [])
        existing = [str(p) for p in written if p.exists()]
        if existing:
            raise UsageError(
                f"{' and '.join(existing)} already exist(s); pass --overwrite to replace them, "
                "or name another --output"
            )
    return path


def rows_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rows.jsonl")


class _TempFile:
    """A hidden file beside `target`, renamed onto it by commit(), removed by abort()."""

    def __init__(self, target: Path) -> None:
        self.target = target
        remove_dead_writers_temps(target)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(target), dir=target.parent)
        self.path = Path(name)
        self.handle = os.fdopen(fd, "w+b")

    def commit(self) -> None:
        self.handle.close()
        os.chmod(self.path, umask_mode())
        os.replace(self.path, self.target)

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


class EmbeddingFileWriter:
    """RecordWriter's interface (write/flush/close, plus abort) for vectors going to a file."""

    input_key = "text"  # every row keeps its text (search indexes and users need it)

    def __init__(self, output: Path, dimension: int) -> None:
        self.output, self.dimension = output, dimension
        self.kind = output.suffix
        self.rows = 0
        self._pending: list[dict] = []
        self._matrix = _TempFile(output)
        self._sidecar = None if self.kind == ".parquet" else _TempFile(rows_path(output))
        self._parquet = None
        self._row_schema = None
        if self.kind == ".npy":
            self._matrix.handle.write(b"\0" * NPY_HEADER_BYTES)
        elif self.kind == ".safetensors":
            self._matrix.handle.write(b"\0" * (8 + SAFETENSORS_HEADER_BYTES))

    def write(self, record: dict) -> None:
        if "error" not in record:  # bad records are reported on stderr, and have no vector
            self._pending.append(record)

    def flush(self) -> None:
        import numpy as np

        if not self._pending:
            return
        records, self._pending = self._pending, []
        matrix = np.asarray([r.pop("embedding") for r in records], dtype="<f4").reshape(-1, self.dimension)
        self.rows += len(records)
        if self.kind == ".parquet":
            self._write_parquet(records, matrix)
            return
        self._matrix.handle.write(matrix.tobytes())
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        self._sidecar.handle.write(lines.encode("utf-8"))

    def _write_parquet(self, records: list[dict], matrix) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:  # the first window's fields set the columns; later rows fit them or fail clearly
            columns = pa.Table.from_pylist(records, schema=self._row_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BgcliError(
                f"--output {self.output.name}: a field changes type between rows ({first_line(exc)}); "
                "use .npy or .safetensors (fields go to a JSONL side file)"
            ) from exc
        self._row_schema = columns.schema
        values = pa.array(matrix.reshape(-1), type=pa.float32())
        table = columns.append_column("embedding", pa.FixedSizeListArray.from_arrays(values, self.dimension))
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._matrix.handle, table.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        self.flush()
        if self.kind == ".npy":
            self._finish_npy()
        elif self.kind == ".safetensors":
            self._finish_safetensors()
        elif self._parquet is not None:
            self._parquet.close()
        else:  # no row at all: still a valid, empty file
            self._empty_parquet()
        self._matrix.commit()
        if self._sidecar is not None:
            self._sidecar.commit()

    def abort(self) -> None:
        self._matrix.abort()
        if self._sidecar is not None:
            self._sidecar.abort()

    def _finish_npy(self) -> None:
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({self.rows}, {self.dimension}), }}"
        body = header.encode("latin1").ljust(NPY_HEADER_BYTES - 10 - 1) + b"\n"
        handle = self._matrix.handle
        handle.seek(0)
        handle.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body)

    def _finish_safetensors(self) -> None:
        size = self.rows * self.dimension * 4
        header: dict[str, Any] = {
            "embeddings": {"dtype": "F32", "shape": [self.rows, self.dimension], "data_offsets": [0, size]}
        }
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        handle = self._matrix.handle
        handle.seek(0)
        handle.write(struct.pack("<Q", SAFETENSORS_HEADER_BYTES) + text.ljust(SAFETENSORS_HEADER_BYTES))

    def _empty_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("text", pa.string()), ("embedding", pa.list_(pa.float32(), self.dimension))])
        pq.write_table(schema.empty_table(), self._matrix.handle)
