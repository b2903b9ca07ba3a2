"""Fine-tuning tasks: what differs between classification, masked-LM and causal-LM training.

Each task implements `base.Task`; training.py drives any of them the same way.
"""

from .base import Task
from .classification import ClassificationTask, LabelSet
from .language_modeling import CausalLMTask, MaskedLMTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "mlm": MaskedLMTask,
    "clm": CausalLMTask,
}

__all__ = ["TASKS", "CausalLMTask", "ClassificationTask", "LabelSet", "MaskedLMTask", "Task"]
