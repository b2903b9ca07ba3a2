"""Local `evaluate` module: works offline, same output as the Hub's (via scikit-learn)."""

from ..sklearn_metric import sklearn_metric

Accuracy = sklearn_metric("accuracy", "accuracy_score", averaged=False)
