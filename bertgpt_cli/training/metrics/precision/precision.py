"""Local `evaluate` module: works offline, same output as the Hub's (via scikit-learn)."""

from bertgpt_cli.training.metrics.sklearn_metric import sklearn_metric

Precision = sklearn_metric("precision", "precision_score", averaged=True)
