"""`bgcli search`: semantic search over a corpus by cosine of embeddings (engine: inference/search.py)."""

from __future__ import annotations

from ...inference import search
from ...io.output import RecordWriter

NAME = "search"
HELP = (
    "Semantic search: the corpus texts closest to each query (cosine of embeddings), with scores; "
    "--rerank re-scores the top hits with a cross-encoder."
)
EXAMPLES = (
    'bgcli search -m minilm --corpus reviews.txt "a funny film about friendship" --top-k 3',
    'bgcli search -m minilm --corpus reviews.txt --index reviews-index "boring plot"',
    "cat queries.txt | bgcli search --index reviews-index | jq -c '{query, score, text}'",
    'bgcli search -m runs/emb --index docs-index --rerank runs/rerank --rerank-top 20 "how do I reset it"',
)
CONFIG = search.SearchConfig


def run(config: search.SearchConfig) -> None:
    search.validate(config)
    queries = search.input_records(config)
    search.process(config, queries, RecordWriter(config.format, columns=None, text_key="text"))
