"""`bgcli tokenizer train`: a WordPiece (BERT) or byte-level BPE (GPT-2) vocabulary learned
from your own corpus, ready for `bgcli pretrain --tokenizer DIR`."""

from __future__ import annotations

from ...io.output import write_record
from ...training import tokenizer_training
from ..typer_options import PlainHelpCommand, command_group, examples_epilog, typer_command

NAME = "tokenizer"
HELP = "Train a tokenizer from scratch: WordPiece (BERT) or byte-level BPE (GPT-2)."
EXAMPLES = (
    "bgcli tokenizer train --type wordpiece --vocab-size 8000 --train-data movie-reviews@train -o tok/wp8k",
    "bgcli tokenizer train --type bpe --vocab-size 16000 --train-data corpus.txt -o tok/bpe16k",
)
CONFIG = tokenizer_training.TokenizerTrainConfig


def train(config: tokenizer_training.TokenizerTrainConfig) -> None:
    show_report(tokenizer_training.run(config), config.format)


def show_report(report: dict, fmt: str | None) -> None:
    """One record: the report as JSON when piped, a two-column table on a terminal."""
    write_record(report, fmt, text_key="output", title="bgcli tokenizer train")


APP = command_group(HELP, EXAMPLES)
APP.command(
    "train",
    help="Learn a WordPiece or byte-level BPE vocabulary from a corpus (streamed, never all in memory); "
    "writes a folder AutoTokenizer.from_pretrained loads, and reports tokens per word, the unknown-token "
    "rate on held-out records and the longest tokens.",
    epilog=examples_epilog(EXAMPLES),
    cls=PlainHelpCommand,
)(typer_command(tokenizer_training.TokenizerTrainConfig, train))
