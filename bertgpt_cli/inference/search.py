"""A saved semantic-search index: the corpus embeddings (safetensors), the corpus rows, and
what made them (model, pooling, corpus checksum), so a search with another model is refused.

Exact search: queries x corpus dot products in chunks read from the memory-mapped matrix, a
running top-k kept between chunks, so 100,000+ corpus rows search in bounded memory.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line
from ..io.console import info, warn
from ..io.records import RecordsFailed, RecordStream, read_input_records, stream_to_writer
from ..options import InputOptions, ModelOptions, OutputOptions, option
from .embed import EmbeddingOptions
from .loading import InferenceOptions
from .rerank import RerankOptions, check_rerank_flags

PANEL = "Search"
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


class IndexDamaged(BgcliError):
    """The index's files do not match its index.json (a killed copy, a truncated file)."""


def damaged_index(folder: Path, manifest: dict) -> str | None:
    """What is wrong with a saved index's vectors and rows, None when they match index.json.
    Read from the safetensors header and the rows file only: nothing is loaded."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / MATRIX_FILE), framework="np") as matrix_file:
            shape = list(matrix_file.get_slice("embeddings").get_shape())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        return f"{MATRIX_FILE} cannot be read ({first_line(exc)})"
    if shape != [manifest.get("rows"), manifest.get("dimension")]:
        return f"{MATRIX_FILE} holds {shape[0]} x {shape[1]} vectors, index.json says {manifest.get('rows')}"
    rows = folder / ROWS_FILE
    if not rows.is_file():
        return f"{ROWS_FILE} is missing"
    with rows.open("rb") as handle:
        count = sum(1 for _ in handle)
    if count != manifest["rows"]:
        return f"{ROWS_FILE} has {count} rows for {manifest['rows']} vectors"
    return None


def stale_corpus(manifest: dict) -> str | None:
    """The corpus an index was built from, when it has changed since (same path, new content)."""
    corpus = Path(manifest.get("corpus", {}).get("path", ""))
    if corpus.is_file() and corpus_changed(manifest, corpus):
        return str(corpus)
    return None


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


@dataclass
class SearchConfig(
    InputOptions, ModelOptions, OutputOptions, InferenceOptions, EmbeddingOptions, RerankOptions
):
    model: str | None = option(
        None,
        "Embedding model: a local dir, Hub id or alias. Default: the --index's model, else minilm.",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    corpus: str | None = option(
        None,
        "The texts to search: one per line, or JSON Lines (other fields come back with each hit).",
        panel=PANEL,
        metavar="FILE",
    )
    corpus_field: str = option("text", "JSONL field holding the corpus text.", panel=PANEL, metavar="FIELD")
    index: str | None = option(
        None,
        "Keep the corpus embeddings in DIR and reuse them (rebuilt when --corpus changes); "
        "alone, search a saved index.",
        panel=PANEL,
        metavar="DIR",
    )
    top_k: int = option(5, "Hits per query.", short="-k", panel=PANEL, ge=1)


CONFIG = SearchConfig


def validate(config: SearchConfig) -> None:
    """What can be checked before any model loads: the pooling, the index, the corpus."""
    if config.pooling == "tokens":
        raise UsageError("search compares one vector per text: choose a sentence --pooling, not tokens")
    check_rerank_flags(config.rerank, config.rerank_top, config.top_k)
    corpus_path(config.corpus, read_manifest(Path(config.index)) if config.index else None)


def input_records(config: SearchConfig) -> RecordStream:
    """The queries."""
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def process(config: SearchConfig, queries, writer) -> None:
    """The hits for each query into `writer`, building (or reusing) the corpus index first:
    what the CLI and the Python API both run."""
    validate(config)
    index_dir = Path(config.index) if config.index else None
    manifest = read_manifest(index_dir) if index_dir else None
    corpus = corpus_path(config.corpus, manifest)
    if config.model is None:
        config.model = manifest["model"] if manifest else "minilm"
    from ..models.resolution import resolve_model_options
    from .embed import load_embedder, model_identity

    resolved = resolve_model_options(config)
    embedder = load_embedder(config, resolved)
    identity = model_identity(resolved)
    corpus_failure = None
    if manifest is not None:
        refuse_other_model(index_dir, manifest, identity, embedder)
        problem = damaged_index(index_dir, manifest)
        if problem and corpus is None:
            raise IndexDamaged(
                f"index '{index_dir}' is damaged ({problem}); rebuild it: --index {index_dir} "
                f"--corpus {manifest['corpus']['path']}"
            )
        if problem:
            warn(f"index '{index_dir}' is damaged ({problem}); rebuilding it from {corpus}")
            manifest = None
        elif corpus is None and (changed := stale_corpus(manifest)):
            warn(
                f"the corpus {changed} changed since index '{index_dir}' was built; the hits come "
                f"from the old one: pass --corpus {changed} to rebuild"
            )
    if manifest is None or (corpus is not None and corpus_changed(manifest, corpus)):
        index_dir, corpus_failure = build_index(index_dir, corpus, embedder, identity, config)
    run_queries(index_dir, queries, embedder, config, writer)
    if corpus_failure is not None:
        raise corpus_failure


def corpus_path(corpus: str | None, manifest: dict | None) -> Path | None:
    if corpus is None:
        if manifest is None:
            raise UsageError("pass --corpus FILE (the texts to search), or --index DIR of a saved index")
        return None
    path = Path(corpus)
    if not path.is_file():
        raise UsageError(f"--corpus file '{corpus}' not found; pass a text or JSONL file")
    return path


def corpus_changed(manifest: dict, corpus: Path) -> bool:
    return manifest["corpus"]["sha256"] != file_sha256(corpus)


def refuse_other_model(index_dir: Path, manifest: dict, identity: dict, embedder) -> None:
    """Vectors of two models (or two poolings) are not comparable: their scores would be noise."""
    if (manifest["model"], manifest.get("revision")) != (identity["model"], identity["revision"]):
        raise UsageError(
            f"index '{index_dir}' was built with model '{manifest['model']}', not '{identity['model']}'; "
            f"search it with -m {manifest['model']} (or build another index for this model)"
        )
    setup = embedder.setup
    ours = (setup.pooling, setup.normalize, embedder.limit)
    theirs = (manifest["pooling"], manifest["normalize"], manifest["max_length"])
    if ours != theirs:
        raise UsageError(
            f"index '{index_dir}' was built with pooling {theirs[0]}, normalize {theirs[1]}, max length "
            f"{theirs[2]}; this search asks for {ours[0]}, {ours[1]}, {ours[2]}: drop those flags or "
            "build another index"
        )


def build_index(index_dir: Path | None, corpus: Path, embedder, identity: dict, config: SearchConfig):
    """Embed the corpus into `index_dir` (written atomically), or into a temporary folder when
    no --index was given. Bad corpus lines are reported and left out; the failure is returned
    so the search still runs and the exit status is 1 at the end."""
    from ..io.atomic import save_dir_atomically, write_text_atomically
    from ..io.embedding_files import EmbeddingFileWriter
    from .embed import embed_stream

    failure: list[RecordsFailed] = []

    def write(folder: Path) -> None:
        records = read_input_records([], str(corpus), "auto", config.corpus_field)
        rows = (record for record in records if not record.blank)
        writer = EmbeddingFileWriter(folder / MATRIX_FILE, embedder.dimension)
        try:
            count = embed_stream(rows, embedder, writer, config.batch_size, with_line=True)
        except RecordsFailed as exc:
            failure.append(exc)
            count = writer.rows
        if count == 0:
            raise UsageError(f"--corpus '{corpus}' has no usable text")
        manifest = manifest_for(identity, embedder.setup, embedder.limit, embedder.dimension, corpus)
        manifest["rows"] = count
        import json

        write_text_atomically(folder / INDEX_FILE, json.dumps(manifest, indent=2) + "\n")

    info(f"embedding the corpus {corpus}")
    if index_dir is None:
        index_dir = Path(tempfile.mkdtemp(prefix="bgcli-search-"))
        import atexit
        import shutil

        atexit.register(shutil.rmtree, index_dir, True)
        write(index_dir)
    else:
        save_dir_atomically(index_dir, write)
        info(f"index saved to {index_dir}")
    return index_dir, (failure[0] if failure else None)


def run_queries(index_dir: Path, queries, embedder, config: SearchConfig, writer) -> None:
    index = SearchIndex(index_dir, read_manifest(index_dir))
    reranker = None
    if config.rerank:
        from .rerank import load_reranker

        reranker = load_reranker(config.rerank, config, config.offline, config.trust_remote_code)
        info(f"re-ranking the top {config.rerank_top} hits with {config.rerank}")

    def search(batch) -> list:
        texts = [record.text for record in batch]
        depth = max(config.top_k, config.rerank_top) if reranker else config.top_k
        results = index.search(embedder.encode(texts), depth)
        if reranker is not None:
            return [
                reranked_records(text, hits, index, reranker, config.top_k)
                for text, hits in zip(texts, results, strict=True)
            ]
        return [
            [hit_record(text, rank, hit, index) for rank, hit in enumerate(hits, start=1)]
            for text, hits in zip(texts, results, strict=True)
        ]

    stream_to_writer(queries, search, writer, window=config.batch_size)


def reranked_records(query: str, hits: list[Hit], index, reranker, top_k: int) -> list[dict]:
    """The hits in the cross-encoder's order, each with both scores and its first-stage rank."""
    from .rerank import rerank_hits

    records = [hit_record(query, rank, hit, index) for rank, hit in enumerate(hits, start=1)]
    passages = [str(record["text"]) for record in records]  # every index row keeps its text
    chosen = []
    for rank, (position, score) in enumerate(rerank_hits(reranker, query, passages)[:top_k], start=1):
        record = records[position]
        first_stage = {"retrieval_rank": record.pop("rank"), "score": record.pop("score")}
        chosen.append({"query": query, "rank": rank, "rerank_score": score, **first_stage, **record})
    return chosen


def hit_record(query: str, rank: int, hit, index) -> dict:
    row = index.row(hit.row)
    line = row.pop("line", None)
    return {"query": query, "rank": rank, "score": hit.score, **row, "corpus_line": line}
