"""Local `evaluate` module: works offline, same output as the Hub's (via scikit-learn)."""

from ..sklearn_metric import sklearn_metric

Precision = sklearn_metric("precision", "precision_score", averaged=True)
