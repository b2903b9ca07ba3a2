"""Named-entity recognition: word tags from CoNLL files, token/tag records or character spans,
normalised to BIO; a token-classification head; entity-level scores as seqeval counts them.

Sentences longer than --max-length are cut into windows at token boundaries, never
truncated, and the metrics are computed per sentence over every gold word: a word's tag
is read at its first sub-token, wherever that window is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from ...io.console import warn
from ...io.data import require_columns
from ...io.tagging import detect_scheme, ordered_labels, spans_to_word_tags, to_bio, words_with_offsets
from .base import Task, longest_first

# Word-level columns every input layout is turned into before tokenizing.
TOKENS, TAGS = "tokens", "tag_ids"
UNTAGGED = -100  # ignored by the loss


@dataclass
class Layout:
    """Where a split's words sit in its windows, to put predictions back into sentences."""

    gold: list[list[int]]  # tag ids per sentence, every word
    tokens: list[list[str]]
    window_sentence: list[int]  # sentence of each window
    window_words: list[list[int]]  # per window position: the word whose first sub-token it is, or -1


class NerTask(Task):
    name = "ner"
    trains_new_head = True
    default_metric = "f1"
    card_metrics = ("f1", "precision", "recall", "accuracy")
    ordered_eval = True  # windows are put back into sentences by position

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.labels: list[str] = []
        self.labels_source = "training"
        self.layouts: dict[str, Layout] = {}
        self.scheme = ""

    # -- data ---------------------------------------------------------------------------
    def prepare(self, train, others: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not getattr(self.tokenizer, "is_fast", False):
            raise UsageError(
                "NER needs a fast tokenizer (word ids and character offsets); this model has only "
                "a slow one: convert it, or pick a model with a tokenizer.json"
            )
        source = self.config.train_data
        words = {"train": self._word_tags(train, source)}
        words |= {split: self._word_tags(data, split) for split, data in others.items()}
        self.scheme = self.config.tag_scheme
        if self.scheme == "auto":
            self.scheme = detect_scheme(words["train"][1])
        normalised = {split: self._to_bio(tags, split) for split, (_, tags) in words.items()}
        if not self.labels:  # else the model's own (use_model_labels)
            self.labels = ordered_labels(tag for sentence in normalised["train"] for tag in sentence)
        if len(self.labels) < 2:
            raise UsageError(f"{source} has no entity tags (only 'O'); check --tags-column / --tag-column")
        encoded = {
            split: self._encode(words[split][0], normalised[split], source if split == "train" else split)
            for split in words
        }
        train = encoded.pop("train")
        return train, encoded

    def use_model_labels(self, model_config) -> None:
        self.labels = [str(model_config.id2label[i]) for i in range(len(model_config.id2label))]
        self.labels_source = "the model's labels"

    def _word_tags(self, dataset, source: str) -> tuple[list[list[str]], list[list[str]]]:
        """(tokens, tags as text) per sentence, from any of the three input layouts."""
        c = self.config
        columns = dataset.column_names
        if c.tokens_column in columns:
            require_columns(dataset, {c.tags_column: "--tags-column"}, source)
            tokens, tags = dataset[c.tokens_column], self._tag_names(dataset, source)
            return self._checked_pairs(tokens, tags, source)
        if c.text_column in columns and c.entities_column in columns:
            return self._from_spans(dataset[c.text_column], dataset[c.entities_column], source)
        raise UsageError(
            f"{source} has columns {', '.join(columns)}; NER data needs token lists and tag lists "
            f"('{c.tokens_column}' and '{c.tags_column}': --tokens-column / --tags-column), text with "
            f"character spans ('{c.text_column}' and '{c.entities_column}'), or a CoNLL file"
        )

    def _tag_names(self, dataset, source: str) -> list[list[str]]:
        column = self.config.tags_column
        feature = getattr(dataset.features[column], "feature", None)
        names = getattr(feature, "names", None)  # Sequence(ClassLabel), as the Hub's conll2003
        rows = dataset[column]
        if names is None and self.config.label_names:  # integer tags named by --label-names
            names = [n.strip() for n in self.config.label_names.split(",")]
        if names is None:
            if any(isinstance(tag, int) for row in rows[:100] if row for tag in row):
                raise UsageError(
                    f"{source}: the tags in '{column}' are numbers without names; pass "
                    "--label-names O,B-PER,I-PER,... (one name per id, in id order)"
                )
            return [[str(tag) for tag in row] if row is not None else None for row in rows]
        return [[self._tag_name(names, i, source) for i in row] if row is not None else None for row in rows]

    def _tag_name(self, names: list[str], tag_id, source: str) -> str:
        if not isinstance(tag_id, int) or not 0 <= tag_id < len(names):
            raise UsageError(
                f"{source}: tag id {tag_id!r} has no name ({len(names)} names: {', '.join(names)})"
            )
        return names[tag_id]

    def _checked_pairs(self, tokens, tags, source: str) -> tuple[list[list[str]], list[list[str]]]:
        kept_tokens, kept_tags, empty = [], [], []
        for row, (words, word_tags) in enumerate(zip(tokens, tags, strict=True), 1):
            if not words:
                empty.append(row)
                continue
            if word_tags is None or len(words) != len(word_tags):
                count = "no" if word_tags is None else len(word_tags)
                raise UsageError(
                    f"{source}: record {row} has {len(words)} tokens but {count} tags; "
                    "every token needs one tag"
                )
            kept_tokens.append([str(w) for w in words])
            kept_tags.append(word_tags)
        if empty:
            shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
            warn(f"{source}: skipping {len(empty)} record(s) without tokens (records {shown})")
        return kept_tokens, kept_tags

    def _from_spans(self, texts, entity_lists, source: str) -> tuple[list[list[str]], list[list[str]]]:
        """Annotation-tool exports: words from the tokenizer's pre-tokenizer, tags from spans."""
        tokens, tags = [], []
        for row, (text, entities) in enumerate(zip(texts, entity_lists, strict=True), 1):
            if not isinstance(text, str) or not text.strip():
                continue
            words = words_with_offsets(text, self.tokenizer)
            where = f"{source}: record {row}"
            tags.append(spans_to_word_tags(words, _span_dicts(entities, where), where))
            tokens.append([word for word, _ in words])
        return tokens, tags

    def _to_bio(self, sentences: list[list[str]], split: str) -> list[list[str]]:
        converted, repaired = [], 0
        for tags in sentences:
            bio, fixed = to_bio(tags)
            converted.append(bio)
            repaired += fixed
        # IO and IOB1 open chunks with I- by design; in BIO-like schemes that is an error.
        if repaired and self.scheme in ("bio", "bioes", "bilou"):
            warn(
                f"{split}: {repaired} tag(s) start an entity with I- (after O or another type); "
                "read as B-, as seqeval does"
            )
        return converted

    def _encode(self, tokens: list[list[str]], tags: list[list[str]], split: str):
        import datasets

        ids = {name: i for i, name in enumerate(self.labels)}
        unseen = sorted({t for sentence in tags for t in sentence} - set(ids))
        if unseen:
            raise UsageError(
                f"{split} data has tag(s) {', '.join(unseen[:5])} not seen in {self.labels_source} "
                f"({', '.join(self.labels)}); fix the data or train on them too"
            )
        encoded = [[ids[t] for t in sentence] for sentence in tags]
        return datasets.Dataset.from_dict({TOKENS: tokens, TAGS: encoded})

    def finalize(self, dataset, split: str):
        """Tokenize into windows of at most --max-length tokens; keep where each word went."""
        windows = dataset.map(
            self._window_function(),
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
        )
        if split != "train":
            windows = windows.select(longest_first([len(ids) for ids in windows["input_ids"]]))
            self.layouts[split] = Layout(
                gold=dataset[TAGS],
                tokens=dataset[TOKENS],
                window_sentence=windows["sentence"],
                window_words=windows["word_index"],
            )
        return windows.remove_columns(["sentence", "word_index"])

    def _window_function(self):
        # Only what tokenizing uses is in the closure: datasets hashes it for its cache key.
        tokenizer, max_length = self.tokenizer, self.config.max_length
        label_all = self.config.label_all_tokens
        inside = _inside_ids(self.labels)

        def tokenize(batch, indices):
            encoded = tokenizer(
                batch[TOKENS],
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
                return_overflowing_tokens=True,
            )
            samples = encoded.pop("overflow_to_sample_mapping")
            labels, sentences, word_index = [], [], []
            seen: dict[int, set[int]] = {}
            for window, sample in enumerate(samples):
                tags, done = batch[TAGS][sample], seen.setdefault(sample, set())
                window_labels, firsts = [], []
                for word in encoded.word_ids(window):
                    first = word is not None and word not in done
                    firsts.append(word if first else -1)
                    if word is None:
                        window_labels.append(UNTAGGED)
                    elif first:
                        window_labels.append(tags[word])
                        done.add(word)
                    else:
                        window_labels.append(inside[tags[word]] if label_all else UNTAGGED)
                labels.append(window_labels)
                sentences.append(indices[sample])
                word_index.append(firsts)
            return {**encoded, "labels": labels, "sentence": sentences, "word_index": word_index}

        return tokenize

    # -- model and training -------------------------------------------------------------
    def model(self, resolved):
        from transformers import AutoModelForTokenClassification

        from ...models.resolution import load_config, load_model

        config = load_config(resolved)
        config.num_labels = len(self.labels)
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {name: i for i, name in enumerate(self.labels)}
        return load_model(
            resolved,
            AutoModelForTokenClassification,
            "token classification",
            config=config,
            ignore_mismatched_sizes=True,
        )

    def collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.tokenizer)

    def compute_metrics(self):
        from ..metrics import EntityMetrics

        metrics = EntityMetrics()

        def compute(eval_pred) -> dict[str, float]:
            predicted, gold = self.sentences(eval_pred.predictions)
            return metrics(predicted, gold)

        return compute

    def sentences(self, logits) -> tuple[list[list[str]], list[list[str]]]:
        """(predicted, gold) BIO tags per sentence of the split being evaluated. A word whose
        sub-tokens all vanished (a control character) counts as predicted O, never dropped."""
        layout = self.layouts[self.metrics_split]
        if len(layout.window_sentence) != len(logits):
            raise RuntimeError(
                f"{len(logits)} predictions for {len(layout.window_sentence)} {self.metrics_split} windows"
            )
        best = logits.argmax(axis=-1)
        names = self.labels
        predicted = [["O"] * len(gold) for gold in layout.gold]
        for window, (sentence, words) in enumerate(
            zip(layout.window_sentence, layout.window_words, strict=True)
        ):
            row = predicted[sentence]
            for position, word in enumerate(words):
                if word >= 0:
                    row[word] = names[int(best[window, position])]
        gold = [[names[i] for i in sentence] for sentence in layout.gold]
        return predicted, gold

    # -- report ---------------------------------------------------------------------------
    def test_report(self, prediction) -> dict[str, Any]:
        from seqeval.metrics import classification_report

        predicted, gold = self.sentences(prediction.predictions)
        per_type = classification_report(gold, predicted, output_dict=True, zero_division=0)
        labels, matrix = entity_confusion(gold, predicted)
        return {
            "per_type": {k: {m: float(v) for m, v in values.items()} for k, values in per_type.items()},
            "confusion_matrix": matrix,
            "confusion_labels": labels,
            "examples": self._examples(predicted, gold),
        }

    def _examples(self, predicted, gold, count: int = 5) -> list[dict[str, Any]]:
        """The first test sentences that have entities: what a reader checks first."""
        from seqeval.metrics.sequence_labeling import get_entities

        tokens = self.layouts[self.metrics_split].tokens
        examples = []
        for words, gold_tags, predicted_tags in zip(tokens, gold, predicted, strict=True):
            if not any(t != "O" for t in gold_tags):
                continue

            def named(tags, words=words):
                return [f"{' '.join(words[s : e + 1])} [{kind}]" for kind, s, e in get_entities(tags)]

            examples.append(
                {"text": " ".join(words), "gold": named(gold_tags), "predicted": named(predicted_tags)}
            )
            if len(examples) == count:
                break
        return examples

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        report = metrics.get("test_report") or {}
        per_type = report.get("per_type") or {}
        lines: list[str] = []
        if per_type:
            lines += ["## Test scores per entity type", "", "| type | precision | recall | f1 | support |"]
            lines.append("|---|---|---|---|---|")
            for kind, v in per_type.items():
                row = f"{v['precision']:.4f} | {v['recall']:.4f} | {v['f1-score']:.4f} | {int(v['support'])}"
                lines.append(f"| {kind} | {row} |")
            lines.append("")
        if report.get("examples"):
            lines += ["## Test sentences: gold vs predicted", ""]
            for example in report["examples"]:
                lines.append(f"**{example['text']}**")
                lines.append(f"- gold: {', '.join(example['gold']) or '(none)'}")
                lines.append(f"- predicted: {', '.join(example['predicted']) or '(none)'}")
                lines.append("")
        return lines

    def run_info(self) -> dict[str, Any]:
        return {"labels": self.labels, "tag_scheme": self.scheme}

    def card_notes(self) -> list[str]:
        kinds = sorted({label[2:] for label in self.labels if label != "O"})
        return [f"entity types: {', '.join(kinds)} (BIO tags; input scheme {self.scheme})"]


