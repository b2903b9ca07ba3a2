"""`bgcli tokenize`: a model's tokens for each text (engine: inference/tokenize.py)."""

from __future__ import annotations

from ...inference import tokenize
from ...io.output import RecordWriter

NAME = "tokenize"
HELP = "Split texts into a model's tokens: ids, counts, and whether they fit its length limit."
EXAMPLES = (
    'bgcli tokenize -m minilm "unbelievably long words"',
    "cat reviews.txt | bgcli tokenize -m minilm --max-length 128 | jq .fits",
)
CONFIG = tokenize.TokenizeConfig


def run(config: tokenize.TokenizeConfig) -> None:
    records = tokenize.input_records(config)
    tokenize.process(config, records, RecordWriter(config.format, text_key="tokens_text", columns=None))
