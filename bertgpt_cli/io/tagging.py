"""Token tags for NER: reading CoNLL column files, detecting the tag scheme (IO, IOB1, BIO,
BIOES, BILOU) and normalising it to BIO, and turning character spans into word tags.

BIO is what the saved `id2label` uses: `pipeline("token-classification")` groups entities
by the `B-`/`I-` prefixes, and seqeval reads them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

TAG_SCHEMES = ("auto", "io", "iob1", "bio", "bioes", "bilou")
# The prefix each scheme's chunk tags become in BIO (single/end/last/unit fold into B/I).
TO_BIO_PREFIX = {"B": "B", "I": "I", "E": "I", "L": "I", "S": "B", "U": "B"}
DOCSTART = "-DOCSTART-"


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); a bare 'PER' (IO without prefixes) -> ('I', 'PER')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix.upper() in TO_BIO_PREFIX and kind:
        return prefix.upper(), kind
    return "I", tag


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme a corpus uses, judged from its prefixes (and where B- appears)."""
    prefixes: set[str] = set()
    b_after_outside = False  # B- opening a chunk after O / another type: BIO, not IOB1
    for tags in sequences:
        previous = ("O", "")
        for tag in tags:
            prefix, kind = split_tag(tag)
            prefixes.add(prefix)
            if prefix == "B" and (previous[0] == "O" or previous[1] != kind):
                b_after_outside = True
            previous = (prefix, kind)
    if prefixes & {"E", "S"}:
        return "bioes"
    if prefixes & {"L", "U"}:
        return "bilou"
    if "B" not in prefixes:
        return "io"
    return "bio" if b_after_outside else "iob1"


def to_bio(tags: Sequence[str]) -> tuple[list[str], int]:
    """BIO tags for any scheme, and how many invalid starts were repaired: an `I-X` that
    follows `O` or another type opens a chunk, as seqeval reads it, so it becomes `B-X`."""
    bio: list[str] = []
    repaired = 0
    previous_kind = ""
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "O":
            bio.append("O")
            previous_kind = ""
            continue
        prefix = TO_BIO_PREFIX[prefix]
        if prefix == "I" and previous_kind != kind:
            prefix = "B"
            repaired += 1
        bio.append(f"{prefix}-{kind}")
        previous_kind = kind
    return bio, repaired


def ordered_labels(tags: Iterable[str]) -> list[str]:
    """The label set as saved in id2label: `O` first, then sorted (deterministic ids)."""
    present = set(tags)
    return ["O", *sorted(present - {"O"})]


@dataclass
class ConllSentences:
    tokens: list[list[str]]
    tags: list[list[str]]


def read_conll(path: Path, spec: str, tag_column: int | None = None) -> ConllSentences:
    """Whitespace- or tab-separated columns: the token first, the tag last (or in column
    `tag_column`, counted from 1); a blank line ends a sentence; -DOCSTART- lines are skipped."""
    sentences = ConllSentences([], [])
    tokens: list[str] = []
    tags: list[str] = []

    def end_sentence() -> None:
        if tokens:
            sentences.tokens.append(list(tokens))
            sentences.tags.append(list(tags))
        tokens.clear()
        tags.clear()

    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            columns = line.split()
            if not columns or columns[0] == DOCSTART:
                end_sentence()
                continue
            tokens.append(columns[0])
            tags.append(_tag_of(columns, tag_column, number, spec))
    end_sentence()
    if not sentences.tokens:
        raise UsageError(f"'{spec}' has no CoNLL sentences (token ... tag lines, blank line between)")
    return sentences


def _tag_of(columns: list[str], tag_column: int | None, number: int, spec: str) -> str:
    if len(columns) < 2:
        raise UsageError(
            f"line {number} of '{spec}' has one column ({columns[0]!r}); CoNLL lines are "
            "'token ... tag', whitespace- or tab-separated"
        )
    if tag_column is None:
        return columns[-1]
    if tag_column > len(columns):
        raise UsageError(
            f"--tag-column {tag_column} but line {number} of '{spec}' has {len(columns)} columns"
        )
    return columns[tag_column - 1]


# Fallback word splitter for tokenizers without a pre-tokenizer: words and single symbols.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def words_with_offsets(text: str, tokenizer) -> list[tuple[str, tuple[int, int]]]:
    """The words the tokenizer's pre-tokenizer sees, with character offsets into `text`
    (a CJK character is a word for BERT's; a BPE tokenizer keeps a leading-space marker, so
    the word is re-read from the text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre_tokenizer = getattr(backend, "pre_tokenizer", None) if backend is not None else None
    if pre_tokenizer is not None:
        pieces = pre_tokenizer.pre_tokenize_str(text)
        words = [(text[start:end], (start, end)) for _, (start, end) in pieces]
        return [(w.strip(), _stripped(w, span)) for w, span in words if w.strip()]
    return [(m.group(), (m.start(), m.end())) for m in WORD_PATTERN.finditer(text)]


def _stripped(word: str, span: tuple[int, int]) -> tuple[int, int]:
    start = span[0] + (len(word) - len(word.lstrip()))
    return start, start + len(word.strip())


def spans_to_word_tags(
    words: list[tuple[str, tuple[int, int]]], entities: Sequence[dict], where: str
) -> list[str]:
    """BIO tags for words from character spans ({start, end, label}); a word that overlaps a
    span is inside it. Overlapping or out-of-range spans are an error naming the record."""
    tags = ["O"] * len(words)
    ordered = sorted(entities, key=lambda e: (e["start"], e["end"]))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after["start"] < before["end"]:
            raise UsageError(
                f"{where}: entities overlap ({_span_text(before)} and {_span_text(after)}); "
                "BIO tags need disjoint spans"
            )
    text_end = words[-1][1][1] if words else 0
    for entity in ordered:
        start, end, label = entity["start"], entity["end"], entity["label"]
        if not (isinstance(start, int) and isinstance(end, int)) or start < 0 or end <= start:
            raise UsageError(f"{where}: bad entity span {_span_text(entity)} (need 0 <= start < end)")
        inside = [i for i, (_, (ws, we)) in enumerate(words) if ws < end and we > start]
        if not inside and end > text_end:
            raise UsageError(f"{where}: entity {_span_text(entity)} ends past the text")
        for position, index in enumerate(inside):
            tags[index] = f"{'B' if position == 0 else 'I'}-{label}"
    return tags


def _span_text(entity: dict) -> str:
    return f"{entity.get('label')} [{entity.get('start')}, {entity.get('end')})"
