"""BERT's pre-training objective: masked LM together with next-sentence prediction (`mlm+nsp`).

Documents (one record each; blank-line separated paragraphs of a text file) are split into
sentences and turned into pairs as in the BERT paper's data builder: segment A is a run of a
document's sentences, segment B either the sentences that follow it (IsNext, label 0) or a run
from another document (NotNext, label 1), 50/50, filled up to the block size (10% of pairs
shorter, so the model also sees short inputs), with token type ids 0 / 1. Pairs are drawn
once per split with --seed; the masks of training batches are drawn afresh every batch.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ...errors import UsageError
from .language_modeling import EVAL_MASKING_SEED, MAP_BATCH, MaskedLMTask
from .token_loss import token_cross_entropy

SHORT_PAIR_SHARE = 0.1  # BERT's short_seq_prob
NOT_NEXT_SHARE = 0.5
MIN_SPLIT_TOKENS = 8  # a one-sentence chunk at least this long is cut in two (see split_in_two)
# Sentence ends: ., ! or ? (and closing quotes/brackets) followed by space; or a line break.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\s*\n+\s*")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s and s.strip()]


class MaskedLMWithNspTask(MaskedLMTask):
    name = "mlm+nsp"
    head_task = "mlm"
    card_metrics = ("loss", "mlm_loss", "perplexity", "top1_accuracy", "top5_accuracy", "nsp_accuracy")
    stat_names = ("loss_sum", "tokens", "top1_accuracy", "top5_accuracy", "nsp_loss", "nsp_correct")
    documents_per_paragraph = True  # text files: a document is a blank-line separated paragraph

    def _tokenize(self, dataset):
        """Each document as a list of tokenized sentences (ids without special tokens); the
        column checks of `prepare` are the language-modeling tasks'."""
        column, tokenizer = self.config.text_column, self.tokenizer

        def tokenize(batch):
            documents = [split_sentences(t) if isinstance(t, str) else [] for t in batch[column]]
            flat = [s for doc in documents for s in doc]
            ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
            out, at = [], 0
            for doc in documents:
                out.append([x for x in ids[at : at + len(doc)] if x])
                at += len(doc)
            return {"sentences": out}

        return dataset.map(tokenize, batched=True, batch_size=MAP_BATCH, remove_columns=dataset.column_names)

    def finalize(self, dataset, split: str):
        pairs = self.build_pairs(dataset, split)
        if len(pairs) == 0:
            raise UsageError(
                f"the {split} documents gave no sentence pairs; next-sentence prediction needs documents "
                "of several sentences (or use --objective mlm)"
            )
        return pairs if split == "train" else self.mask_once(pairs)

    def build_pairs(self, dataset, split: str):
        block = self.block_size
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        seed = self.config.seed

        def make(batch, indices):
            # One RNG per batch, seeded by --seed and the batch's position: the same pairs every
            # time the split is built (datasets caches them under this fingerprint too).
            rng = random.Random(f"{seed}-{split}-{indices[0]}")
            out: dict[str, list] = {k: [] for k in PAIR_COLUMNS}
            for a, b, not_next in document_pairs(batch["sentences"], block - 3, rng):
                append_pair(out, cls, sep, a, b, not_next)
            return out

        shuffled = dataset.shuffle(seed=seed)  # NotNext partners come from other sources too
        return shuffled.map(
            make,
            batched=True,
            batch_size=MAP_BATCH,
            with_indices=True,
            remove_columns=dataset.column_names,
            new_fingerprint=f"{shuffled._fingerprint}-nsp-{seed}-{split}-{block}".replace(".", "_"),
        )

    def mask_once(self, dataset):
        """Fixed masks, as for MLM, keeping the pair's segment ids and NSP label."""
        kept = dataset.select_columns(["token_type_ids", "next_sentence_label"])
        masked = super().mask_once(dataset)
        for column in kept.column_names:
            masked = masked.add_column(column, kept[column])
        return masked

    def model(self, resolved):
        from transformers import AutoModelForPreTraining

        from ...models.resolution import load_config, load_model

        config = load_config(resolved)
        if config.model_type != "bert":
            raise UsageError(
                f"--objective mlm+nsp needs BERT's pre-training heads; '{resolved.spec}' is "
                f"{config.model_type}: use --objective mlm"
            )
        model = load_model(
            resolved, AutoModelForPreTraining, "masked-LM + next-sentence pre-training", config
        )
        self.attach(model)
        self.from_scratch = resolved.source == "scratch"
        return model

    def pretraining_losses(self, model, inputs):
        """Per-masked-token MLM losses (projection at masked positions only) and per-pair NSP losses."""
        import torch.nn.functional as F

        labels = inputs["labels"]
        selected = labels != -100
        with self.projection.only(selected):
            output = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                token_type_ids=inputs["token_type_ids"],
            )
        targets = self.projection.pad_targets(labels[selected])
        nsp_logits = output.seq_relationship_logits.float()
        nsp_losses = F.cross_entropy(nsp_logits, inputs["next_sentence_label"], reduction="none")
        return (
            token_cross_entropy(output.prediction_logits, targets),
            output.prediction_logits,
            targets,
            selected,
            (
                nsp_losses,
                nsp_logits,
            ),
        )

    def compute_loss(self, model, inputs, num_items_in_batch):
        mlm_losses, _, _, _, (nsp_losses, _) = self.pretraining_losses(model, inputs)
        if num_items_in_batch is None:
            return (
                mlm_losses.sum() / mlm_losses.new_tensor(float(self.projection.count)).clamp(min=1)
                + nsp_losses.mean()
            )
        # The Trainer does not divide by --grad-accum when it passes num_items_in_batch, so the
        # NSP mean is spread over the accumulated batches here as the MLM sum is.
        return mlm_losses.sum() / num_items_in_batch + nsp_losses.sum() / (
            len(nsp_losses) * self.config.grad_accum
        )

    def prediction_step(self, model, inputs):
        import torch

        mlm_losses, logits, targets, selected, (nsp_losses, nsp_logits) = self.pretraining_losses(
            model, inputs
        )
        stats = self.projection_stats(mlm_losses, logits, targets, selected)
        nsp_correct = (nsp_logits.argmax(-1) == inputs["next_sentence_label"]).float()
        stats = torch.cat([stats, nsp_losses[:, None], nsp_correct[:, None]], dim=1)
        loss = stats[:, 0].sum() / stats[:, 1].sum().clamp(min=1) + nsp_losses.mean()
        return loss, stats, stats[:, 1]

    def compute_metrics(self):
        def compute(eval_pred) -> dict[str, float]:
            import math

            stats = eval_pred.predictions
            totals = dict(zip(self.stat_names, stats.sum(axis=0).tolist(), strict=True))
            tokens, pairs = max(totals["tokens"], 1.0), max(len(stats), 1)
            mlm_loss, nsp_loss = totals["loss_sum"] / tokens, totals["nsp_loss"] / pairs
            return {
                "loss": mlm_loss + nsp_loss,  # the training objective
                "mlm_loss": mlm_loss,
                "perplexity": math.exp(min(mlm_loss, 700.0)),
                "top1_accuracy": totals["top1_accuracy"] / tokens,
                "top5_accuracy": totals["top5_accuracy"] / tokens,
                "nsp_loss": nsp_loss,
                "nsp_accuracy": totals["nsp_correct"] / pairs,
                "tokens": totals["tokens"],
            }

        return compute

    def run_info(self) -> dict[str, Any]:
        info = super().run_info()
        info["nsp_protocol"] = (
            f"sentence pairs of up to {self.block_size} tokens from documents (one record each), "
            f"B = the next sentences or ({NOT_NEXT_SHARE:.0%}) a run from another document, drawn once "
            f"with seed {self.config.seed}; eval masks fixed with seed {EVAL_MASKING_SEED}"
        )
        return info

    def layout(self) -> str:
        return f"sentence pairs of up to {self.block_size} tokens"

    def card_notes(self) -> list[str]:
        return [*super().card_notes(), f"next-sentence prediction: {self.run_info()['nsp_protocol']}"]


