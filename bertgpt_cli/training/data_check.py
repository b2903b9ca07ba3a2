"""What is wrong with a dataset before a model learns it (as spaCy's `debug data`): sizes,
empty and duplicate texts, rows shared between splits, label balance, labels the training
split never shows, and how many rows --max-length would cut.

`bgcli data check` prints all of it; `bgcli finetune` runs the cheap, blocking part (rows of
the test or eval split inside the training split) before it trains.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..io.console import info
from ..options import DataColumns, OutputOptions, option, same_option
from .config import FinetuneConfig

EXAMPLES_SHOWN = 3
TINY_CLASS_ROWS = 10  # fewer training rows than this: the class is hardly learnable
IMBALANCE_RATIO = 10  # largest / smallest class in training


@dataclass
class SplitView:
    """One split as the checks see it: a text per row (what the model reads) and its labels."""

    name: str
    texts: list[str]
    labels: list[list[str]] | None = None  # per row; None for unlabelled tasks (mlm, clm, qa)


@dataclass
class Problem:
    severity: str  # "error": training or evaluation would be wrong (exit 1); "warning"
    check: str
    message: str
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "check": self.check,
            "message": self.message,
            "examples": self.examples,
        }


def normalized(text: str) -> str:
    """Lowercased, whitespace collapsed: "The  movie." and "the movie." are the same row."""
    return re.sub(r"\s+", " ", text).strip().lower()


# Views of a loaded split, per task ------------------------------------------------------

# Unlabelled data is fine to check (the label checks are skipped), unless a column was named.
DEFAULT_LABEL_COLUMN = "label"


def split_view(name: str, dataset, config) -> SplitView:
    task = config.task
    columns = dataset.column_names
    if task == "ner":
        require(columns, config.tokens_column, "--tokens-column", name)
        texts = [" ".join(str(w) for w in words) for words in dataset[config.tokens_column]]
        labels = entity_types(dataset, config.tags_column) if config.tags_column in columns else None
        return SplitView(name, texts, labels)
    if task == "qa":
        require(columns, config.question_column, "--question-column", name)
        require(columns, config.context_column, "--context-column", name)
        pairs = zip(dataset[config.question_column], dataset[config.context_column], strict=True)
        return SplitView(name, [f"{q}\n{c}" for q, c in pairs])
    require(columns, config.text_column, "--text-column", name)
    texts = [t if isinstance(t, str) else "" for t in dataset[config.text_column]]
    if config.text_pair_column:
        require(columns, config.text_pair_column, "--text-pair-column", name)
        seconds = dataset[config.text_pair_column]
        texts = [
            f"{t}\n{p}" if t.strip() and isinstance(p, str) and p.strip() else ""
            for t, p in zip(texts, seconds, strict=True)
        ]
    if config.label_column not in columns and config.label_column != DEFAULT_LABEL_COLUMN:
        require(columns, config.label_column, "--label-column", name)  # named, so expected
    if task in ("mlm", "clm") or config.label_column not in columns:
        return SplitView(name, texts)
    return SplitView(name, texts, row_labels(dataset, config))


def require(columns: list[str], column: str, flag: str, split: str) -> None:
    if column not in columns:
        have = ", ".join(columns)
        raise UsageError(
            f"the {split} data has no column '{column}' (columns: {have}); choose it with {flag}"
        )


def row_labels(dataset, config) -> list[list[str]]:
    column = config.label_column
    names = getattr(dataset.features[column], "names", None)
    inner = getattr(getattr(dataset.features[column], "feature", None), "names", None)

    def as_text(value) -> str:
        lookup = names or inner
        return lookup[value] if lookup and isinstance(value, int) and 0 <= value < len(lookup) else str(value)

    rows = []
    for value in dataset[column]:
        if value is None or value == -1:
            rows.append([])
        elif isinstance(value, list):
            rows.append([as_text(v) for v in value])
        elif config.multi_label and isinstance(value, str):
            rows.append([p.strip() for p in value.split(config.label_separator) if p.strip()])
        else:
            rows.append([as_text(value)])
    return rows


def entity_types(dataset, column: str) -> list[list[str]]:
    """NER: the entity types a sentence holds, one per entity (B-X, or I-X starting a span)."""
    from ..io.tagging import split_tag

    names = getattr(getattr(dataset.features[column], "feature", None), "names", None)
    rows = []
    for tags in dataset[column]:
        tags = [names[t] if names and isinstance(t, int) else str(t) for t in tags]
        found, previous = [], "O"
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix in ("B", "S", "U") or (prefix == "I" and split_tag(previous)[1] != kind):
                found.append(kind)
            previous = tag
        rows.append(found)
    return rows


# Checks ---------------------------------------------------------------------------------


def split_summary(view: SplitView, multi_label: bool) -> dict[str, Any]:
    empty = [i for i, t in enumerate(view.texts) if not t.strip()]
    counts = Counter(t for t in view.texts if t.strip())
    duplicates = {t: n for t, n in counts.items() if n > 1}
    summary: dict[str, Any] = {
        "rows": len(view.texts),
        "empty_texts": len(empty),
        "duplicate_texts": sum(n - 1 for n in duplicates.values()),
    }
    if view.labels is not None:
        summary["labels"] = dict(Counter(label for row in view.labels for label in row).most_common())
        summary["rows_without_label"] = sum(1 for row in view.labels if not row)
        if multi_label:
            sizes = Counter(min(len(row), 3) for row in view.labels)
            summary["label_set_sizes"] = {("3+" if k == 3 else str(k)): sizes[k] for k in sorted(sizes)}
    return summary


def within_split_problems(view: SplitView) -> list[Problem]:
    problems = []
    empty = [i for i, t in enumerate(view.texts) if not t.strip()]
    if empty:
        problems.append(
            Problem(
                "warning",
                "empty texts",
                f"{view.name}: {len(empty)} rows with an empty text (finetune skips them)",
                [f"row {i + 1}" for i in empty[:EXAMPLES_SHOWN]],
            )
        )
    counts = Counter(t for t in view.texts if t.strip())
    duplicates = sorted(((n, t) for t, n in counts.items() if n > 1), reverse=True)
    if duplicates:
        extra = sum(n - 1 for n, _ in duplicates)
        problems.append(
            Problem(
                "warning",
                "duplicates",
                f"{view.name}: {extra} duplicate rows ({len(duplicates)} texts appear more than once)",
                [f"{n}x {shorten(t)}" for n, t in duplicates[:EXAMPLES_SHOWN]],
            )
        )
    return problems


def overlap(train: SplitView, other: SplitView) -> dict[str, Any]:
    """Rows of `other` whose text is also in training: exactly, and after normalising."""
    exact_train = {t for t in train.texts if t.strip()}
    loose_train = {normalized(t) for t in exact_train}
    exact = [t for t in other.texts if t.strip() and t in exact_train]
    loose = [t for t in other.texts if t.strip() and t not in exact_train and normalized(t) in loose_train]
    return {
        "exact": len(exact),
        "normalized": len(exact) + len(loose),
        "examples": exact[:EXAMPLES_SHOWN] or loose[:EXAMPLES_SHOWN],
    }


def overlap_problems(train: SplitView, others: list[SplitView]) -> tuple[dict[str, Any], list[Problem]]:
    found, problems = {}, []
    for other in others:
        shared = overlap(train, other)
        found[f"train/{other.name}"] = {k: v for k, v in shared.items() if k != "examples"}
        if not shared["normalized"]:
            continue
        # Test rows seen in training inflate the test score: the number would be wrong.
        # Eval rows seen in training only bias checkpoint choice: worth a warning.
        severity = "error" if other.name == "test" else "warning"
        share = shared["normalized"] / max(sum(1 for t in other.texts if t.strip()), 1)
        loose = shared["normalized"] - shared["exact"]
        how = f" ({loose} of them only after lowercasing and whitespace)" if loose else ""
        problems.append(
            Problem(
                severity,
                "train overlap",
                f"{shared['normalized']} {other.name} rows ({share:.1%}) are also in the training data"
                f"{how}; remove them from one side",
                [shorten(t) for t in shared["examples"]],
            )
        )
    return found, problems


def label_problems(train: SplitView, others: list[SplitView]) -> list[Problem]:
    if train.labels is None:
        return []
    problems = []
    counts = Counter(label for row in train.labels for label in row)
    for other in others:
        if other.labels is None:
            continue
        unseen = Counter(label for row in other.labels for label in row if label not in counts)
        if unseen:
            problems.append(
                Problem(
                    "error",
                    "unseen labels",
                    f"{other.name} has label(s) never seen in training: "
                    + ", ".join(f"{label} ({n} rows)" for label, n in unseen.most_common()),
                )
            )
    if counts:
        tiny = [f"{label} ({n})" for label, n in counts.most_common() if n < TINY_CLASS_ROWS]
        if tiny:
            problems.append(
                Problem(
                    "warning",
                    "tiny classes",
                    f"train: {len(tiny)} label(s) with fewer than {TINY_CLASS_ROWS} rows: "
                    + ", ".join(tiny[:8]),
                )
            )
        most, least = counts.most_common()[0], counts.most_common()[-1]
        if len(counts) > 1 and most[1] >= IMBALANCE_RATIO * least[1]:
            problems.append(
                Problem(
                    "warning",
                    "imbalance",
                    f"train: '{most[0]}' has {most[1] / least[1]:.0f}x the rows of '{least[0]}' "
                    f"({most[1]} vs {least[1]}); consider --class-weights auto and per-class F1",
                )
            )
    return problems


def length_summary(view: SplitView, tokenizer, max_length: int) -> dict[str, Any]:
    import numpy as np

    texts = [t for t in view.texts if t.strip()]
    if not texts:
        return {}
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])
    over = int((lengths > max_length).sum())
    return {
        "p50": int(np.percentile(lengths, 50)),
        "p90": int(np.percentile(lengths, 90)),
        "p99": int(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "max_length": max_length,
        "over_max_length": over,
        "over_max_length_share": round(over / len(texts), 4),
    }


def length_problems(name: str, lengths: dict[str, Any], task: str) -> list[Problem]:
    share = lengths.get("over_max_length_share", 0)
    if share <= 0.01:
        return []
    fate = {
        "ner": "read in windows",
        "qa": "read in windows",
        "mlm": "packed in blocks",
        "clm": "packed in blocks",
    }
    what = fate.get(task, "truncated")
    return [
        Problem(
            "warning",
            "length",
            f"{name}: {share:.1%} of rows are longer than --max-length {lengths['max_length']} tokens "
            f"(longest {lengths['max']}) and will be {what}",
        )
    ]


def shorten(text: str, width: int = 80) -> str:
    text = text.replace("\n", " | ")
    return text if len(text) <= width else text[: width - 3] + "..."


def check_views(views: list[SplitView], multi_label: bool) -> tuple[dict[str, Any], list[Problem]]:
    """Every check that needs no model; the train view first."""
    train, others = views[0], views[1:]
    report: dict[str, Any] = {"splits": {v.name: split_summary(v, multi_label) for v in views}}
    problems = [p for v in views for p in within_split_problems(v)]
    report["overlap"], shared = overlap_problems(train, others)
    return report, problems + shared + label_problems(train, others)


def blocking_overlap_warnings(config, train, others: dict[str, Any]) -> list[str]:
    """finetune's cheap pre-check on the raw splits: messages for rows shared with training."""
    if not others:
        return []
    try:
        views = [split_view("train", train, config)] + [split_view(n, d, config) for n, d in others.items()]
    except UsageError:
        return []  # the task's own column checks will say it better
    _, problems = overlap_problems(views[0], views[1:])
    return [p.message + (f" (e.g. {p.examples[0]!r})" if p.examples else "") for p in problems]


