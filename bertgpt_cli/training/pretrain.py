"""Pre-training (`bgcli pretrain`, `api.pretrain`): BERT (masked LM + next-sentence
prediction) or GPT-2 (next-token LM) from random weights on your own corpus, tokenizer included.

It runs on finetune's engine: the flags below become a finetune config whose model is a
weightless dir (config + tokenizer) in the run dir, initialised at random (seeded) when the
Trainer starts; data, recipes, reports, resume, Ctrl-C and --num-processes are finetune's.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..io.run_dirs import INIT_DIR
from ..options import OutputOptions, option, same_option
from .config import FinetuneConfig, check_tracking
from .config import validate as validate_finetune
from .finetune import run_training
from .from_scratch import ARCHS, OBJECTIVES, SIZES, sizes_help
from .recipes import RecipeConfig

MODEL, DATA, TRAIN, RUN = "Model", "Data", "Training", "Run"


def _borrow(name: str, default=dataclasses.MISSING, **changes):
    """finetune's option, with a default that suits pre-training where it differs."""
    field = same_option(FinetuneConfig, name, **changes)
    if default is not dataclasses.MISSING:
        field.default = default
    return field


@dataclass
class PretrainConfig(OutputOptions, RecipeConfig):
    recipe: str | None = _borrow("recipe")
    arch: str = option("bert", "bert (encoder) or gpt2 (decoder).", choices=ARCHS, panel=MODEL)
    size: str = option("mini", f"Named size: {sizes_help()}.", choices=tuple(SIZES), panel=MODEL)
    model_config: str | None = option(
        None,
        "A JSON config (with model_type bert or gpt2) for any other shape; replaces --size.",
        panel=MODEL,
        metavar="FILE.json",
    )
    objective: str | None = option(
        None,
        "bert: mlm+nsp (the paper's, default) or mlm; gpt2: clm.",
        choices=("mlm+nsp", "mlm", "clm"),
        panel=MODEL,
    )
    tokenizer: str | None = option(
        None,
        "A `bgcli tokenizer train` folder or a model's tokenizer (dir, Hub id, alias); default: "
        "train one on --train-data (wordpiece for bert, byte-level BPE for gpt2).",
        panel=MODEL,
        metavar="DIR|MODEL",
    )
    vocab_size: int | None = option(
        None,
        "Vocabulary size of the tokenizer trained on the fly (default 30,522 bert / 50,257 gpt2).",
        panel=MODEL,
        ge=100,
    )
    train_data: str | None = _borrow("train_data")
    eval_data: str | None = _borrow("eval_data")
    eval_split: float = _borrow("eval_split", 0.02)
    max_train_samples: int | None = _borrow("max_train_samples")
    max_eval_samples: int | None = _borrow("max_eval_samples")
    text_column: str = _borrow("text_column")
    data_format: str | None = _borrow("data_format")
    block_size: int = option(
        128,
        "Tokens per example: packed blocks (mlm, clm) or sentence pairs (mlm+nsp).",
        panel=TRAIN,
        ge=8,
    )
    epochs: float = _borrow("epochs", 1.0)
    max_steps: int = _borrow("max_steps")
    lr: float = _borrow("lr", 5e-4)
    batch_size: int = _borrow("batch_size", 64)
    grad_accum: int = _borrow("grad_accum")
    warmup: float = _borrow("warmup", 0.05)
    weight_decay: float = _borrow("weight_decay")
    scheduler: str = _borrow("scheduler")
    seed: int = _borrow("seed")
    precision: str = _borrow("precision")
    device: str = _borrow("device")
    eval_every: str = _borrow("eval_every")
    save_total_limit: int = _borrow("save_total_limit")
    mlm_probability: float = _borrow("mlm_probability")
    whole_word_mask: bool = _borrow("whole_word_mask")
    packing: bool = _borrow(
        "packing",
        True,
        help="Concatenate texts and cut --block-size chunks; --no-packing: one example per text.",
    )
    sample_prompts: list[str] = _borrow("sample_prompts")
    eval_before: bool = _borrow("eval_before")
    output: str | None = _borrow("output")
    report_to: str = _borrow("report_to")
    run_name: str | None = _borrow("run_name")
    tracking_project: str | None = _borrow("tracking_project")
    overwrite: bool = _borrow("overwrite")
    num_processes: int = _borrow("num_processes")
    resume: str | None = _borrow("resume")
    offline: bool = same_option(FinetuneConfig, "offline")

    def __post_init__(self) -> None:
        if self.objective is None:
            self.objective = OBJECTIVES[self.arch][0]


CONFIG = PretrainConfig


