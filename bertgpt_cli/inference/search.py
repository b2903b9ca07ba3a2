"""A saved semantic-search index: the corpus embeddings (safetensors), the corpus rows, and
what made them (model, pooling, corpus checksum), so a search with another model is refused.

Exact search: queries x corpus dot products in chunks read from the memory-mapped matrix, a
running top-k kept between chunks, so 100,000+ corpus rows search in bounded memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError

INDEX_FILE = "index.json"
MATRIX_FILE = "embeddings.safetensors"
ROWS_FILE = "embeddings.rows.jsonl"
INDEX_FORMAT = "bgcli-search-index"
SEARCH_CHUNK_ROWS = 65536  # corpus rows scored at once: 65,536 x 384 floats = 100 MB


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The index's index.json, None when `folder` does not exist; refuses other folders."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise UsageError(f"--index '{folder}' is a file; name a folder for the index")
    manifest = folder / INDEX_FILE
    if not manifest.is_file():
        if any(folder.iterdir()):
            raise UsageError(
                f"--index '{folder}' holds other files and no {INDEX_FILE}: not a bgcli index; "
                "name a new or empty folder"
            )
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BgcliError(
            f"'{manifest}' is not valid JSON ({exc}); delete the index and build it again"
        ) from exc
    if data.get("format") != INDEX_FORMAT:
        raise UsageError(f"--index '{folder}' is not a bgcli search index; name a new or empty folder")
    return data


@dataclass
class Hit:
    row: int
    score: float


class SearchIndex:
    """An index folder opened for searching: the matrix memory-mapped, rows read by offset."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder, self.manifest = folder, manifest
        self.rows_path = folder / ROWS_FILE
        self._offsets = self._row_offsets()
        if len(self._offsets) != manifest["rows"]:
            raise BgcliError(
                f"index '{folder}' is damaged ({len(self._offsets)} rows for {manifest['rows']} vectors); "
                "build it again"
            )

    def _row_offsets(self) -> list[int]:
        offsets, position = [], 0
        with self.rows_path.open("rb") as handle:
            for line in handle:
                offsets.append(position)
                position += len(line)
        return offsets

    def row(self, index: int) -> dict:
        with self.rows_path.open("rb") as handle:
            handle.seek(self._offsets[index])
            return json.loads(handle.readline())

    def search(self, queries, top_k: int) -> list[list[Hit]]:
        """Cosine similarity of each query vector with every corpus vector; the best `top_k`."""
        import torch
        from safetensors import safe_open

        queries = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)
        count = self.manifest["rows"]
        k = min(top_k, count)
        best_scores = torch.full((queries.shape[0], 0), float("-inf"))
        best_rows = torch.zeros((queries.shape[0], 0), dtype=torch.long)
        with safe_open(str(self.folder / MATRIX_FILE), framework="pt") as matrix_file:
            matrix = matrix_file.get_slice("embeddings")
            for start in range(0, count, SEARCH_CHUNK_ROWS):
                chunk = matrix[start : start + SEARCH_CHUNK_ROWS]
                if not self.manifest["normalize"]:
                    chunk = torch.nn.functional.normalize(chunk, dim=1)
                scores = torch.cat([best_scores, queries @ chunk.T], dim=1)
                rows = torch.cat(
                    [best_rows, torch.arange(start, start + chunk.shape[0]).expand(len(queries), -1)], 1
                )
                best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
                best_rows = rows.gather(1, picked)
        return [
            [Hit(int(r), float(s)) for r, s in zip(rows_, scores_, strict=True)]
            for rows_, scores_ in zip(best_rows.tolist(), best_scores.tolist(), strict=True)
        ]


def manifest_for(identity: dict, setup: Any, limit: int, dimension: int, corpus: Path) -> dict[str, Any]:
    from .. import __version__

    return {
        "format": INDEX_FORMAT,
        "bgcli": __version__,
        **identity,
        "pooling": setup.pooling,
        "normalize": setup.normalize,
        "max_length": limit,
        "dimension": dimension,
        "corpus": {
            "path": str(corpus.resolve()),
            "sha256": file_sha256(corpus),
            "bytes": corpus.stat().st_size,
        },
    }
