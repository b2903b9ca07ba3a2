"""`bgcli ner`: named entities with character offsets, equal to `pipeline("token-classification")`.

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
from ..io.output import RecordWriter
from ..io.records import read_input_records, stream_to_writer
from ..options import OUTPUT_FORMATS, InputOptions, ModelOptions, OutputOptions, ServerOptions, option
from ..serving.client import remote_or_local
from .loading import (
    InferenceOptions,
    load_for_inference,
    model_max_length,
    padded_batch,
    process_sorted,
    require_head,
)

NAME = "ner"
HELP = "Find named entities (people, places, ...) with character offsets; whole documents, any length."
PANEL = "NER"
AGGREGATIONS = ("simple", "first", "average", "max", "none")
EXAMPLES = (
    'bgcli ner -m runs/ner "Angela Merkel met Emmanuel Macron in Paris."',
    "cat news.jsonl | bgcli ner -m runs/ner --min-score 0.5 | jq -c '[.entities[] | {entity_group, word}]'",
    "bgcli ner -m runs/ner -i news.txt --format conll",
)


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


def run(config: NerConfig) -> None:
    if not config.model:
        raise UsageError("pass the model with --model/-m: a `bgcli finetune --task ner` run dir or a Hub id")
    records = read_input_records(config.texts, config.input, config.input_format, config.text_field)
    if config.format != "conll":  # CoNLL rows need the tokenizer's words: local only
        writer = EntityWriter(config.format, None)
        if remote_or_local(NAME, config, records, writer, window=config.batch_size * 8):
            return
    loaded = load(config)
    writer = EntityWriter(config.format, loaded[1])
    stream_to_writer(records, processor(loaded, config), writer, window=config.batch_size * 8)


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
    require_head(resolved, config, "ForTokenClassification", "token-classification", remedy)


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


# Terminal colours per entity type (the CoNLL types; others cycle through the rest).
TYPE_STYLES = {"PER": "bold magenta", "ORG": "bold cyan", "LOC": "bold green", "MISC": "bold yellow"}
OTHER_STYLES = ("bold blue", "bold red", "bold bright_magenta", "bold bright_cyan", "bold bright_green")


def entity_type(entity: dict) -> str:
    from ..io.tagging import split_tag

    return entity.get("entity_group") or split_tag(entity.get("entity", "O"))[1]


class EntityWriter(RecordWriter):
    """Adds two views to the record formats: a terminal table with each text's entities
    highlighted by type (as displaCy does), and CoNLL token<TAB>tag lines."""

    def __init__(self, fmt: str | None, tokenizer) -> None:
        super().__init__(fmt, text_key="entities", table_shows_input=True)
        self.tokenizer = tokenizer
        if self.format == "conll":
            self.input_key = "text"  # the tags are laid over the text's words

    def write(self, record: dict) -> None:
        if self.format != "conll":
            super().write(record)
        elif "error" not in record:
            self._write_conll(record)

    def _write_conll(self, record: dict) -> None:
        import sys

        rows = conll_rows(record["text"], record["entities"], self.tokenizer)
        sys.stdout.write("".join(f"{word}\t{tag}\n" for word, tag in rows) + "\n")

    def _write_table(self) -> None:
        from rich.table import Table

        from ..io.console import make_console

        if not self._held:
            return
        table = Table(show_lines=False)
        table.add_column("text", overflow="fold", ratio=3)
        table.add_column("entities", overflow="fold", ratio=2)
        styles: dict[str, str] = {}
        for record in self._held:
            if "error" in record:
                table.add_row(f"line {record['line']}: {record['error']}", "", style="red")
                continue
            table.add_row(
                highlighted(record["text"], record["entities"], styles), entity_list(record["entities"])
            )
        make_console(stderr=False).print(table)


def style_for(kind: str, styles: dict[str, str]) -> str:
    if kind not in styles:
        styles[kind] = TYPE_STYLES.get(kind) or OTHER_STYLES[len(styles) % len(OTHER_STYLES)]
    return styles[kind]


def highlighted(text: str, entities: list[dict], styles: dict[str, str]):
    """The text with each entity in its type's style and the type after it, dimmed."""
    from rich.text import Text

    shown = Text()
    position = 0
    for entity in sorted(entities, key=lambda e: e["start"]):
        start, end = entity["start"], entity["end"]
        if start < position:  # per-token entities (--aggregation none) of one word
            continue
        kind = entity_type(entity)
        shown.append(text[position:start])
        shown.append(text[start:end], style=style_for(kind, styles))
        shown.append(f" {kind}", style="dim")
        position = end
    shown.append(text[position:])
    return shown


def entity_list(entities: list[dict]) -> str:
    return ", ".join(f"{e['word']} ({entity_type(e)} {e['score']:.2f})" for e in entities)


def conll_rows(text: str, entities: list[dict], tokenizer) -> list[tuple[str, str]]:
    """The tokenizer's words with BIO tags from the entities' character spans."""
    from ..io.tagging import spans_to_word_tags, to_bio, words_with_offsets

    words = words_with_offsets(text, tokenizer)
    if entities and "entity" in entities[0]:  # --aggregation none: a tag per token
        tags = [_first_token_tag(entities, start, end) for _, (start, end) in words]
        return list(zip((w for w, _ in words), to_bio(tags)[0], strict=True))
    spans = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        if spans and entity["start"] < spans[-1]["end"]:
            continue  # --aggregation none: sub-tokens of a word already tagged
        spans.append({"start": entity["start"], "end": entity["end"], "label": entity_type(entity)})
    tags, _ = to_bio(spans_to_word_tags(words, spans, "entities"))
    return [(word, tag) for (word, _), tag in zip(words, tags, strict=True)]


def _first_token_tag(entities: list[dict], start: int, end: int) -> str:
    inside = [e for e in entities if start <= e["start"] < end]
    return min(inside, key=lambda e: e["start"])["entity"] if inside else "O"
