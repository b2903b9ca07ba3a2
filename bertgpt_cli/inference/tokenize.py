"""Tokenizing (`bgcli tokenize`, `api.tokenize`): how a model's tokenizer splits texts
(token counts, truncation checks)."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.console import warn
from ..io.records import RecordError, RecordStream, read_input_records, stream_to_writer
from ..models.resolution import load_tokenizer, resolve_model_options
from ..options import InputOptions, ModelOptions, OutputOptions, option


@dataclass
class TokenizeConfig(InputOptions, ModelOptions, OutputOptions):
    max_length: int | None = option(
        None, "Length limit to check against (default: the model's own limit).", panel="Tokenizer", ge=1
    )
    special_tokens: bool = option(
        True, "Add the model's special tokens ([CLS], [SEP], <s>...).", panel="Tokenizer"
    )
    batch_size: int = option(256, "Texts tokenized per call.", panel="Tokenizer", ge=1)


CONFIG = TokenizeConfig


def input_records(config: TokenizeConfig) -> RecordStream:
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def process(config: TokenizeConfig, records, writer) -> None:
    """Tokenize `records` into `writer`: what the CLI and the Python API both run."""
    resolved = resolve_model_options(config)
    tokenizer = load_tokenizer(resolved)
    limit = config.max_length or _model_limit(tokenizer)
    warned = []

    def process(batch):
        encoded = tokenizer([r.text for r in batch], add_special_tokens=config.special_tokens)
        results = []
        for ids in encoded["input_ids"]:
            if not ids:
                results.append(RecordError("the tokenizer produced no tokens for this text"))
                continue
            tokens = tokenizer.convert_ids_to_tokens(ids)
            too_long = limit is not None and len(ids) > limit
            if too_long and not warned:
                warned.append(True)
                warn(f"some texts are longer than the limit of {limit} tokens (see 'fits')")
            results.append(
                [
                    {
                        "tokens": tokens,
                        "input_ids": ids,
                        "num_tokens": len(ids),
                        "fits": not too_long,
                        "tokens_text": " ".join(tokens),
                    }
                ]
            )
        return results

    stream_to_writer(records, process, writer, config.batch_size)


def _model_limit(tokenizer) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a configured limit report a huge sentinel (int(1e30)).
    return limit if isinstance(limit, int) and limit < 1_000_000 else None
