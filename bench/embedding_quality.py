"""The squad-minilm-embedding recipe vs minilm as it is on SQuAD dev retrieval (see embedding_speed)."""

from .embedding_speed import run_quality as run

__all__ = ["run"]
