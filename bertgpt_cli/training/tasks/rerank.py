"""Cross-encoder training (a re-ranker): the same (anchor, positive[, negative]) records as
--task embedding, turned into (anchor, passage) pairs: the positive labelled 1 and
--rerank-negatives passages labelled 0 (the record's hard negative if it has one, the rest other
records' positives, at random or the best wrong hits of a --mine-negatives embedding model).
A sequence-pair classifier with one logit learns them with binary cross-entropy, the positives
weighted by the number of negatives (as sentence-transformers' cross-encoder training does).

Evaluation re-ranks each eval anchor's candidates (its positive among its negatives): MRR@10,
nDCG@10 and accuracy@1; the best checkpoint has the highest nDCG@10. The run dir is a plain
transformers classifier, so sentence-transformers' `CrossEncoder(DIR)` loads it too."""

from __future__ import annotations

import random
from typing import Any

from ...errors import UsageError
from ...io.console import info
from ...io.data import require_columns
from ..retrieval import RANK_AT, SELECTION_METRIC
from .base import Task, longest_first
from .embedding import complete_records

RELEVANT_LABEL = "relevant"
MINING_POOL = 2  # mined negatives are drawn from the best `MINING_POOL x --rerank-negatives` wrong hits


class RerankTask(Task):
    name = "rerank"
    head_task = "classification"
    default_metric = SELECTION_METRIC
    card_metrics = ("ndcg@10", "mrr@10", "accuracy@1", "loss")
    ordered_eval = True  # each anchor's candidates are scored together (their group ids)
    trains_new_head = True
    limits_records = True  # --max-train-samples counts records, before each becomes 1 + N pairs

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.columns = {"anchor": config.anchor_column, "positive": config.positive_column}
        self.negative_column = config.negative_column
        self.skipped: dict[str, int] = {}
        self.negatives_source = "random: other records' positives"

    # --- data ---------------------------------------------------------------------------------
    def prepare(self, train, others: dict[str, Any]):
        if self.negative_column is None and "negative" in train.column_names:
            self.negative_column = "negative"
        limit = self.config.max_train_samples
        if limit and limit < len(train):  # before mining: only the records that train are embedded
            train = train.shuffle(seed=self.config.seed).select(range(limit))
        prepared = {}
        for split, dataset in {"train": train, **others}.items():
            if dataset is None:
                prepared[split] = None
                continue
            columns = dict(self.columns)
            if self.negative_column and self.negative_column in dataset.column_names:
                columns["negative"] = self.negative_column
            elif self.negative_column and split == "train":
                require_columns(dataset, {self.negative_column: "--negative-column"}, "the train data")
            require_columns(dataset, {c: f"--{g}-column" for g, c in columns.items()}, f"the {split} data")
            dataset, skipped = complete_records(
                dataset, {g: c for g, c in columns.items() if g != "negative"}, split
            )
            if skipped:
                self.skipped[split] = skipped
            prepared[split] = self._pairs(dataset, columns, split)
        return prepared.pop("train"), prepared

    def _pairs(self, dataset, columns: dict[str, str], split: str):
        """One row per (anchor, passage) candidate: label 1 for the positive, 0 for each negative;
        `group` numbers the record the candidates belong to."""
        import datasets

        anchors = dataset[columns["anchor"]]
        positives = dataset[columns["positive"]]
        given = dataset[columns["negative"]] if "negative" in columns else [None] * len(anchors)
        negatives = self._negatives(anchors, positives, given, split)
        rows: dict[str, list] = {"anchor": [], "passage": [], "labels": [], "group": []}
        for group, (anchor, positive, wrong) in enumerate(zip(anchors, positives, negatives, strict=True)):
            for passage, label in [(positive, 1.0), *((text, 0.0) for text in wrong)]:
                rows["anchor"].append(anchor)
                rows["passage"].append(passage)
                rows["labels"].append(label)
                rows["group"].append(group)
        limit = self.config.max_length

        def encode(batch):
            encoded = self.tokenizer(
                batch["anchor"], batch["passage"], truncation="longest_first", max_length=limit
            )
            return {**encoded, "labels": batch["labels"], "group": batch["group"]}

        pairs = datasets.Dataset.from_dict(rows)
        return pairs.map(
            encode, batched=True, remove_columns=["anchor", "passage"], desc=f"tokenizing {split}"
        )

    def _negatives(self, anchors, positives, given, split: str) -> list[list[str]]:
        """--rerank-negatives passages per record, none of them a passage the record's anchor is
        paired with anywhere in the split; seeded, so a resumed run builds the same pairs."""
        relevant: dict[str, set[str]] = {}
        for anchor, positive in zip(anchors, positives, strict=True):
            relevant.setdefault(anchor, set()).add(positive)
        pool = list(dict.fromkeys(positives))
        count = self.config.rerank_negatives
        if len(pool) - max(len(r) for r in relevant.values()) < count:
            raise UsageError(
                f"the {split} data has {len(pool)} distinct positives: too few to draw "
                f"--rerank-negatives {count} wrong passages per anchor; lower it or add records"
            )
        rng = random.Random(f"{self.config.seed}-{split}")
        ranked = self._mined(anchors, pool, relevant, split) if self.config.mine_negatives else None
        result = []
        for row, (anchor, negative) in enumerate(zip(anchors, given, strict=True)):
            wrong = relevant[anchor]
            chosen = (
                [negative] if isinstance(negative, str) and negative.strip() and negative not in wrong else []
            )
            if ranked is not None:
                candidates = [pool[i] for i in ranked[row] if pool[i] not in wrong and pool[i] not in chosen]
                chosen += rng.sample(candidates, min(count - len(chosen), len(candidates)))
            while len(chosen) < count:
                passage = pool[rng.randrange(len(pool))]
                if passage not in wrong and passage not in chosen:
                    chosen.append(passage)
            result.append(chosen[:count])
        return result

    def _mined(self, anchors, pool: list[str], relevant: dict[str, set[str]], split: str) -> list[list[int]]:
        """Each record's best wrong hits among the split's passages by the --mine-negatives model
        (the candidates the cross-encoder must tell apart after a search with that model)."""
        from ...inference.embed import embedder_for
        from ..retrieval import top_hits

        embedder = embedder_for(
            self.config.mine_negatives, offline=self.config.offline, device=self.config.device
        )
        distinct = list(dict.fromkeys(anchors))
        info(f"mining negatives for {len(distinct)} {split} anchors among {len(pool)} passages")
        wanted = MINING_POOL * self.config.rerank_negatives
        hits = top_hits(
            embedder.encode(distinct), embedder.encode(pool), wanted + max(map(len, relevant.values()))
        )
        self.negatives_source = f"mined: the best wrong hits of {self.config.mine_negatives}"
        wrong = {
            a: [i for i in rows if pool[i] not in relevant[a]][:wanted]
            for a, rows in zip(distinct, hits, strict=True)
        }
        return [wrong[a] for a in anchors]

    def split(self, train, fraction: float, seed: int):
        """Held out by record: a record's candidates stay together."""
        groups = sorted(set(train["group"]))
        rng = random.Random(seed)
        held = set(rng.sample(groups, max(1, round(len(groups) * fraction))))
        flags = [g in held for g in train["group"]]
        return (
            train.select([i for i, f in enumerate(flags) if not f]),
            train.select([i for i, f in enumerate(flags) if f]),
        )

    def finalize(self, dataset, split: str):
        """Eval splits: the groups longest first (tight batches), each group's rows together."""
        if split == "train":
            return dataset
        rows: dict[int, list[int]] = {}
        longest: dict[int, int] = {}
        for index, (group, ids) in enumerate(zip(dataset["group"], dataset["input_ids"], strict=True)):
            rows.setdefault(group, []).append(index)
            longest[group] = max(longest.get(group, 0), len(ids))
        groups = list(rows)
        ordered = [groups[i] for i in longest_first([longest[g] for g in groups])]
        return dataset.select([i for group in ordered for i in rows[group]])

    # --- model --------------------------------------------------------------------------------
    def model(self, resolved):
        from transformers import AutoModelForSequenceClassification

        from ...models.resolution import load_config, load_model

        config = load_config(resolved)
        config.num_labels = 1
        config.id2label, config.label2id = {0: RELEVANT_LABEL}, {RELEVANT_LABEL: 0}
        config.problem_type = None  # the loss is ours (binary cross-entropy on the one logit)
        return load_model(
            resolved,
            AutoModelForSequenceClassification,
            "cross-encoder training",
            config=config,
            ignore_mismatched_sizes=True,
        )

    def collator(self):
        from transformers import DataCollatorWithPadding

        pad = DataCollatorWithPadding(self.tokenizer)

        def collate(features):
            import torch

            labels = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
            groups = torch.tensor([f["group"] for f in features], dtype=torch.long)
            batch = pad([{k: v for k, v in f.items() if k not in ("labels", "group")} for f in features])
            batch["labels"], batch["group"] = labels, groups
            return batch

        return collate

    def _logits_and_loss(self, model, inputs):
        import torch

        inputs = dict(inputs)
        labels, _ = inputs.pop("labels"), inputs.pop("group")
        logits = model(**inputs).logits[:, 0].float()
        weight = torch.tensor(float(self.config.rerank_negatives), device=logits.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weight)
        return logits, loss

    def compute_loss(self, model, inputs, num_items_in_batch):
        return self._logits_and_loss(model, inputs)[1]

    def prediction_step(self, model, inputs):
        import torch

        logits, loss = self._logits_and_loss(model, inputs)
        return loss, logits, torch.stack([inputs["labels"].float(), inputs["group"].float()], dim=1)

    def compute_metrics(self):
        def metrics(prediction) -> dict[str, float]:
            return rerank_metrics(prediction.predictions, prediction.label_ids)

        return metrics

    # --- reporting ------------------------------------------------------------------------------
    def run_info(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "negatives_per_anchor": self.config.rerank_negatives,
            "negatives": self.negatives_source,
        }
        if self.skipped:
            record["skipped_records"] = self.skipped
        return record

    def card_notes(self) -> list[str]:
        return [
            "A cross-encoder: score (query, passage) pairs with `bgcli search --rerank DIR` or "
            "sentence-transformers' `CrossEncoder(DIR)` (the sigmoid of its one logit).",
        ]