def _inside_ids(labels: list[str]) -> list[int]:
    """For --label-all-tokens: a word's later sub-tokens get I-X where the word has B-X."""
    ids = {name: i for i, name in enumerate(labels)}
    return [ids.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)]


def _span_dicts(entities, where: str) -> list[dict]:
    if entities is None:
        return []
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise UsageError(f"{where}: 'entities' must be a list of {{start, end, label}} objects")
    for entity in entities:
        missing = [key for key in ("start", "end", "label") if entity.get(key) is None]
        if missing:
            raise UsageError(f"{where}: an entity has no {', '.join(missing)} ({entity})")
    return entities


# Row/column name for "no entity here": a missed gold entity or a spurious prediction.
NO_ENTITY = "(none)"


def entity_confusion(gold: list[list[str]], predicted: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Entities matched by exact span: rows gold type, columns predicted type; a gold entity
    with no predicted span is in column (none) (missed), a predicted one with no gold span in
    row (none) (spurious)."""
    from seqeval.metrics.sequence_labeling import get_entities

    pairs: list[tuple[str, str]] = []
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans = {(s, e): kind for kind, s, e in get_entities(gold_tags)}
        predicted_spans = {(s, e): kind for kind, s, e in get_entities(predicted_tags)}
        pairs += [(kind, predicted_spans.get(span, NO_ENTITY)) for span, kind in gold_spans.items()]
        pairs += [(NO_ENTITY, kind) for span, kind in predicted_spans.items() if span not in gold_spans]
    kinds = sorted({k for pair in pairs for k in pair} - {NO_ENTITY}) + [NO_ENTITY]
    index = {k: i for i, k in enumerate(kinds)}
    matrix = [[0] * len(kinds) for _ in kinds]
    for gold_kind, predicted_kind in pairs:
        matrix[index[gold_kind]][index[predicted_kind]] += 1
    return kinds, matrix
