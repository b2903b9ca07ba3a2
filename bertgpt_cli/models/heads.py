"""The one table of what bgcli can do with a model's head: which task trains it, which command
serves it, which transformers class loads it, what its ONNX graph returns.

Fine-tuning (`--task` choices), `eval` (task detection), `serve` (which endpoint a model
answers), `export` (graph outputs), the run report (pipeline tag, the command to use) and every
"this model cannot do X" message read it; a new task adds one row here and its `Task` plug-in.
Plain data: importing it imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Head:
    task: str  # finetune / eval --task
    command: str  # the inference command (and server endpoint) that uses such a model
    auto_class: str  # the transformers Auto class that loads it
    suffixes: tuple[str, ...]  # architecture names ending so carry this head
    pipeline_tag: str  # the Hub's name for it (model cards, `pipeline(...)`)
    words: str  # how messages name the task ("text classification")
    head_name: str  # how messages name the head ("no trained classification head")
    onnx_outputs: tuple[str, ...] = ()  # what an exported graph returns; () = not exportable
    finetune: bool = True  # a `finetune --task` choice


HEADS: tuple[Head, ...] = (
    Head(
        "classification",
        "classify",
        "AutoModelForSequenceClassification",
        ("ForSequenceClassification",),
        "text-classification",
        "text classification",
        "classification",
        ("logits",),
    ),
    Head(
        "ner",
        "ner",
        "AutoModelForTokenClassification",
        ("ForTokenClassification",),
        "token-classification",
        "token classification",
        "token-classification",
        ("logits",),
    ),
    Head(
        "qa",
        "qa",
        "AutoModelForQuestionAnswering",
        ("ForQuestionAnswering",),
        "question-answering",
        "question answering",
        "question-answering",
        ("start_logits", "end_logits"),
    ),
    Head(
        "mlm",
        "fill-mask",
        "AutoModelForMaskedLM",
        ("ForMaskedLM", "ForPreTraining"),
        "fill-mask",
        "masked language modeling",
        "masked-LM",
        ("logits",),
    ),
    Head(
        "clm",
        "generate",
        "AutoModelForCausalLM",
        ("ForCausalLM", "LMHeadModel"),
        "text-generation",
        "causal language modeling",
        "causal-LM",
    ),
    Head(
        "feature-extraction",
        "embed",
        "AutoModel",
        (),
        "feature-extraction",
        "embeddings",
        "embedding",
        ("last_hidden_state",),
        finetune=False,
    ),
)

BY_TASK = {head.task: head for head in HEADS}
BY_COMMAND = {head.command: head for head in HEADS}
# sft trains the causal-LM head too, on conversations (the loss on the assistant's replies);
# embedding trains the bare encoder's vectors (pooled) for search.
# rerank trains a one-logit sequence-pair classifier (a cross-encoder).
FINETUNE_TASKS = (*(head.task for head in HEADS if head.finetune), "sft", "embedding", "rerank")
HEAD_OF_TASK = {
    "sft": "clm",
    "embedding": "feature-extraction",
    "rerank": "classification",
}  # tasks that train another task's head
EXPORT_TASKS = tuple(head.task for head in HEADS if head.onnx_outputs)
# The commands `bgcli serve` answers on a task endpoint (embeddings have their OpenAI one).
TASK_COMMANDS = tuple(head.command for head in HEADS if head.command != "embed")


def head_for(task: str) -> Head:
    return BY_TASK[HEAD_OF_TASK.get(task, task)]


def head_of_architectures(architectures: list[str] | None) -> Head | None:
    """The head a config's `architectures` name (BertForSequenceClassification -> classification)."""
    for architecture in architectures or []:
        for head in HEADS:
            if any(architecture.endswith(suffix) for suffix in head.suffixes):
                return head
    return None


def detect_task(model_config, run_config: dict | None = None) -> str:
    """A run dir's recorded task, else what the architecture's head is for."""
    recorded = (run_config or {}).get("task")
    if recorded:
        return "mlm" if recorded == "mlm+nsp" else recorded
    head = head_of_architectures(getattr(model_config, "architectures", None))
    if head is None:
        raise UsageError(
            f"cannot tell what task '{getattr(model_config, '_name_or_path', 'this model')}' was "
            "trained for (no task head in its config); pass --task"
        )
    return head.task


def serving_command(model_config) -> str:
    """What `bgcli serve` loads a model for: its head's command, embeddings for a bare encoder."""
    head = head_of_architectures(getattr(model_config, "architectures", None))
    return head.command if head else "embed"


def model_uses(architecture: str) -> str:
    """What bgcli can do with a model of this architecture (`bgcli models`), from this table:
    the command its head serves, embeddings and search for encoders (a decoder's first-token
    vector says little), the fine-tuning tasks it can start (an encoder any but clm, a decoder
    clm), and its tokenizer for a model pre-trained from scratch."""
    head = head_of_architectures([architecture])
    decoder = head is not None and head.task == "clm"
    uses = [head.command] if head is not None and head.command != "embed" else []
    uses += [] if decoder else ["embed", "search"]
    tasks = [task for task in FINETUNE_TASKS if (head_for(task).task == "clm") == decoder]
    uses += [f"finetune ({', '.join(tasks)})", "pretrain --tokenizer"]
    return ", ".join(uses)


def require_head(resolved, config, task: str, remedy: str) -> None:
    """Refuse a model whose architectures carry no head for `task` (models/heads.py): a bare
    encoder, or a head for another task, would get a random head of the wanted kind and
    answer noise."""
    head = head_for(task)
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith(suffix) for a in architectures for suffix in head.suffixes):
        raise UsageError(
            f"model '{resolved.spec}' ({', '.join(architectures) or config.model_type}) has no trained "
            f"{head.head_name} head; {remedy}"
        )
