"""Local `evaluate` module: works offline, same output as the Hub's (via scikit-learn)."""

from bertgpt_cli.training.metrics.sklearn_metric import sklearn_metric

F1 = sklearn_metric("f1", "f1_score", averaged=True)