# The command's config and run -------------------------------------------------------


def _borrow(name: str):
    return same_option(FinetuneConfig, name)


@dataclass
class DataCheckConfig(DataColumns, OutputOptions):
    train_data: str | None = _borrow("train_data")
    eval_data: str | None = _borrow("eval_data")
    test_data: str | None = _borrow("test_data")
    task: str = _borrow("task")
    model: str | None = option(
        None,
        "Also measure token lengths with this model's tokenizer (dir, Hub id or alias).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    max_length: int | None = _borrow("max_length")
    offline: bool = _borrow("offline")

    def __post_init__(self) -> None:
        if self.max_length is None:
            self.max_length = 384 if self.task == "qa" else 128


CONFIG = DataCheckConfig


def run(config: DataCheckConfig) -> dict:
    """The report: per-split sizes, labels, lengths, and the problems found (`ok`: none is an error)."""
    from ..io.data import load_data

    if not config.train_data:
        raise UsageError("pass --train-data SPEC (and --eval-data / --test-data to compare splits)")
    specs = {"train": config.train_data, "eval": config.eval_data, "test": config.test_data}
    views = []
    for name, spec in specs.items():
        if spec:
            info(f"reading {name} data {spec}")
            views.append(split_view(name, load_data(spec, config.data_format, config.tag_column), config))
    report, problems = check_views(views, config.multi_label)
    if config.model:
        tokenizer = load_check_tokenizer(config)
        for view in views:
            lengths = length_summary(view, tokenizer, config.max_length)
            report["splits"][view.name]["tokens"] = lengths
            problems += length_problems(view.name, lengths, config.task)
    report["problems"] = [p.as_dict() for p in problems]
    report["ok"] = not any(p.severity == "error" for p in problems)
    return report


def load_check_tokenizer(config: DataCheckConfig):
    from ..models.resolution import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(config.model, offline=config.offline))
