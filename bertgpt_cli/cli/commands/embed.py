"""`bgcli embed`: contextual embeddings as JSON Lines or a vectors file (engine: inference/embed.py)."""

from __future__ import annotations

from ...inference import embed
from ...io.output import RecordWriter

NAME = "embed"
HELP = "Embed texts: one vector per text (cls/mean/max pooling) or per token, JSONL or a .npy/.parquet file."
EXAMPLES = (
    'bgcli embed -m minilm "a gorgeous, witty movie" | jq -c ".embedding | length"',
    "bgcli embed -m minilm -i reviews.txt --output reviews.npy",
    'bgcli embed -m minilm --pooling tokens "New York" | jq -c ".tokens[] | [.token, .start, .end]"',
)


CONFIG = embed.EmbedConfig


def run(config: embed.EmbedConfig) -> None:
    embed.validate(config)
    records = embed.input_records(config)
    writer = RecordWriter(
        config.format,
        table_shows_input=True,
        table_cells={"embedding": short_vector, "tokens": short_tokens},
    )
    embed.process(config, records, writer)


def short_vector(vector) -> str:
    head = ", ".join(f"{x:.4f}" for x in vector[:4])
    return f"[{head}, ...] ({len(vector)} dims)"


def short_tokens(tokens) -> str:
    return " ".join(t["token"] for t in tokens) + f"  ({len(tokens)} tokens)"
