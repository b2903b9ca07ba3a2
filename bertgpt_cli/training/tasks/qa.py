"""Extractive question answering (SQuAD-style): windows over long contexts, a span head,
exact match / F1 scored by the official SQuAD rules on answers decoded as run_qa does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from ...inference.qa_decoding import answer_positions, best_answers, make_windows
from ...io.console import info, warn
from ...io.data import require_columns
from .base import Task, longest_first

# Questions windowed at once in finalize: bounds the tokenizer's Python lists (~140 MB per chunk).
CHUNK_QUESTIONS = 2000


@dataclass
class QaLayout:
    """What decoding an eval split needs beyond the logits (windows sorted longest first)."""

    ids: list[str]
    contexts: list[str]
    questions: list[str]
    answers: list[dict[str, list]]
    owner: list[int]
    context_offsets: list[list[tuple[int, int] | None]]


class QaTask(Task):
    name = "qa"
    trains_new_head = True
    default_metric = "f1"
    card_metrics = ("exact_match", "f1")
    ordered_eval = True  # windows are put back into questions by position

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.layouts: dict[str, QaLayout] = {}
        self.no_answer = config.allow_no_answer  # SQuAD v2; also set when the data has such questions

    def prepare(self, train, others: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not getattr(self.tokenizer, "is_fast", False):
            raise UsageError(
                "QA needs a fast tokenizer (character offsets); pick a model with a tokenizer.json"
            )
        if self.tokenizer.padding_side != "right":
            raise UsageError("QA windows need a tokenizer that pads on the right")
        train = self._checked(train, self.config.train_data)
        others = {split: self._checked(data, split) for split, data in others.items()}
        if not self.no_answer and any(not a["text"] for a in train["answers"]):
            self.no_answer = True
            info("the training data has questions without an answer: SQuAD v2 (no-answer) mode")
        return train, others

    def _checked(self, dataset, source: str):
        """Records whose answer text is not at its answer_start are reported and skipped."""
        c = self.config
        columns = {c.question_column: "--question-column", c.context_column: "--context-column"}
        columns[c.answers_column] = "--answers-column"
        require_columns(dataset, columns, source)
        ids = dataset["id"] if "id" in dataset.column_names else [str(i + 1) for i in range(len(dataset))]
        bad: list[str] = []
        keep: list[int] = []
        for row, (context, question, answers) in enumerate(
            zip(dataset[c.context_column], dataset[c.question_column], dataset[c.answers_column], strict=True)
        ):
            problem = _record_problem(context, question, answers)
            if problem:
                bad.append(f"{ids[row]} ({problem})")
            else:
                keep.append(row)
        if bad:
            shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
            warn(f"{source}: skipping {len(bad)} of {len(dataset)} record(s) with a bad answer: {shown}")
        if not keep:
            raise UsageError(
                f"{source} has no usable QA records (question, context and an answer found in it)"
            )
        dataset = dataset.select(keep) if bad else dataset
        rename = {c.question_column: "question", c.context_column: "context", c.answers_column: "answers"}
        dataset = dataset.rename_columns({k: v for k, v in rename.items() if k != v})
        if "id" not in dataset.column_names:
            dataset = dataset.add_column("id", [ids[i] for i in keep])
        return dataset.select_columns(["id", "question", "context", "answers"])

    def finalize(self, dataset, split: str):
        """Windows with their training targets, built CHUNK_QUESTIONS questions at a time: the
        tokenizer's Python lists for all of SQuAD (token ids, offset pairs) took ~7 GB at once;
        each chunk goes into Arrow and its lists are freed. Eval splits also keep a layout
        (which question each window belongs to, context offsets) and are sorted longest first."""
        import datasets

        rows = dataset.to_dict()
        parts, owner, context_offsets, lengths, refused = [], [], [], [], {}
        for first in range(0, len(rows["question"]), CHUNK_QUESTIONS):
            part, windows = self._window_chunk(rows, first)
            refused |= {first + i: reason for i, reason in windows.refused.items()}
            parts.append(part)
            lengths += [len(ids) for ids in part["input_ids"]]
            if split != "train":
                owner += [first + o for o in windows.owner]
                context_offsets += windows.context_offsets
        if refused:  # as bgcli qa refuses them: the same rule (qa_decoding.check_stride)
            first_row, reason = next(iter(refused.items()))
            warn(
                f"{split}: {len(refused)} of {len(rows['question'])} question(s) get no window "
                f"(row {first_row + 1}: {reason}); they are left out of training / scored unanswered"
            )
        windowed = datasets.concatenate_datasets(parts)
        if split == "train":
            return windowed  # as tokenized; the Trainer groups by length itself
        order = longest_first(lengths)
        self.layouts[split] = QaLayout(
            ids=[str(i) for i in rows["id"]],  # the squad metric keys answers by string id
            contexts=rows["context"],
            questions=rows["question"],
            answers=rows["answers"],
            owner=[owner[i] for i in order],
            context_offsets=[context_offsets[i] for i in order],
        )
        return windowed.select(order).flatten_indices()

    def _window_chunk(self, rows: dict[str, list], first: int):
        import datasets

        c = self.config
        chunk = slice(first, first + CHUNK_QUESTIONS)
        windows = make_windows(
            self.tokenizer, rows["question"][chunk], rows["context"][chunk], c.max_length, c.doc_stride
        )
        cls_index = [_cls_index(ids, self.tokenizer) for ids in windows.encoded["input_ids"]]
        starts, ends = answer_positions(windows, cls_index, rows["answers"][chunk])
        columns = {k: list(v) for k, v in windows.encoded.items()}
        columns |= {"start_positions": starts, "end_positions": ends}
        return datasets.Dataset.from_dict(columns), windows

    def model(self, resolved):
        from transformers import AutoModelForQuestionAnswering

        from ...models.resolution import load_config, load_model

        return load_model(
            resolved, AutoModelForQuestionAnswering, "question answering", config=load_config(resolved)
        )

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)

    def compute_metrics(self):
        from ..metrics import load_metric

        metric = load_metric("squad_v2" if self.no_answer else "squad")

        def compute(eval_pred) -> dict[str, float]:
            predictions = self.predictions(eval_pred.predictions)
            layout = self.layouts[self.metrics_split]
            references = [{"id": i, "answers": a} for i, a in zip(layout.ids, layout.answers, strict=True)]
            formatted = [{"id": i, "prediction_text": p.text if p else ""} for i, p in predictions.items()]
            if not self.no_answer:
                return metric.compute(predictions=formatted, references=references)
            for row in formatted:
                row["no_answer_probability"] = 0.0
            scores = metric.compute(predictions=formatted, references=references)
            scores["exact_match"] = scores.pop("exact")  # one name for both versions
            return {k: v for k, v in scores.items() if not k.endswith("total")}

        return compute

    def predictions(self, logits) -> dict[str, Any]:
        """The best answer per question id (None when no window has a valid span, or, in
        no-answer mode, when the no-answer score wins by more than the threshold)."""
        start_logits, end_logits = logits
        layout = self.layouts[self.metrics_split]
        per_question: list[list] = [[] for _ in layout.ids]
        for window, pair in enumerate(layout.owner):
            spans = layout.context_offsets[window]
            length = len(spans)
            per_question[pair].append((start_logits[window][:length], end_logits[window][:length], spans))
        best = {}
        for pair, windows in enumerate(per_question):
            answers, null_score = best_answers(
                layout.contexts[pair], windows, max_answer_length=self.config.max_answer_length
            )
            threshold = self.config.null_score_diff_threshold
            abstain = self.no_answer and answers and null_score > answers[0].score + threshold
            best[layout.ids[pair]] = answers[0] if answers and not abstain else None
        return best

    def test_report(self, prediction) -> dict[str, Any]:
        """The worst misses: questions whose answer shares the fewest words with the gold."""
        from ..metrics.squad.squad import f1 as token_f1

        best = self.predictions(prediction.predictions)
        layout = self.layouts[self.metrics_split]
        misses = []
        for question_id, question, gold in zip(layout.ids, layout.questions, layout.answers, strict=True):
            predicted = best[question_id].text if best[question_id] else ""
            score = max((token_f1(predicted, g) for g in gold["text"]), default=float(predicted == ""))
            misses.append((score, question, gold["text"][:1], predicted))
        misses.sort(key=lambda m: m[0])
        return {
            "worst_misses": [{"question": q, "gold": g, "predicted": p, "f1": s} for s, q, g, p in misses[:5]]
        }

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        misses = (metrics.get("test_report") or {}).get("worst_misses") or []
        if not misses:
            return []
        lines = ["## Worst test misses", "", "| question | gold | predicted |", "|---|---|---|"]
        for miss in misses:
            gold = ", ".join(miss["gold"]) or "(no answer)"
            lines.append(f"| {miss['question']} | {gold} | {miss['predicted'] or '(none)'} |")
        return [*lines, ""]

    def run_info(self) -> dict[str, Any]:
        return {"doc_stride": self.config.doc_stride, "max_answer_length": self.config.max_answer_length}


def _cls_index(input_ids: list[int], tokenizer) -> int:
    cls = tokenizer.cls_token_id
    return input_ids.index(cls) if cls is not None and cls in input_ids else 0


def _record_problem(context, question, answers) -> str | None:
    if not isinstance(question, str) or not question.strip():
        return "no question"
    if not isinstance(context, str) or not context.strip():
        return "no context"
    if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
        return "answers is not {text: [...], answer_start: [...]}"
    for text, start in zip(answers["text"], answers["answer_start"], strict=False):
        if context[start : start + len(text)] != text:
            return f"answer {text!r} is not at character {start} of the context"
    return None
