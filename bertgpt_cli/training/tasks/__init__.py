"""Fine-tuning tasks: what differs between classification, masked-LM and causal-LM training.

Each task implements `base.Task`; training.py drives any of them the same way.
"""

from .base import Task
from .classification import ClassificationTask, LabelSet
from .embedding import EmbeddingTask
from .language_modeling import CausalLMTask, MaskedLMTask
from .multi_label import MultiLabelClassificationTask
from .ner import NerTask
from .next_sentence import MaskedLMWithNspTask
from .qa import QaTask
from .rerank import RerankTask
from .sft import SftTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "mlm": MaskedLMTask,
    "clm": CausalLMTask,
    "mlm+nsp": MaskedLMWithNspTask,
    "ner": NerTask,
    "qa": QaTask,
    "sft": SftTask,
    "embedding": EmbeddingTask,
    "rerank": RerankTask,
}


def task_class(config) -> type[Task]:
    """The task a finetune config asks for (--task, and --multi-label for classification)."""
    if config.task == "classification" and config.multi_label:
        return MultiLabelClassificationTask
    return TASKS[config.task]


__all__ = [
    "TASKS",
    "CausalLMTask",
    "ClassificationTask",
    "EmbeddingTask",
    "LabelSet",
    "MaskedLMTask",
    "MaskedLMWithNspTask",
    "MultiLabelClassificationTask",
    "NerTask",
    "QaTask",
    "RerankTask",
    "SftTask",
    "Task",
    "task_class",
]