PAIR_COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "next_sentence_label")


def append_pair(out: dict[str, list], cls: int, sep: int, a: list[int], b: list[int], not_next: bool) -> None:
    out["input_ids"].append([cls, *a, sep, *b, sep])
    out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
    out["attention_mask"].append([1] * (len(a) + len(b) + 3))
    out["special_tokens_mask"].append([1] + [0] * len(a) + [1] + [0] * len(b) + [1])
    out["next_sentence_label"].append(int(not_next))


def document_pairs(documents: list[list[list[int]]], max_tokens: int, rng: random.Random):
    """(A, B, is_not_next) for every chunk of every document, as BERT's
    create_instances_from_document: chunks of whole sentences up to a target length; A = the
    first 1..n-1 sentences of a chunk; B = the rest, or a random run of another document (the
    unused sentences of the chunk then start the next chunk)."""
    for d, sentences in enumerate(documents):
        target = max_tokens if rng.random() >= SHORT_PAIR_SHARE else rng.randint(2, max_tokens)
        chunk: list[list[int]] = []
        length, i = 0, 0
        while i < len(sentences):
            chunk.append(sentences[i])
            length += len(sentences[i])
            if i == len(sentences) - 1 or length >= target:
                sentences_used = len(chunk)
                if len(chunk) == 1 and len(chunk[0]) >= MIN_SPLIT_TOKENS:
                    chunk = split_in_two(chunk[0], rng)
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                not_next = len(chunk) == 1 or rng.random() < NOT_NEXT_SHARE
                if not_next:
                    b = random_run(documents, d, target - len(a), rng)
                    if b is None:  # a single document: no other to draw from
                        not_next, b = False, [t for s in chunk[a_end:] for t in s]
                    i -= min(len(chunk) - a_end, sentences_used - 1)  # give unused sentences back
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                a, b = truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    yield a, b, not_next
                chunk, length = [], 0
            i += 1


