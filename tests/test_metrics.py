"""The metric modules shipped in the package load offline through evaluate and equal sklearn."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from bertgpt_cli.training.metrics import ClassificationMetrics, load_metric


def test_macro_metrics_equal_sklearn():
    rng = random.Random(0)
    references = [rng.randrange(3) for _ in range(200)]
    predictions = [r if rng.random() < 0.7 else rng.randrange(3) for r in references]
    scores = ClassificationMetrics()(predictions, references)
    assert scores["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert scores["f1_macro"] == pytest.approx(f1_score(references, predictions, average="macro"))
    assert scores["precision_macro"] == pytest.approx(
        precision_score(references, predictions, average="macro")
    )
    assert scores["recall_macro"] == pytest.approx(recall_score(references, predictions, average="macro"))


def test_local_modules_keep_the_hub_interface():
    f1 = load_metric("f1")
    assert f1.compute(predictions=[1, 0, 1], references=[1, 1, 1]) == {"f1": pytest.approx(0.8)}
    assert load_metric("accuracy").compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}


def test_an_unknown_metric_offline_is_one_clear_line():
    from bertgpt_cli.errors import BgcliError

    with pytest.raises(BgcliError, match="built-in metrics work offline") as info:
        load_metric("bleurt-made-up")
    assert "\n" not in str(info.value)
