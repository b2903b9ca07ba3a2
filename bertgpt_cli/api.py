"""bgcli from Python: one function per command, the same engine the CLI runs.

    from bertgpt_cli.api import classify, finetune
    run_dir = finetune(recipe="rt-minilm", output="runs/rt")
    classify(["a gorgeous, witty movie"], model=run_dir)
    # [{'label': 'pos', 'score': 0.97}]

Keyword arguments are the command's flags in snake_case (`--max-new-tokens` ->
`max_new_tokens`), with the same defaults and the same checks: each function builds the
command's typed config (the single source of truth for flags, recipe keys and these
arguments) and runs the engine function the CLI command runs. Record functions return the
records `--format jsonl` prints, as dicts, in input order; a bad input (an empty text) is an
`{"line": N, "error": ...}` record in its place, as in the CLI's output. Failures the user can
fix raise `BgcliError` (`UsageError` for a bad argument); nothing here exits the interpreter.
Importing this module imports neither Typer nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import BgcliError, UsageError
from .io.console import set_verbosity
from .io.records import RecordsFailed, RecordStream, parse_jsonl_record, parse_text_record
from .options import OutputOptions, config_fields, validate_config

__all__ = [
    "BgcliError",
    "UsageError",
    "classify",
    "data_check",
    "embed",
    "evaluate",
    "export",
    "fill_mask",
    "finetune",
    "generate",
    "ner",
    "pretrain",
    "qa",
    "search",
    "sweep",
    "tokenize",
]

Texts = str | dict | Iterable[str | dict] | None


# Inference: texts in, records out --------------------------------------------------------


def classify(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli classify`: a label and score per text (dicts may carry `text_pair` and other
    fields, passed through as in JSONL input). `model=` is required."""
    return _run_records("classify", texts, options)


def fill_mask(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli fill-mask`: the top predictions for each [MASK]."""
    return _run_records("fill_mask", texts, options)


def generate(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli generate`: a completion per prompt (per sequence with `num_return_sequences`)."""
    return _run_records("generate", texts, options)


def ner(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli ner`: the entities of each text, with character offsets."""
    return _run_records("ner", texts, options)


def qa(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli qa`: an answer per question. Give questions as dicts with their own context
    (`{"question": ..., "context": ...}`), or as strings with `context=FILE` shared by all."""
    from .inference import qa as engine

    config = _config(engine.CONFIG, options, texts)
    engine.validate(config)
    if texts is None:
        records, shared_context = engine.question_records(config)
    else:
        records = _records(texts, config.text_field)
        shared_context = engine.read_context(config.context) if config.context else None
    return _collect(lambda writer: engine.process(config, records, writer, shared_context))


def embed(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli embed`: a vector per text (`embedding`, a list of floats), or per token with
    `pooling="tokens"`. With `output=FILE` the vectors go to the file and the list is empty."""
    return _run_records("embed", texts, options)


def search(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli search`: the `top_k` hits of each query in `corpus=FILE` (or a saved `index=DIR`)."""
    return _run_records("search", texts, options)


def tokenize(texts: Texts = None, **options: Any) -> list[dict]:
    """`bgcli tokenize`: each text's tokens, ids, count and whether it fits the limit."""
    return _run_records("tokenize", texts, options)


# Training and the rest: a config in, a run dir or a report out ---------------------------


def finetune(**options: Any) -> Path:
    """`bgcli finetune`: train, and return the run dir (its summary is in `metrics.json`).
    `recipe=` works as on the command line: the arguments given override the recipe."""
    from .training import finetune as engine

    run_dir, _ = engine.run(_config(engine.FinetuneConfig, options))
    return run_dir


def sweep(**options: Any) -> dict:
    """`bgcli sweep`: run (or continue) a hyper-parameter search; the summary record (as
    DIR/sweep.json: every trial, the best, its run dir)."""
    from .training import sweep as engine

    return engine.run(_config(engine.SweepConfig, options))


def pretrain(**options: Any) -> Path:
    """`bgcli pretrain`: pre-train from random weights, and return the run dir."""
    from .training import pretrain as engine

    run_dir, _ = engine.run(_config(engine.PretrainConfig, options))
    return run_dir


def evaluate(model: str | None = None, **options: Any) -> dict:
    """`bgcli eval`: the summary record (the metrics `bgcli eval` prints); with
    `compare=True` and `models=[A, B]`, the side-by-side record with the paired test."""
    from .training import evaluation as engine

    if model is not None:
        options["model"] = model
    return engine.run(_config(engine.EvalConfig, options))


def export(**options: Any) -> Path:
    """`bgcli export`: write the ONNX export (checked against PyTorch) and return its dir."""
    from .models import export as engine

    return engine.run(_config(engine.ExportConfig, options))


def data_check(**options: Any) -> dict:
    """`bgcli data check`: the report (`ok` is False when a problem would make training or
    evaluation wrong; `problems` lists them)."""
    from .training import data_check as engine

    return engine.run(_config(engine.DataCheckConfig, options))


# How -------------------------------------------------------------------------------------


def _config(config_cls: type, options: dict[str, Any], texts: Texts = None):
    """The command's typed config from keyword arguments, checked as the CLI checks flags."""
    fields = {f.name for f in config_fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        hint = ", ".join(sorted(fields - {"texts", "format", "debug"}))
        raise UsageError(f"unknown argument(s) {', '.join(unknown)}; this function takes: {hint}")
    if "texts" in options:
        raise UsageError("pass the texts as the first argument, not texts=")
    if texts is not None and "texts" in fields:
        options = {**options, "texts": []}  # records are built from `texts` by _records
    build = getattr(config_cls, "from_command_line", None)
    try:
        config = build(options, set(options)) if build else config_cls(**options)
    except TypeError as exc:  # a required value missing, or a dataclass refusing a value
        raise UsageError(str(exc)) from None
    validate_config(config)
    if isinstance(config, OutputOptions):
        set_verbosity(quiet=config.quiet, debug=config.debug)
    return config


def _run_records(command: str, texts: Texts, options: dict[str, Any]) -> list[dict]:
    from .inference import engine

    module = engine(command)
    config = _config(module.CONFIG, options, texts)
    if hasattr(module, "validate"):
        module.validate(config)
    records = module.input_records(config) if texts is None else _records(texts, config.text_field)
    return _collect(lambda writer: module.process(config, records, writer))


def _records(texts: Texts, text_field: str) -> RecordStream:
    """Strings as the CLI's text arguments; dicts as its JSONL lines (other fields pass through)."""
    if isinstance(texts, (str, dict)):
        texts = [texts]
    items = list(texts)
    records = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            records.append(parse_text_record(number, item))
        elif isinstance(item, dict):
            records.append(parse_jsonl_record(number, json.dumps(item, default=str), text_field))
        else:
            raise UsageError(f"text {number} must be a string or a dict, not {type(item).__name__}")
    return RecordStream(iter(records))


class _Collector:
    """A record writer that keeps the records (what `--format jsonl` would print)."""

    input_key = None
    format = "jsonl"

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _collect(run) -> list[dict]:
    """Run an engine into a collector; bad records stay in the list as error records."""
    collector = _Collector()
    try:
        run(collector)
    except RecordsFailed:
        pass  # every failed record is in the list, in its place
    return collector.records