def split_in_two(sentence: list[int], rng: random.Random) -> list[list[int]]:
    """A one-sentence chunk (a one-line review) as two segments cut at a random token, so short
    documents give IsNext pairs too and the labels stay 50/50 (BERT's builder makes every such
    chunk NotNext)."""
    cut = rng.randint(len(sentence) // 4, 3 * len(sentence) // 4)
    return [sentence[:cut], sentence[cut:]]


def random_run(documents, current: int, wanted: int, rng: random.Random) -> list[int] | None:
    """Sentences of another non-empty document from a random start, up to `wanted` tokens."""
    candidates = len(documents) - 1
    for _ in range(10):
        if candidates < 1:
            return None
        other = rng.randrange(candidates)
        other += other >= current  # never the current document
        sentences = documents[other]
        if sentences:
            start = rng.randrange(len(sentences))
            run: list[int] = []
            for sentence in sentences[start:]:
                run.extend(sentence)
                if len(run) >= wanted:
                    break
            return run
    return None


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> tuple[list, list]:
    """Drop tokens from the longer segment, from its front or back at random, until both fit."""
    while len(a) + len(b) > max_tokens:
        longer, shorter = (a, b) if len(a) > len(b) else (b, a)
        cut = min(len(a) + len(b) - max_tokens, max(len(longer) - len(shorter), 1))
        front = sum(rng.random() < 0.5 for _ in range(cut))  # each token from the front or the back
        trimmed = longer[front : len(longer) - (cut - front)]
        a, b = (trimmed, b) if longer is a else (a, trimmed)
    return a, b
