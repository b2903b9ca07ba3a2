"""QA inference: `bgcli qa`'s Reader against the loop a transformers 5 user writes today (the
question-answering pipeline is gone): per question, tokenize its windows, one forward pass,
the same run_qa decoding. Same model (minilm with a seeded fresh span head: speed does not
depend on the head's training), the first BENCH_QA_QUESTIONS (default 1,000) SQuAD dev
questions, windows of 384 tokens with stride 128; answers compared span by span.

    python -m bench qa
"""

from __future__ import annotations

import os
from pathlib import Path

from .assets import bench_dir
from .inference import REPEATS, alternate, row
from .runner import Result

QUESTIONS = int(os.environ.get("BENCH_QA_QUESTIONS", "1000"))
WINDOW, STRIDE = 384, 128


def minilm_with_span_head() -> Path:
    target = bench_dir() / "minilm-qa"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertgpt_cli.assets import BUILTIN_MODELS
    from bertgpt_cli.atomic import save_dir_atomically

    source = BUILTIN_MODELS["minilm"].model_dir()
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    save_dir_atomically(target, write)
    return target


def per_question_loop(model, tokenizer, questions: list[str], contexts: list[str]) -> list[tuple[int, int]]:
    import torch

    from bertgpt_cli.qa_decoding import best_answers, make_windows

    spans = []
    for question, context in zip(questions, contexts, strict=True):
        windows = make_windows(tokenizer, [question], [context], WINDOW, STRIDE)
        padded = tokenizer.pad(dict(windows.encoded), return_tensors="pt")
        with torch.inference_mode():
            out = model(**padded)
        per_window = []
        for w, offsets in enumerate(windows.context_offsets):
            length = len(offsets)
            per_window.append(
                (out.start_logits[w, :length].numpy(), out.end_logits[w, :length].numpy(), offsets)
            )
        answers, _ = best_answers(context, per_window)
        spans.append((answers[0].start, answers[0].end) if answers else (None, None))
    return spans


def run() -> list[Result]:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertgpt_cli.commands.qa import QaConfig, Reader
    from bertgpt_cli.data import load_data
    from bertgpt_cli.records import InputRecord

    dev = load_data("squad@validation").select(range(QUESTIONS))
    questions, contexts = dev["question"], dev["context"]
    records = [
        InputRecord(i, q, {"context": c}) for i, (q, c) in enumerate(zip(questions, contexts, strict=True))
    ]
    model_dir = minilm_with_span_head()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    reader = Reader(model, tokenizer, QaConfig(model=str(model_dir), batch_size=32, doc_stride=STRIDE), None)

    def ours():
        return [(r[0]["start"], r[0]["end"]) for r in reader.answer(records)]

    measured = alternate(
        {"ours": ours, "loop": lambda: per_question_loop(model, tokenizer, questions, contexts)},
        len(questions),
        REPEATS,
    )
    (ours_rate, ours_out), (loop_rate, loop_out) = measured["ours"], measured["loop"]
    return [
        row(
            "qa fp32 vs per-question loop",
            ours_rate,
            loop_rate,
            "q/s",
            ours_out == loop_out,
            "a model call per question, same windows (384/128) and run_qa decoding",
            items=len(questions),
        )
    ]
