"""`bgcli ner`: named entities with character offsets (engine: inference/ner.py); the
highlighted terminal table and the CoNLL output live here."""

from __future__ import annotations

from ...inference import ner
from ...io.output import RecordWriter
from ...serving.client import remote_or_local

NAME = "ner"
HELP = "Find named entities (people, places, ...) with character offsets; whole documents, any length."
EXAMPLES = (
    'bgcli ner -m runs/ner "Angela Merkel met Emmanuel Macron in Paris."',
    "cat news.jsonl | bgcli ner -m runs/ner --min-score 0.5 | jq -c '[.entities[] | {entity_group, word}]'",
    "bgcli ner -m runs/ner -i news.txt --format conll",
)
CONFIG = ner.NerConfig


def run(config: ner.NerConfig) -> None:
    ner.validate(config)
    records = ner.input_records(config)
    if config.format != "conll":  # CoNLL rows need the tokenizer's words: local only
        writer = EntityWriter(config.format, None)
        if remote_or_local(NAME, config, records, writer, window=ner.window(config)):
            return
    loaded = ner.load(config)
    ner.process(config, records, EntityWriter(config.format, loaded[1]), loaded)


# Terminal colours per entity type (the CoNLL types; others cycle through the rest).
TYPE_STYLES = {"PER": "bold magenta", "ORG": "bold cyan", "LOC": "bold green", "MISC": "bold yellow"}
OTHER_STYLES = ("bold blue", "bold red", "bold bright_magenta", "bold bright_cyan", "bold bright_green")


def entity_type(entity: dict) -> str:
    from ...io.tagging import split_tag

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

        from ...io.console import make_console

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
    from ...io.tagging import spans_to_word_tags, to_bio, words_with_offsets

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
