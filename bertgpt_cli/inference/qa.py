"""`bgcli qa`: extractive question answering over whole documents, decoded as run_qa does.

transformers 5 removed the question-answering pipeline; this is the decoding of its run_qa
example (utils_qa.postprocess_qa_predictions): a context longer than the window is read in
overlapping windows, and the answer is the best start + end logit span over all of them,
returned as character offsets into the context.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..io.records import InputRecord, RecordError, RecordStream, read_input_records, stream_to_writer
from ..models.heads import require_head
from ..options import InputOptions, ModelOptions, OutputOptions, option
from .loading import (
    InferenceOptions,
    load_for_inference,
    model_max_length,
    padded_batch,
    process_sorted,
)

PANEL = "QA"


@dataclass
class QaConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions):
    model: str | None = option(
        None,
        "Question-answering model: a `finetune --task qa` run dir or a Hub id (required).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    question: str | None = option(None, "One question, asked of --context.", panel=PANEL, metavar="TEXT")
    questions: str | None = option(
        None, "A file of questions, one per line, asked of --context.", panel=PANEL, metavar="FILE"
    )
    context: str | None = option(
        None,
        "The document to answer from: a file, or - for stdin. JSONL records carry their own.",
        panel=PANEL,
        metavar="FILE|-",
    )
    text_field: str = option("question", "JSONL field holding the question.", panel="Input", metavar="FIELD")
    context_field: str = option("context", "JSONL field holding the context.", panel=PANEL, metavar="FIELD")
    top_k: int = option(1, 'Also list the N best answers as "answers".', panel=PANEL, ge=1)
    max_answer_length: int = option(30, "Longest answer considered, in tokens.", panel=PANEL, ge=1)
    max_length: int = option(384, "Tokens per window (capped by the model's limit).", panel=PANEL, ge=8)
    doc_stride: int | None = option(
        None,
        "Context tokens shared by neighbouring windows (default 128, at most a quarter of the window).",
        panel=PANEL,
        ge=0,
    )
    allow_no_answer: bool = option(
        False,
        'SQuAD v2 models: answer "" when "no answer" scores best (see --null-score-diff-threshold).',
        panel=PANEL,
    )
    null_score_diff_threshold: float = option(
        0.0,
        "With --allow-no-answer: answer nothing when the no-answer score beats the best by more.",
        panel=PANEL,
    )


CONFIG = QaConfig


def validate(config: QaConfig) -> None:
    if not config.model:
        raise UsageError("pass the model with --model/-m: a `bgcli finetune --task qa` run dir or a Hub id")


def window(config: QaConfig) -> int:
    """Questions read ahead and answered together."""
    return config.batch_size * 8


def process(config: QaConfig, records, writer, shared_context: str | None = None, loaded=None) -> None:
    """Answer `records` (from `question_records`) into `writer`: what the CLI and the Python
    API both run. `shared_context`: the --context document every question is asked of."""
    model, tokenizer = load(config) if loaded is None else loaded
    reader = Reader(model, tokenizer, config, shared_context)
    stream_to_writer(records, reader.answer, writer, window=window(config))


def load(config: QaConfig):
    """The heavy part (kept warm by `bgcli serve`): the span model and its tokenizer."""
    from transformers import AutoModelForQuestionAnswering

    return load_for_inference(
        config,
        config,
        AutoModelForQuestionAnswering,
        "question answering",
        check=require_qa_head,
        trained_by="bgcli finetune --task qa",
    )


def processor(loaded, config: QaConfig):
    """Records that carry their own context (the server's /v1/qa)."""
    model, tokenizer = loaded
    return Reader(model, tokenizer, config, None).answer


def question_records(config: QaConfig) -> tuple[RecordStream, str | None]:
    """The questions (with their JSONL fields) and the context they share, if one was given."""
    given = [
        name for name, value in (("--question", config.question), ("--questions", config.questions)) if value
    ]
    if len(given) > 1 or (given and (config.texts or config.input)):
        raise UsageError(
            "give questions one way: --question, --questions FILE, or JSONL records (--input or stdin)"
        )
    if given and not config.context:
        raise UsageError(f"{given[0]} needs --context FILE (or - for stdin): the document to answer from")
    if config.context == "-" and not given and config.input in (None, "-"):
        raise UsageError("--context - reads stdin, so the questions need --question or --questions FILE")
    context = read_context(config.context) if config.context else None
    if config.question:
        return RecordStream(iter([InputRecord(1, config.question)])), context
    if config.questions:
        return read_input_records([], config.questions, "text", "text"), context
    return read_input_records(config.texts, config.input, config.input_format, config.text_field), context


def read_context(source: str) -> str:
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if path.is_dir():
            raise UsageError(f"--context '{source}' is a directory; pass a text file, or - for stdin")
        if not path.exists():  # a named pipe or `<(cmd)` exists without being a regular file
            raise UsageError(f"--context file '{source}' not found; pass a text file, or - for stdin")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--context '{source}' is not UTF-8 text; re-encode it as UTF-8") from None
    if not text.strip():
        raise UsageError(f"--context '{source}' is empty; the answer must come from some text")
    return text


def require_qa_head(resolved, config) -> None:
    remedy = "fine-tune one (`bgcli finetune --task qa`) or pass a SQuAD model"
    require_head(resolved, config, "qa", remedy)


class Reader:
    def __init__(self, model, tokenizer, config: QaConfig, shared_context: str | None):
        if not tokenizer.is_fast:
            raise UsageError(
                f"the tokenizer of '{config.model}' is a slow one: offsets need a tokenizer.json"
            )
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.shared_context = shared_context
        self.window = min(config.max_length, model_max_length(tokenizer, model))
        self.stride = config.doc_stride if config.doc_stride is not None else min(128, self.window // 4)
        from .qa_decoding import check_stride

        check_stride(tokenizer, self.window, self.stride)  # the rule finetune --task qa trains with

    def answer(self, records: list[InputRecord]) -> list:
        from .qa_decoding import make_windows

        contexts = [self._context(record) for record in records]
        usable = [i for i, context in enumerate(contexts) if not isinstance(context, RecordError)]
        results: list = list(contexts)
        if not usable:
            return results
        questions = [records[i].text for i in usable]
        windows = make_windows(
            self.tokenizer, questions, [contexts[i] for i in usable], self.window, self.stride
        )
        lengths = [len(ids) for ids in windows.encoded["input_ids"]]
        logits = process_sorted(lengths, self.config.batch_size, lambda batch: self._forward(windows, batch))
        per_question: list[list] = [[] for _ in usable]
        for window, pair in enumerate(windows.owner):
            start, end = logits[window]
            per_question[pair].append((start, end, windows.context_offsets[window]))
        for pair, index in enumerate(usable):
            if pair in windows.refused:  # a bad record; the other questions are answered
                results[index] = RecordError(windows.refused[pair])
            else:
                results[index] = [self._record(contexts[index], per_question[pair])]
        return results

    def _context(self, record: InputRecord):
        context = record.fields.get(self.config.context_field, self.shared_context)
        if context is None:
            return RecordError(f"no '{self.config.context_field}' field and no --context; give the document")
        if not isinstance(context, str) or not context.strip():
            return RecordError(f"the '{self.config.context_field}' field is empty")
        return context

    def _forward(self, windows, batch: list[int]) -> list:
        import torch

        encoded = windows.encoded
        padded = padded_batch(self.tokenizer, encoded, batch, self.model.device)
        with torch.inference_mode():
            output = self.model(**padded)
        start, end = output.start_logits.float().cpu().numpy(), output.end_logits.float().cpu().numpy()
        return [
            (start[row, : len(encoded["input_ids"][i])], end[row, : len(encoded["input_ids"][i])])
            for row, i in enumerate(batch)
        ]

    def _record(self, context: str, windows: list) -> dict:
        from .qa_decoding import best_answers

        n_best = max(20, self.config.top_k)
        answers, null_score = best_answers(context, windows, n_best, self.config.max_answer_length)
        shown = [{"answer": a.text, "score": a.probability, "start": a.start, "end": a.end} for a in answers]
        no_answer = {"answer": "", "score": None, "start": None, "end": None}
        best = shown[0] if shown else no_answer
        if self.config.allow_no_answer and answers:
            if null_score > answers[0].score + self.config.null_score_diff_threshold:
                best = no_answer
        record = dict(best)
        if self.config.top_k > 1:
            record["answers"] = shown[: self.config.top_k]
        return record
