"""Classification (`bgcli classify`, `api.classify`, the server's /v1/classify): a
sequence-classification model (a finetune run dir or a Hub id); same labels and scores as
`pipeline("text-classification")`, in length-sorted batches."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..io.console import warn
from ..io.records import RecordError, RecordStream, read_input_records, stream_to_writer
from ..models.heads import require_head
from ..options import InputOptions, ModelOptions, OutputOptions, ServerOptions, option
from .loading import InferenceOptions, load_for_inference, model_max_length, process_sorted


@dataclass
class ClassifyConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, ServerOptions):
    model: str | None = option(
        None,
        "Classifier: a finetune run dir or a Hub id (required).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    all_scores: bool = option(False, 'Add every label\'s probability as "scores".', panel="Classify")
    threshold: float = option(
        0.5, "Multi-label models: labels whose probability reaches this.", panel="Classify", ge=0, le=1
    )
    input_format: str = option(
        "auto",
        "How to read the input: plain text lines, JSON Lines, or TSV sentence pairs (text<TAB>pair). "
        "auto: JSONL for .jsonl or a first line that is a JSON object, TSV for .tsv, else text.",
        choices=("auto", "text", "jsonl", "tsv"),
        panel="Input",
    )
    pair_field: str = option(
        "text_pair",
        "JSONL field holding the second text of a sentence pair (models fine-tuned with --text-pair-column).",
        panel="Input",
        metavar="FIELD",
    )


CONFIG = ClassifyConfig


def validate(config: ClassifyConfig) -> None:
    if not config.model:
        raise UsageError("pass the classifier with --model/-m: a `bgcli finetune` run dir or a Hub id")


def input_records(config: ClassifyConfig) -> RecordStream:
    """The texts (or sentence pairs) to label: arguments, --input or stdin."""
    return read_input_records(
        config.texts, config.input, config.input_format, config.text_field, pair_field=config.pair_field
    )


def window(config: ClassifyConfig) -> int:
    """Records read ahead and sorted by length together."""
    return config.batch_size * 8


def process(config: ClassifyConfig, records, writer, loaded=None) -> None:
    """Label `records` into `writer`: what the CLI and the Python API both run."""
    loaded = load(config) if loaded is None else loaded
    stream_to_writer(records, processor(loaded, config), writer, window=window(config))


def load(config: ClassifyConfig):
    """The heavy part (kept warm by `bgcli serve`): the classifier and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    return load_for_inference(
        config, config, AutoModelForSequenceClassification, "text classification", check=require_classifier
    )


def processor(loaded, config: ClassifyConfig):
    """records -> one result per record, for these options."""
    model, tokenizer = loaded
    return Classifier(model, tokenizer, config).classify


def require_classifier(resolved, config) -> None:
    """A bare encoder (minilm, bert-base-uncased) would get a random head: refuse it."""
    remedy = "fine-tune one first (`bgcli finetune`) or pass a classifier"
    require_head(resolved, config, "classification", remedy)
    if not getattr(config, "bgcli_text_pair_column", None):
        config.bgcli_text_pair_column = _run_config_pair_column(resolved)


def _run_config_pair_column(resolved) -> str | None:
    """Run dirs written before the pair column was recorded in config.json."""
    from ..io.run_dirs import read_run_config

    return (
        read_run_config(resolved.run_location).get("text_pair_column") if resolved.source == "local" else None
    )


class Classifier:
    def __init__(self, model, tokenizer, config: ClassifyConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.limit = model_max_length(tokenizer, model)
        model_config = model.config
        self.id2label = {int(k): v for k, v in model_config.id2label.items()}
        # As the pipeline: sigmoid for multi-label or a single logit, softmax otherwise.
        self.multi_label = model_config.problem_type == "multi_label_classification"
        self.sigmoid = self.multi_label or model_config.num_labels == 1
        self.warned = False
        # A model fine-tuned on pairs records its pair column (see tasks/classification.py).
        self.pair_model = bool(getattr(model_config, "bgcli_text_pair_column", None))
        self.pair_warned = False

    def pairs(self, records) -> list[str | None]:
        """Each record's second text (JSONL --pair-field, or a TSV column), None when it has none;
        a pair model given a lone text, or a single-text model given pairs, is warned about once."""
        pairs = [r.fields.get(self.config.pair_field) for r in records]
        given = [p is not None for p in pairs]
        if not self.pair_warned and self.pair_model and not all(given):
            warn(
                f"this model was fine-tuned on sentence pairs but line {records[given.index(False)].line} "
                f"has one text; give the second in the '{self.config.pair_field}' field or a TSV column"
            )
            self.pair_warned = True
        elif not self.pair_warned and not self.pair_model and any(given):
            warn(
                "the input has sentence pairs but this model's config does not record training on pairs "
                "(`finetune --text-pair-column` does): they are read together, as the pipeline would"
            )
            self.pair_warned = True
        return pairs

    def classify(self, records) -> list:
        field = self.config.pair_field
        bad = {i for i, r in enumerate(records) if not isinstance(r.fields.get(field, ""), str)}
        if bad:  # reported by line; the other records go on
            good = self.classify([r for i, r in enumerate(records) if i not in bad])[::-1]
            error = RecordError(f"field '{field}' is not a string")
            return [error if i in bad else good.pop() for i in range(len(records))]
        pairs = self.pairs(records)
        texts = [r.text for r in records]
        encoded = self._tokenize(texts, pairs, truncation=False)["input_ids"]
        if any(len(ids) > self.limit for ids in encoded) and not self.warned:
            warn(f"texts longer than {self.limit} tokens are truncated")
            self.warned = True
        lengths = [min(len(ids), self.limit) for ids in encoded]

        def run_batch(batch: list[int]) -> list:
            return self._classify_texts([texts[i] for i in batch], [pairs[i] for i in batch])

        return process_sorted(lengths, self.config.batch_size, run_batch)

    def _tokenize(self, texts: list[str], pairs: list[str | None], **kwargs):
        """As the pipeline: text and text_pair together; a batch mixing pairs and lone texts is
        tokenized in two groups (the tokenizer takes pairs for all or for none)."""
        if all(p is None for p in pairs):
            return self.tokenizer(texts, **kwargs)
        if all(p is not None for p in pairs):
            return self.tokenizer(texts, pairs, **kwargs)
        return {
            "input_ids": [
                self.tokenizer(t, p, **kwargs)["input_ids"] for t, p in zip(texts, pairs, strict=True)
            ]
        }

    def _classify_texts(self, texts: list[str], pairs: list[str | None]) -> list:
        import torch

        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            return [self._classify_texts([t], [p])[0] for t, p in zip(texts, pairs, strict=True)]
        inputs = self._tokenize(
            texts, pairs, padding=True, truncation=True, max_length=self.limit, return_tensors="pt"
        )
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float().cpu()
        probs = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
        return [[self.describe(row)] for row in probs.tolist()]

    def describe(self, probs: list[float]) -> dict:
        best = max(range(len(probs)), key=probs.__getitem__)
        record = {"label": self.id2label.get(best, str(best)), "score": probs[best]}
        if self.multi_label:
            record["labels"] = [
                self.id2label.get(i, str(i)) for i, p in enumerate(probs) if p >= self.config.threshold
            ]
        if self.config.all_scores:
            record["scores"] = {self.id2label.get(i, str(i)): p for i, p in enumerate(probs)}
        return record
