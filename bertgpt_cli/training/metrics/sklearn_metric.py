"""Builds `evaluate.Metric` classes on scikit-learn scores (the modules beside this file)."""

from __future__ import annotations

import datasets
import evaluate
import sklearn.metrics


def sklearn_metric(name: str, score: str, averaged: bool) -> type[evaluate.Metric]:
    """An evaluate metric `name` computed by `sklearn.metrics.<score>`, same output as the Hub's.

    Averaged scores (f1, precision, recall) take labels / pos_label / average, like the Hub's.
    """
    function = getattr(sklearn.metrics, score)

    def _info(self):
        # config "multilabel" (as the Hub's modules): one 0/1 indicator list per example
        label = datasets.Value("int64")
        kind = datasets.Sequence(label) if self.config_name == "multilabel" else label
        return evaluate.MetricInfo(
            description=f"{name}, computed with scikit-learn ({score}).",
            citation="",
            inputs_description="predictions and references: label ids, or 0/1 lists (multilabel).",
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    if averaged:

        def _compute(
            self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None
        ):
            value = function(
                references,
                predictions,
                labels=labels,
                pos_label=pos_label,
                average=average,
                sample_weight=sample_weight,
                zero_division=0,
            )
            return {name: float(value) if getattr(value, "size", 1) == 1 else value.tolist()}

    else:

        def _compute(self, predictions, references, normalize=True, sample_weight=None):
            return {
                name: float(
                    function(references, predictions, normalize=normalize, sample_weight=sample_weight)
                )
            }

    return type(name.title(), (evaluate.Metric,), {"_info": _info, "_compute": _compute})