def run(config: PretrainConfig) -> tuple[Path, dict | None]:
    """Check and run: (the run dir, the summary record), as finetune's `run_training`."""
    validate(config)
    if not config.output:  # decided here, so a relaunch in N processes passes the same one on
        config.output = str(
            Path("runs") / f"pretrain-{config.arch}-{config.size}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    training = finetune_config(config)
    validate_finetune(training)
    return run_training(
        training,
        setup=lambda run_dir, build: prepare_start(config, training, run_dir, build),
        saved_config=config,
    )


def validate(config: PretrainConfig) -> None:
    if config.objective not in OBJECTIVES[config.arch]:
        raise UsageError(
            f"--objective {config.objective} does not fit --arch {config.arch}; use "
            + " or ".join(OBJECTIVES[config.arch])
        )
    if config.model_config and not Path(config.model_config).is_file():
        raise UsageError(f"--model-config '{config.model_config}' not found")
    if config.tokenizer and config.vocab_size:
        raise UsageError(
            "--vocab-size sizes a tokenizer trained on the fly; drop it when passing --tokenizer"
        )
    if config.resume and not config.output:
        raise UsageError("--resume needs --output: the run dir to resume")
    check_tracking(config.report_to)
    if config.objective == "mlm+nsp" and not config.packing:
        raise UsageError(
            "--no-packing applies to --objective mlm or clm; mlm+nsp always builds sentence pairs"
        )


# The finetune settings a pretrain config sets itself (the rest carry over by name).
DERIVED = ("task", "model", "max_length", "block_size")


def finetune_config(config: PretrainConfig) -> FinetuneConfig:
    shared = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(FinetuneConfig)
        if hasattr(config, f.name) and f.name not in DERIVED and f.name != "recipe"
    }
    return FinetuneConfig(
        **shared,
        task=config.objective,
        model="",  # set by prepare_start: the run dir's init/ folder
        max_length=config.block_size,
        block_size=config.block_size,
    )


def prepare_start(config: PretrainConfig, training: FinetuneConfig, run_dir: Path, build: bool) -> None:
    """Point the run at `run_dir/init` (config + tokenizer, no weights), built unless a resumed
    run or a relaunched worker finds it there already."""
    from ..io.run_dirs import FROM_SCRATCH_MARKER

    init = run_dir / INIT_DIR
    training.model = str(init)
    if (init / FROM_SCRATCH_MARKER).is_file() and (config.resume or not build):
        return
    if not build:
        raise UsageError(f"{init} is missing; start several processes with --num-processes N")
    # A fresh start replaces the whole of init/, so no file of an earlier start (say the report
    # of a tokenizer trained on the fly, now that --tokenizer is given) outlives it.
    shutil.rmtree(init, ignore_errors=True)
    build_start(config, init)


def build_start(config: PretrainConfig, init: Path) -> None:
    from .from_scratch import check_tokenizer, describe, load_tokenizer_spec, model_config, write_init_dir

    tokenizer = load_tokenizer_spec(config.tokenizer, config.offline) if config.tokenizer else None
    report = None
    if tokenizer is None:
        tokenizer, report = tokenizer_for(config)
    check_tokenizer(tokenizer, config.arch, config.objective)
    model = model_config(config.arch, config.size, tokenizer, config.block_size, config.model_config)
    description = describe(config.arch, config.size, model, config.objective, config.model_config)
    write_init_dir(init, model, tokenizer, description)
    if report is not None:
        from .tokenizer_training import save_tokenizer

        save_tokenizer(tokenizer, report, init)


def tokenizer_for(config: PretrainConfig):
    """A tokenizer trained on the training data, as `bgcli tokenizer train` would."""
    from ..io.console import info
    from ..io.data import load_data
    from .from_scratch import TOKENIZER_TYPES
    from .tokenizer_training import DEFAULT_VOCAB_SIZES, TokenizerSpec, train_tokenizer

    kind = TOKENIZER_TYPES[config.arch]
    spec = TokenizerSpec(kind, config.vocab_size or DEFAULT_VOCAB_SIZES[kind])
    info(f"training a {kind} tokenizer ({spec.vocab_size} tokens) on {config.train_data}")
    tokenizer, report = train_tokenizer(
        load_data(config.train_data, config.data_format), config.text_column, spec
    )
    info(
        f"tokenizer: {report['vocab_size']} tokens, {report['tokens_per_word']} tokens per word and "
        f"{report['unknown_token_rate']:.2%} unknown on held-out records"
        if report["tokens_per_word"] is not None
        else f"tokenizer: {report['vocab_size']} tokens"
    )
    return tokenizer, report
