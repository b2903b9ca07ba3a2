"""`bgcli search`: semantic search, the corpus texts most similar to each query by cosine of
their embeddings (the same vectors `bgcli embed` gives). `--index DIR` keeps the corpus
embeddings, so later searches embed only the queries."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError
from ...inference.embed import EmbeddingOptions
from ...inference.loading import InferenceOptions
from ...io.console import info
from ...io.output import RecordWriter
from ...io.records import RecordsFailed, read_input_records, stream_to_writer
from ...options import InputOptions, ModelOptions, OutputOptions, option

NAME = "search"
HELP = "Semantic search: the corpus texts closest to each query (cosine of embeddings), with scores."
PANEL = "Search"
EXAMPLES = (
    'bgcli search -m minilm --corpus reviews.txt "a funny film about friendship" --top-k 3',
    'bgcli search -m minilm --corpus reviews.txt --index reviews-index "boring plot"',
    "cat queries.txt | bgcli search --index reviews-index | jq -c '{query, score, text}'",
)


@dataclass
class SearchConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, EmbeddingOptions):
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


def run(config: SearchConfig) -> None:
    from ...inference.search import read_manifest

    if config.pooling == "tokens":
        raise UsageError("search compares one vector per text: choose a sentence --pooling, not tokens")
    index_dir = Path(config.index) if config.index else None
    manifest = read_manifest(index_dir) if index_dir else None
    corpus = corpus_path(config.corpus, manifest)
    queries = read_input_records(config.texts, config.input, config.input_format, config.text_field)
    if config.model is None:
        config.model = manifest["model"] if manifest else "minilm"
    from ...inference.embed import load_embedder, model_identity
    from ...models.resolution import resolve_model_options

    resolved = resolve_model_options(config)
    embedder = load_embedder(config, resolved)
    identity = model_identity(resolved)
    corpus_failure = None
    if manifest is not None:
        refuse_other_model(index_dir, manifest, identity, embedder)
    if manifest is None or (corpus is not None and corpus_changed(manifest, corpus)):
        index_dir, corpus_failure = build_index(index_dir, corpus, embedder, identity, config)
    run_queries(index_dir, queries, embedder, config)
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
    from ...inference.search import file_sha256

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
    from ...inference.search import INDEX_FILE, MATRIX_FILE, manifest_for
    from ...io.atomic import save_dir_atomically, write_text_atomically
    from ...io.embedding_files import EmbeddingFileWriter
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


def run_queries(index_dir: Path, queries, embedder, config: SearchConfig) -> None:
    from ...inference.search import SearchIndex, read_manifest

    index = SearchIndex(index_dir, read_manifest(index_dir))

    def search(batch) -> list:
        texts = [record.text for record in batch]
        results = index.search(embedder.encode(texts), config.top_k)
        return [
            [hit_record(text, rank, hit, index) for rank, hit in enumerate(hits, start=1)]
            for text, hits in zip(texts, results, strict=True)
        ]

    writer = RecordWriter(config.format, columns=None, text_key="text")
    stream_to_writer(queries, search, writer, window=config.batch_size)


def hit_record(query: str, rank: int, hit, index) -> dict:
    row = index.row(hit.row)
    line = row.pop("line", None)
    return {"query": query, "rank": rank, "score": hit.score, **row, "corpus_line": line}
