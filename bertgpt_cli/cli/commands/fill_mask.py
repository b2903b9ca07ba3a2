"""`bgcli fill-mask`: predict masked tokens (engine: inference/fill_mask.py)."""

from __future__ import annotations

from ...inference import fill_mask
from ...io.output import RecordWriter
from ...serving.client import remote_or_local

NAME = "fill-mask"
HELP = "Predict the [MASK] tokens of each text (BERT-style masked LMs); same answers as transformers."
EXAMPLES = (
    'bgcli fill-mask -m runs/mlm "This movie was [MASK]."',
    'bgcli fill-mask -m bert-base-uncased --top-k 3 "Paris is the [MASK] of France."',
    "cat sentences.txt | bgcli fill-mask -m runs/mlm --targets good,bad | jq .predictions",
)
CONFIG = fill_mask.FillMaskConfig


def run(config: fill_mask.FillMaskConfig) -> None:
    records = fill_mask.input_records(config)
    writer = RecordWriter(
        config.format,
        text_key="predictions",
        table_cells={"predictions": predictions_cell},
        table_shows_input=True,
    )
    if remote_or_local(NAME, config, records, writer, window=fill_mask.window(config)):
        return
    fill_mask.process(config, records, writer)


def predictions_cell(predictions: list) -> str:
    """`great 0.412, good 0.203` per mask (masks separated by ` | `) for the terminal table."""
    per_mask = predictions if predictions and isinstance(predictions[0], list) else [predictions]
    return " | ".join(", ".join(f"{p['token_str']} {p['score']:.3f}" for p in mask) for mask in per_mask)
