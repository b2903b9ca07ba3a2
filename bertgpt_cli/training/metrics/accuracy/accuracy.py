"""Local `evaluate` module: works offline, same output as the Hub's (via scikit-learn)."""

from bertgpt_cli.training.metrics.sklearn_metric import sklearn_metric

Accuracy = sklearn_metric("accuracy", "accuracy_score", averaged=False)
