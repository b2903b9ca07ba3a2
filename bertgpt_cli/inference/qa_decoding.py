"""Extractive QA windows and answer decoding, shared by `finetune --task qa` and `bgcli qa`.

The reference is transformers' run_qa.py example (prepare_train_features /
prepare_validation_features) and its utils_qa.postprocess_qa_predictions: a context longer
than the window becomes overlapping windows (question + a slice of the context); the answer
is the span with the best start + end logit over every window of the question, no longer
than max_answer_length tokens, mapped back to characters of the original context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError


@dataclass
class Windows:
    """Tokenized windows of several (question, context) pairs."""

    encoded: Any  # the tokenizer's BatchEncoding (input_ids, attention_mask, ...)
    owner: list[int]  # the pair each window belongs to
    # Per window position: the (start, end) characters of a context token, None elsewhere.
    context_offsets: list[list[tuple[int, int] | None]]
    # Pairs that get no window, with the reason: a question too long for the window.
    refused: dict[int, str] = field(default_factory=dict)


def make_windows(
    tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int
) -> Windows:
    """Question first, context second; only the context is cut (`only_second`), with `stride`
    tokens shared by neighbouring windows. Right-padding models only (as run_qa). A pair the
    tokenizer cannot cut this way (its question leaves no more than `stride` tokens of the window
    for the context) gets no window and a reason in `refused`; the others are not affected."""
    check_stride(tokenizer, max_length, stride)
    questions = [q.lstrip() for q in questions]  # leading spaces make some tokenizers fail to truncate
    refused = questions_that_do_not_fit(tokenizer, questions, contexts, max_length, stride)
    kept = [i for i in range(len(questions)) if i not in refused]
    encoded = tokenizer(
        [questions[i] for i in kept],
        [contexts[i] for i in kept],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    owner = [kept[i] for i in encoded.pop("overflow_to_sample_mapping")]
    offsets = encoded.pop("offset_mapping")
    context_offsets = []
    for window, window_offsets in enumerate(offsets):
        sequence = encoded.sequence_ids(window)
        context_offsets.append(
            [tuple(span) if sequence[i] == 1 else None for i, span in enumerate(window_offsets)]
        )
    return Windows(encoded, owner, context_offsets, refused)


def check_stride(tokenizer, max_length: int, stride: int) -> None:
    """The one rule for every QA window (finetune --task qa, qa, eval, serve), as run_qa and the
    tokenizer have it: the overlap must be smaller than the room the window leaves for the
    context, so a stride that even an empty question would not leave room for is refused."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if stride >= room:
        raise UsageError(
            f"--doc-stride {stride} must be less than the {room} tokens a {max_length}-token window "
            f"holds besides its special tokens (less still with the question); lower --doc-stride "
            "or raise --max-length"
        )


def questions_that_do_not_fit(
    tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int
) -> dict[int, str]:
    """Pairs whose context must be cut but whose question leaves it no more than `stride` tokens
    of the window (the tokenizer's "stride must be strictly less than max_len"), with why."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    suspects = [i for i, n in enumerate(question_lengths) if max_length - specials - n <= stride]
    if not suspects:
        return {}
    context_lengths = tokenizer([contexts[i] for i in suspects], add_special_tokens=False)["input_ids"]
    refused = {}
    for i, context_ids in zip(suspects, context_lengths, strict=True):
        if question_lengths[i] + len(context_ids) + specials <= max_length:
            continue  # fits in one window: nothing to cut
        room = max(max_length - specials - question_lengths[i], 0)
        refused[i] = (
            f"the question is {question_lengths[i]} tokens and leaves {room} of the {max_length}-token "
            f"window for the context, not more than --doc-stride {stride}; shorten the question, or "
            "raise --max-length / lower --doc-stride"
        )
    return refused


def answer_positions(
    windows: Windows, cls_index: list[int], answers: list[dict[str, list]]
) -> tuple[list[int], list[int]]:
    """Training targets per window: the tokens where the first gold answer starts and ends,
    or the CLS token when the window does not hold the whole answer (or there is none)."""
    starts, ends = [], []
    for window, pair in enumerate(windows.owner):
        cls = cls_index[window]
        gold = answers[pair]
        if not gold["answer_start"]:
            starts.append(cls)
            ends.append(cls)
            continue
        first_char = gold["answer_start"][0]
        last_char = first_char + len(gold["text"][0])
        spans = windows.context_offsets[window]
        inside = [i for i, span in enumerate(spans) if span is not None]
        if spans[inside[0]][0] > first_char or spans[inside[-1]][1] < last_char:
            starts.append(cls)
            ends.append(cls)
            continue
        starts.append(next(i for i in inside if spans[i][1] > first_char))
        ends.append(next(i for i in reversed(inside) if spans[i][0] < last_char))
    return starts, ends


@dataclass
class Answer:
    text: str
    start: int
    end: int
    score: float  # start + end logit
    probability: float = 0.0


def best_answers(
    context: str,
    windows: list[tuple[np.ndarray, np.ndarray, list[tuple[int, int] | None]]],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> tuple[list[Answer], float]:
    """The n-best spans over all windows of one question, best first, with probabilities
    (softmax over the n-best scores, as utils_qa), and the best "no answer" score (the
    lowest CLS start + end logit over the windows, as utils_qa's min_null_score)."""
    candidates: list[Answer] = []
    null_score = None
    for start_logits, end_logits, spans in windows:
        cls_score = float(start_logits[0] + end_logits[0])
        null_score = cls_score if null_score is None else min(null_score, cls_score)
        starts = np.argsort(start_logits)[-1 : -n_best - 1 : -1]
        ends = np.argsort(end_logits)[-1 : -n_best - 1 : -1]
        for s in starts:
            for e in ends:
                if s >= len(spans) or e >= len(spans) or spans[s] is None or spans[e] is None:
                    continue
                if e < s or e - s + 1 > max_answer_length:
                    continue
                first, last = spans[s][0], spans[e][1]
                score = float(start_logits[s] + end_logits[e])
                candidates.append(Answer(context[first:last], first, last, score))
    candidates.sort(key=lambda a: a.score, reverse=True)
    candidates = candidates[:n_best]
    if candidates:
        scores = np.array([a.score for a in candidates])
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        for answer, probability in zip(candidates, probabilities, strict=True):
            answer.probability = float(probability)
    return candidates, float(null_score if null_score is not None else 0.0)