def rerank_metrics(scores, labels_and_groups) -> dict[str, float]:
    """Each group's candidates ordered by score (ties: the positive last, no free credit): the
    mean MRR@10, nDCG@10 and accuracy@1 over groups."""
    import math

    groups: dict[int, list[tuple[float, float]]] = {}
    for score, (label, group) in zip(scores.reshape(-1).tolist(), labels_and_groups.tolist(), strict=True):
        groups.setdefault(int(group), []).append((float(score), float(label)))
    mrr = ndcg = top1 = 0.0
    for candidates in groups.values():
        ranked = sorted(candidates, key=lambda c: (-c[0], c[1]))[:RANK_AT]
        flags = [label > 0.5 for _, label in ranked]
        first = next((rank for rank, flag in enumerate(flags) if flag), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        ideal = sum(
            1 / math.log2(rank + 2)
            for rank in range(min(sum(label > 0.5 for _, label in candidates), RANK_AT))
        )
        ndcg += sum(1 / math.log2(rank + 2) for rank, flag in enumerate(flags) if flag) / max(ideal, 1e-12)
        top1 += float(bool(flags) and flags[0])
    count = max(len(groups), 1)
    return {"mrr@10": mrr / count, "ndcg@10": ndcg / count, "accuracy@1": top1 / count}
