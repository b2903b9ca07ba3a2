"""Multi-label classification (`--multi-label`): each row has any number of labels.

A row's labels come as a list (JSONL arrays, parquet lists, Hub `Sequence(ClassLabel)`
columns) or as text split on `--label-separator` ("comedy,drama"). The model gets one
sigmoid output per label (problem_type multi_label_classification, so transformers trains
it with BCEWithLogits and `pipeline()` / `bgcli classify` apply a sigmoid); a label counts
as predicted when its probability is >= 0.5.
"""

from __future__ import annotations

from typing import Any

from ...errors import UsageError
from .base import Task
from .classification import (
    ClassificationTask,
    LabelSet,
    check_seen,
    class_label_names,
    metrics_to_load,
    named,
    no_label_error,
    sorted_label_values,
)


def row_labels(value, separator: str, names: list[str] | None, split: str) -> list[str]:
    """One row's labels as text; `names` are the column's ClassLabel names, if any."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    values = value if isinstance(value, list) else [value]
    if names is None:
        return [str(v) for v in values if v is not None]
    if any(v < 0 for v in values):
        raise no_label_error(split)
    return [names[v] for v in values]


def column_class_names(dataset, column: str) -> list[str] | None:
    """ClassLabel names of a ClassLabel column or a list-of-ClassLabel one (Hub datasets), else None."""
    feature = dataset.features[column]
    inner = getattr(feature, "feature", None)  # datasets.Sequence
    if inner is None and isinstance(feature, list) and feature:  # datasets.List in some versions
        inner = feature[0]
    return class_label_names(dataset, column) or getattr(inner, "names", None)


class MultiLabelClassificationTask(ClassificationTask):
    card_metrics = ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro")

    def _labels_of(self, dataset, split: str):
        column, separator = self.config.label_column, self.config.label_separator
        names = column_class_names(dataset, column)
        return [row_labels(v, separator, names, split) for v in dataset[column]]

    def _label_set(self, train, names: list[str] | None) -> LabelSet:
        values = sorted_label_values({label for row in self._labels_of(train, "train") for label in row})
        if not values:
            raise UsageError(f"the training data has no labels in column '{self.config.label_column}'")
        return LabelSet(named(values, names), {v: i for i, v in enumerate(values)})

    def _encode_labels(self, dataset, split: str):
        rows = self._labels_of(dataset, split)
        check_seen({label for row in rows for label in row}, self.labels, split)
        mapping = self.labels.value_to_id
        multi_hot = []
        for row in rows:  # float targets: BCEWithLogits wants them so
            target = [0.0] * len(self.labels.names)  # the mapping may also know ids as text
            for label in row:
                target[mapping[label]] = 1.0
            multi_hot.append(target)
        return dataset.remove_columns(self.config.label_column).add_column("labels", multi_hot)

    def _problem_type(self) -> str:
        return "multi_label_classification"

    # The base task's seeded random split, not the stratified one: label sets are too many
    # combinations to stratify.
    split = Task.split

    def class_weights(self, train) -> list[float]:
        """BCE pos_weight per label: negatives / positives (rare labels weigh more)."""
        positives = [0.0] * len(self.labels.names)
        for target in train["labels"]:
            for i, value in enumerate(target):
                positives[i] += value
        return [(len(train) - n) / max(n, 1.0) for n in positives]

    def _weighted_loss(self, logits, labels, weights):
        import torch

        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.float(), pos_weight=weights
        )

    def compute_metrics(self):
        from ..metrics import ClassificationMetrics

        metric = self.config.metric or self.default_metric
        metrics = ClassificationMetrics(metrics_to_load(metric, self.card_metrics), multi_label=True)

        def compute(eval_pred) -> dict[str, float]:
            logits, labels = eval_pred
            return metrics((logits >= 0).astype(int), labels.astype(int))

        return compute

    def test_report(self, prediction) -> dict[str, Any]:
        from sklearn.metrics import classification_report, multilabel_confusion_matrix

        predicted = (prediction.predictions >= 0).astype(int)
        truth = prediction.label_ids.astype(int)
        return {
            "per_class": classification_report(
                truth, predicted, target_names=self.labels.names, output_dict=True, zero_division=0
            ),
            # one [[tn, fp], [fn, tp]] per label (a single matrix does not exist for label sets)
            "label_confusion_matrices": multilabel_confusion_matrix(truth, predicted).tolist(),
        }

    def card_notes(self) -> list[str]:
        return [*super().card_notes(), "multi-label: one sigmoid per label, predicted when >= 0.5"]
