"""Named entities (`bgcli ner`, `api.ner`, the server's /v1/ner) with character offsets, equal
to `pipeline("token-classification")`.

The entities come from the pipeline's own post-processing (gather, aggregate, merge of
overlapping windows), so labels, spans, offsets and scores are the pipeline's. What
differs is around it: texts are run in length-sorted padded batches instead of one at a
time, and a text longer than the model's window is always read whole, in overlapping
windows (the pipeline truncates unless the caller passes `stride`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..io.records import RecordStream, read_input_records, stream_to_writer
from ..models.heads import require_head
from ..options import OUTPUT_FORMATS, InputOptions, ModelOptions, OutputOptions, ServerOptions, option
from .loading import (
    InferenceOptions,
    load_for_inference,
    model_max_length,
    padded_batch,
    process_sorted,
)

PANEL = "NER"
AGGREGATIONS = ("simple", "first", "average", "max", "none")


@dataclass
class NerConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, ServerOptions):
    model: str | None = option(
        None,
        "Token-classification model: a `finetune --task ner` run dir or a Hub id (required).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    aggregation: str = option(
        "simple",
        "How sub-word predictions become entities, as the pipeline's aggregation_strategy; "
        "none: one record per token.",
        choices=AGGREGATIONS,
        panel=PANEL,
    )
    min_score: float = option(0.0, "Drop entities scored below this.", panel=PANEL, ge=0, le=1)
    stride: int | None = option(
        None,
        "Tokens shared by neighbouring windows of a text longer than the model's window "
        "(default: a quarter of the window, at most 128).",
        panel=PANEL,
        ge=0,
    )
    format: str | None = option(
        None,
        "Output format. Default: a table on a terminal, JSON Lines when piped; conll: "
        "token<TAB>tag lines, a blank line between texts.",
        short="-f",
        choices=(*OUTPUT_FORMATS, "conll"),
        panel="Output",
    )


CONFIG = NerConfig


def validate(config: NerConfig) -> None:
    if not config.model:
        raise UsageError("pass the model with --model/-m: a `bgcli finetune --task ner` run dir or a Hub id")


def input_records(config: NerConfig) -> RecordStream:
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def window(config: NerConfig) -> int:
    """Records read ahead and sorted by length together."""
    return config.batch_size * 8


def process(config: NerConfig, records, writer, loaded=None) -> None:
    """Find the entities of `records` into `writer`: what the CLI and the Python API both run."""
    loaded = load(config) if loaded is None else loaded
    stream_to_writer(records, processor(loaded, config), writer, window=window(config))


def load(config: NerConfig):
    """The heavy part (kept warm by `bgcli serve`): the token classifier and its tokenizer."""
    from transformers import AutoModelForTokenClassification

    return load_for_inference(
        config,
        config,
        AutoModelForTokenClassification,
        "token classification",
        check=require_token_classifier,
        trained_by="bgcli finetune --task ner",
    )


def processor(loaded, config: NerConfig):
    model, tokenizer = loaded
    return Recognizer(model, tokenizer, config).recognize


def require_token_classifier(resolved, config) -> None:
    """A bare encoder or a sentence classifier would give random tags: refuse it."""
    remedy = "fine-tune one (`bgcli finetune --task ner`) or pass an NER model"
    require_head(resolved, config, "ner", remedy)


def default_stride(window: int) -> int:
    return min(128, window // 4)


class Recognizer:
    def __init__(self, model, tokenizer, config: NerConfig):
        from transformers import TokenClassificationPipeline
        from transformers.pipelines.token_classification import AggregationStrategy

        if not tokenizer.is_fast:
            raise UsageError(
                f"the tokenizer of '{config.model}' is a slow one: character offsets and windows need "
                "a fast tokenizer (a tokenizer.json)"
            )
        self.model, self.tokenizer, self.config = model, tokenizer, config
        # Only its post-processing is used: the pipeline's own entity grouping, on our logits.
        self.pipeline = TokenClassificationPipeline(model=model, tokenizer=tokenizer, device=model.device)
        self.strategy = AggregationStrategy[config.aggregation.upper()]
        self.limit = model_max_length(tokenizer, model)
        room = self.limit - tokenizer.num_special_tokens_to_add()
        self.stride = config.stride if config.stride is not None else default_stride(room)
        if self.stride >= room:
            raise UsageError(
                f"--stride {self.stride} leaves no new tokens per window: this model reads {room} "
                f"tokens at a time; use a stride below {room}"
            )

    def recognize(self, records) -> list:
        texts = [record.text for record in records]
        encoded = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.limit,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        lengths = [len(ids) for ids in encoded["input_ids"]]
        logits = process_sorted(lengths, self.config.batch_size, lambda batch: self._forward(encoded, batch))
        windows: list[list[int]] = [[] for _ in texts]
        for window, text_index in enumerate(encoded["overflow_to_sample_mapping"]):
            windows[text_index].append(window)
        return [
            [{"entities": self._entities(text, encoded, chunks, logits)}]
            for text, chunks in zip(texts, windows, strict=True)
        ]

    def _forward(self, encoded, batch: list[int]) -> list:
        import torch

        padded = padded_batch(self.tokenizer, encoded, batch, self.model.device)
        with torch.inference_mode():
            logits = self.model(**padded).logits.float().cpu()
        return [logits[row, : len(encoded["input_ids"][i])] for row, i in enumerate(batch)]

    def _entities(self, text: str, encoded, windows: list[int], logits: list) -> list[dict[str, Any]]:
        import torch

        outputs = [
            {
                "logits": logits[w][None],
                "input_ids": [encoded["input_ids"][w]],
                "offset_mapping": [encoded["offset_mapping"][w]],
                "special_tokens_mask": torch.tensor([encoded["special_tokens_mask"][w]]),
                "sentence": text,
            }
            for w in windows
        ]
        entities = self.pipeline.postprocess(outputs, aggregation_strategy=self.strategy)
        return [plain(e) for e in entities if e["score"] >= self.config.min_score]


def plain(entity: dict) -> dict[str, Any]:
    """The pipeline's dict with numpy numbers as JSON numbers."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in entity.items()}
