"""`bgcli embed`: contextual embeddings, one vector per text (or per token), as JSON Lines or
streamed into a .npy / .safetensors / .parquet file. Equal to SentenceTransformer.encode for
sentence-transformers models (their pooling and normalisation are read from the model dir)."""

from __future__ import annotations

from dataclasses import dataclass

from ...inference.embed import EmbeddingOptions
from ...inference.loading import InferenceOptions
from ...io.console import info
from ...io.output import RecordWriter
from ...io.records import raise_if_failed, read_input_records, run_stream
from ...options import InputOptions, ModelOptions, OutputOptions, option

NAME = "embed"
HELP = "Embed texts: one vector per text (cls/mean/max pooling) or per token, JSONL or a .npy/.parquet file."
EXAMPLES = (
    'bgcli embed -m minilm "a gorgeous, witty movie" | jq -c ".embedding | length"',
    "bgcli embed -m minilm -i reviews.txt --output reviews.npy",
    'bgcli embed -m minilm --pooling tokens "New York" | jq -c ".tokens[] | [.token, .start, .end]"',
)


@dataclass
class EmbedConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, EmbeddingOptions):
    output: str | None = option(
        None,
        "Write the vectors to FILE.npy, .safetensors or .parquet (streamed, input order) instead "
        "of JSONL on stdout; .npy/.safetensors rows' text and fields go to FILE.rows.jsonl.",
        short="-o",
        panel="Output",
        metavar="FILE",
    )


CONFIG = EmbedConfig


def run(config: EmbedConfig) -> None:
    from ...inference.embed import check_pooling_flags

    check_pooling_flags(config.pooling, config.output)
    path = None
    if config.output:
        from ...io.embedding_files import check_output_path

        path = check_output_path(config.output)
    records = read_input_records(config.texts, config.input, config.input_format, config.text_field)
    from ...inference.embed import load_embedder

    embedder = load_embedder(config)
    setup = embedder.setup
    info(
        f"pooling: {setup.pooling}{', normalised' if setup.normalize else ''} ({setup.source}); "
        f"{embedder.dimension} dimensions, up to {embedder.limit} tokens per text"
    )
    if path is None:
        writer = RecordWriter(
            config.format,
            table_shows_input=True,
            table_cells={"embedding": short_vector, "tokens": short_tokens},
        )
        embed_stream(records, embedder, writer, config.batch_size, with_line=False)
        return
    from ...io.embedding_files import EmbeddingFileWriter, rows_path

    writer = EmbeddingFileWriter(path, embedder.dimension)
    rows = embed_stream(records, embedder, writer, config.batch_size, with_line=True)
    sidecar = f" (rows: {rows_path(path)})" if path.suffix != ".parquet" else ""
    info(f"wrote {rows} x {embedder.dimension} embeddings to {path}{sidecar}")


def embed_stream(records, embedder, writer, batch_size: int, with_line: bool) -> int:
    """Run the records into `writer`; a file writer is committed only when the stream ends
    (bad records included: the good rows stay), and removed if it is interrupted."""

    def process(batch):
        if embedder.setup.pooling == "tokens":
            return [
                [{"tokens": [_token_record(t) for t in tokens]}]
                for tokens in embedder.token_vectors([r.text for r in batch])
            ]
        vectors = embedder.encode([r.text for r in batch])
        if with_line:
            return [[{"line": r.line, "embedding": v}] for r, v in zip(batch, vectors, strict=True)]
        return [[{"embedding": json_vector(v)}] for v in vectors]

    window = batch_size * 8 if embedder.setup.pooling != "tokens" else batch_size
    try:
        ok, failed = run_stream(records, process, writer.write, window, writer.flush, writer.input_key)
    except BaseException:
        if hasattr(writer, "abort"):
            writer.abort()
        else:
            writer.close()
        raise
    writer.close()
    raise_if_failed(ok, failed)
    return ok


def _token_record(token: dict) -> dict:
    return {**token, "embedding": json_vector(token["embedding"].cpu().numpy())}


def json_vector(vector) -> list[float]:
    """float32 values with the 9 significant digits that round-trip a float32 exactly
    (a plain float() of a float32 prints 17 digits: twice the bytes for no information)."""
    return [float(f"{x:.9g}") for x in vector.tolist()]


def short_vector(vector) -> str:
    head = ", ".join(f"{x:.4f}" for x in vector[:4])
    return f"[{head}, ...] ({len(vector)} dims)"


def short_tokens(tokens) -> str:
    return " ".join(t["token"] for t in tokens) + f"  ({len(tokens)} tokens)"
