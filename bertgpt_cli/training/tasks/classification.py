"""Sequence classification: labels from the training data, a classification head, accuracy/F1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import UsageError
from ...io.console import warn
from ...io.data import require_columns
from .base import Task


@dataclass
class LabelSet:
    names: list[str]  # what the saved config shows (--label-names may rename)
    # Label value (as text: one file says 0, another "0") -> id. ClassLabel columns
    # are looked up by their names, so splits from different sources agree.
    value_to_id: dict[str, int] = field(default_factory=dict)
    class_names: list[str] | None = None  # the training column's ClassLabel names
    source: str = "training"  # where the labels came from, for messages ("the model" in eval)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def label_set(train, label_column: str, label_names: list[str] | None) -> LabelSet:
    """Sorted, deterministic labels from the training data; ClassLabel names when present."""
    class_names = class_label_names(train, label_column)
    if class_names is not None:
        values = class_names
        # A file split may give the ids themselves (0/1 for negative/positive).
        value_to_id = {str(i): i for i in range(len(values))} | {n: i for i, n in enumerate(values)}
    else:
        raw = set(train[label_column])
        if None in raw:
            raise UsageError(f"the training data has empty labels in column '{label_column}'")
        values = sorted_label_values(raw)
        value_to_id = {v: i for i, v in enumerate(values)}
    return LabelSet(named(values, label_names), value_to_id, class_names)


def require_two_classes(train, label_column: str, source: str) -> None:
    """A single class trains to a meaningless "accuracy 1.0" and a model that cannot classify."""
    present = {v for v in train[label_column] if v is not None}
    if len(present) < 2:
        only = f"only the value {next(iter(present))!r}" if present else "no values"
        raise UsageError(
            f"label column '{label_column}' of {source} has {only}; a classifier needs at least "
            "two classes (check --label-column)"
        )


def without_empty_texts(dataset, columns: list[str], source: str):
    """Rows whose text is missing or blank are skipped with a warning that names them."""
    values = [dataset[column] for column in columns]
    rows = enumerate(zip(*values, strict=True))
    empty = [i for i, row in rows if not all(isinstance(t, str) and t.strip() for t in row)]
    if not empty:
        return dataset
    shown = ", ".join(str(i + 1) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
    names = "/".join(f"'{c}'" for c in columns)
    rows_text = f"data rows {shown}, header not counted"
    warn(f"{source}: skipping {len(empty)} row(s) with an empty {names} ({rows_text})")
    drop = set(empty)
    return dataset.select([i for i in range(len(dataset)) if i not in drop])


def named(values: list[str], label_names: list[str] | None) -> list[str]:
    """The label names to save: --label-names (one per label, in order) or the values."""
    if label_names and len(label_names) != len(values):
        raise UsageError(
            f"--label-names has {len(label_names)} names but the training data has "
            f"{len(values)} labels ({', '.join(values)})"
        )
    return list(label_names or values)


def check_seen(present: set[str], labels: LabelSet, split: str) -> None:
    unseen = sorted(present - set(labels.value_to_id))
    if unseen:
        raise UsageError(
            f"{split} data has label(s) {', '.join(unseen[:5])} not seen in {labels.source} "
            f"({', '.join(labels.names)}); fix the data or train on them too"
        )


def no_label_error(split: str) -> UsageError:
    return UsageError(f"{split} data has rows without a label (-1); use a split that has labels")


def sorted_label_values(values) -> list[str]:
    """Labels as text, in a fixed order: numbers by value (2 before 10), then text."""

    def key(text: str):
        try:
            return (0, int(text), "")
        except ValueError:
            return (1, 0, text)

    return sorted({str(v) for v in values}, key=key)


def class_label_names(dataset, column: str) -> list[str] | None:
    return getattr(dataset.features[column], "names", None)  # datasets.ClassLabel


def encode_labels(dataset, labels: LabelSet, column: str, split: str):
    """The label column as ids of the training label set, in a column named `labels`."""
    names = class_label_names(dataset, column)
    as_text = _class_label_text(names, split) if names is not None else _value_text(split)
    present = {as_text(v) for v in set(dataset[column])}  # also rejects rows without a label
    if names is not None and names == labels.class_names:  # same ClassLabel: ids already agree
        return dataset.rename_column(column, "labels") if column != "labels" else dataset
    check_seen(present, labels, split)
    mapping = labels.value_to_id
    return dataset.map(
        lambda v: {"labels": mapping[as_text(v)]},
        input_columns=column,
        remove_columns=[column] if column != "labels" else [],
    )


def _class_label_text(names: list[str], split: str):
    def as_text(value: int) -> str:
        if value is None or value < 0:  # ClassLabel's "no label", e.g. GLUE test splits
            raise no_label_error(split)
        return names[value]

    return as_text


def _value_text(split: str):
    def as_text(value) -> str:
        if value is None:
            raise UsageError(f"{split} data has empty labels; fill them in or drop those rows")
        return str(value)

    return as_text


def metrics_to_load(metric: str, computed: tuple[str, ...]) -> list[str]:
    """The --metric to load beside the ones always computed (none for the Trainer's loss)."""
    return [] if metric in (*computed, "loss") else [metric]


class ClassificationTask(Task):
    name = "classification"
    trains_new_head = True
    default_metric = "f1_macro"
    card_metrics = ("accuracy", "f1_macro", "precision_macro", "recall_macro")

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.labels: LabelSet | None = None
        self.weights = None

    def prepare(self, train, others: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Labels from train, then tokenize every split (datasets.map, cached)."""
        c = self.config
        columns = {c.text_column: "--text-column", c.label_column: "--label-column"}
        if c.text_pair_column:
            columns[c.text_pair_column] = "--text-pair-column"
        require_columns(train, columns, c.train_data)
        for split, data in others.items():
            require_columns(data, columns, split)
        train = without_empty_texts(train, self._text_columns(), c.train_data)
        others = {k: without_empty_texts(v, self._text_columns(), k) for k, v in others.items()}
        names = [n.strip() for n in c.label_names.split(",")] if c.label_names else None
        if self.labels is None:  # else the model's own (use_model_labels)
            self.labels = self._label_set(train, names)
        train = self._tokenize(self._encode_labels(train, c.train_data))
        others = {k: self._tokenize(self._encode_labels(v, k)) for k, v in others.items()}
        return train, others

    def use_model_labels(self, model_config) -> None:
        """Data labels are matched to the model's by name, or by id for integer labels."""
        names = [str(model_config.id2label[i]) for i in range(len(model_config.id2label))]
        value_to_id = {str(i): i for i in range(len(names))} | {name: i for i, name in enumerate(names)}
        self.labels = LabelSet(names, value_to_id, source="the model's labels")

    def _text_columns(self) -> list[str]:
        return [c for c in (self.config.text_column, self.config.text_pair_column) if c]

    def _label_set(self, train, names: list[str] | None) -> LabelSet:
        require_two_classes(train, self.config.label_column, self.config.train_data)
        return label_set(train, self.config.label_column, names)

    def _encode_labels(self, dataset, split: str):
        return encode_labels(dataset, self.labels, self.config.label_column, split)

    def _problem_type(self) -> str:
        return "single_label_classification"

    def _tokenize(self, dataset):
        # The closure holds only what tokenizing uses: datasets hashes it for its cache key,
        # so unrelated flags (say --output) must not be in it.
        tokenizer, max_length = self.tokenizer, self.config.max_length
        text, pair = self.config.text_column, self.config.text_pair_column

        def tokenize(batch):
            args = (batch[text], batch[pair]) if pair else (batch[text],)
            return tokenizer(*args, truncation=True, max_length=max_length)

        keep = {"labels"}
        drop = [col for col in dataset.column_names if col not in keep]
        return dataset.map(tokenize, batched=True, remove_columns=drop)

    def model(self, resolved):
        from transformers import AutoModelForSequenceClassification

        from ...models.resolution import load_config, load_model

        config = load_config(resolved)
        config.num_labels = len(self.labels.names)
        config.id2label, config.label2id = self.labels.id2label, self.labels.label2id
        config.problem_type = self._problem_type()
        # Recorded so that `bgcli classify` knows this model reads sentence pairs.
        config.bgcli_text_pair_column = self.config.text_pair_column
        return load_model(
            resolved,
            AutoModelForSequenceClassification,
            "sequence classification",
            config=config,
            ignore_mismatched_sizes=True,
        )

    def split(self, train, fraction: float, seed: int):
        """Stratified: every class keeps its share in both parts."""
        from datasets import ClassLabel

        train = train.cast_column("labels", ClassLabel(names=self.labels.names))
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column="labels")
        return parts["train"], parts["test"]

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)

    def class_weights(self, train) -> list[float]:
        """Inverse frequency, normalised to mean 1."""
        counts = [0] * len(self.labels.names)
        for label in train["labels"]:
            counts[label] += 1
        weights = [len(train) / (len(counts) * max(n, 1)) for n in counts]
        return weights

    def use_class_weights(self, train) -> None:
        self.weights = self.class_weights(train)

    def compute_loss(self, model, inputs, num_items_in_batch):
        if self.weights is None:
            return None
        import torch

        inputs = dict(inputs)
        labels = inputs.pop("labels")
        logits = model(**inputs).logits
        loss = self._weighted_loss(logits.float(), labels, torch.tensor(self.weights, device=logits.device))
        # A batch mean; with num_items_in_batch the Trainer expects a share of the
        # accumulated batch and skips its own division by --grad-accum.
        return loss if num_items_in_batch is None else loss * len(labels) / num_items_in_batch

    def _weighted_loss(self, logits, labels, weights):
        import torch

        return torch.nn.functional.cross_entropy(logits, labels, weight=weights)

    def compute_metrics(self):
        import numpy as np

        from ..metrics import ClassificationMetrics

        metric = self.config.metric or self.default_metric
        metrics = ClassificationMetrics(metrics_to_load(metric, self.card_metrics))

        def compute(eval_pred) -> dict[str, float]:
            logits, labels = eval_pred
            return metrics(np.argmax(logits, axis=-1), labels)

        return compute

    def test_report(self, prediction) -> dict[str, Any]:
        import numpy as np
        from sklearn.metrics import classification_report, confusion_matrix

        names = self.labels.names
        predicted = np.argmax(prediction.predictions, axis=-1)
        labels = list(range(len(names)))
        return {
            "per_class": classification_report(
                prediction.label_ids,
                predicted,
                labels=labels,
                target_names=names,
                output_dict=True,
                zero_division=0,
            ),
            "confusion_matrix": confusion_matrix(prediction.label_ids, predicted, labels=labels).tolist(),
        }

    def run_info(self) -> dict[str, Any]:
        return {"labels": self.labels.names}

    def card_notes(self) -> list[str]:
        return [f"labels: {', '.join(self.labels.names)}"]
