"""Embedding training (a bi-encoder for search): (anchor, positive[, negative]) pairs with the
multiple-negatives ranking loss (in-batch negatives, plus hard negatives when given), or
scored pairs with a cosine loss. The run dir is a sentence-transformers model dir (modules.json,
1_Pooling/, 2_Normalize/), so `SentenceTransformer(DIR)`, `bgcli embed` and `bgcli search` make
the same vectors from it.

Evaluation ranks every eval positive for every eval anchor (training/retrieval.py); the best
checkpoint is the one with the highest nDCG@10."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...io.console import warn
from ...io.data import require_columns
from ..retrieval import SELECTION_METRIC, retrieval_metrics
from .base import Task

GROUPS = ("anchor", "positive", "negative")
# What sentence-transformers reads from config_sentence_transformers.json (no version: bgcli wrote it).
ST_CONFIG = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}


def text_key(text: str) -> int:
    """A stable id for a text (the same in every process): duplicates are found by it, and the
    eval corpus is keyed by it. 56 bits (fits an int64 tensor): a collision among SQuAD's
    ~100,000 texts has odds of ~1e-7 (crc32's 32 bits would have given about one)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=7).digest(), "big")


class EmbeddingTask(Task):
    name = "embedding"
    head_task = "feature-extraction"
    default_metric = SELECTION_METRIC
    card_metrics = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "loss")
    ordered_eval = True  # the metrics pair each anchor with its positive by position
    orders_batches = True  # no batch holds a text twice (batch_order)

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.columns = {
            "anchor": config.anchor_column,
            "positive": config.positive_column,
            "negative": config.negative_column,
        }
        self.has_negatives = False
        self.skipped: dict[str, int] = {}
        self.pooling = "mean"
        self.pooling_source = "default for a model without a sentence-transformers pooling: mean"

    # --- data ---------------------------------------------------------------------------------
    def prepare(self, train, others: dict[str, Any]):
        negative = self.columns["negative"]
        self.has_negatives = negative is not None or "negative" in train.column_names
        if self.has_negatives and negative is None:
            self.columns["negative"] = "negative"
        wanted = {self.columns["anchor"]: "--anchor-column", self.columns["positive"]: "--positive-column"}
        if self.config.loss == "cosine":
            wanted[self.config.score_column] = "--score-column"
        prepared = {}
        for split, dataset in {"train": train, **others}.items():
            if dataset is None:
                prepared[split] = None
                continue
            # Hard negatives train; an eval or test split without them is scored all the same.
            groups = ["anchor", "positive"]
            if self._uses_negatives and (
                split == "train" or self.columns["negative"] in dataset.column_names
            ):
                groups.append("negative")
            needed = wanted | (
                {self.columns["negative"]: "--negative-column"} if "negative" in groups else {}
            )
            require_columns(dataset, needed, f"the {split} data")
            prepared[split] = self._tokenized(self._usable(dataset, split, groups), split, groups)
        return prepared.pop("train"), prepared

    def _usable(self, dataset, split: str, groups: list[str]):
        scores = dataset[self.config.score_column] if self.config.loss == "cosine" else None
        dataset, skipped = complete_records(dataset, {g: self.columns[g] for g in groups}, split, scores)
        if skipped:
            self.skipped[split] = skipped
        return dataset

    @property
    def _uses_negatives(self) -> bool:
        return self.has_negatives and self.config.loss != "cosine"

    def _tokenized(self, dataset, split: str, groups: list[str]):
        limit = self.config.max_length

        def encode(batch):
            out = {}
            for group in groups:
                texts = batch[self.columns[group]]
                encoded = self.tokenizer(texts, truncation=True, max_length=limit)
                out[f"{group}_input_ids"] = encoded["input_ids"]
                out[f"{group}_attention_mask"] = encoded["attention_mask"]
                out[f"{group}_key"] = [text_key(t) for t in texts]
            if self.config.loss == "cosine":
                out["score"] = [float(s) for s in batch[self.config.score_column]]
            return out

        return dataset.map(
            encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {split}"
        )

    def split(self, train, fraction: float, seed: int):
        """Held out by positive: a passage is either trained on or evaluated, never both."""
        keys = sorted(set(train["positive_key"]))
        if len(keys) < 2:
            raise UsageError(
                "--eval-split holds out whole passages, and the training data has one distinct "
                "positive: pass --eval-data, or --eval-split 0"
            )
        rng = random.Random(seed)
        held = set(rng.sample(keys, min(len(keys) - 1, max(1, round(len(keys) * fraction)))))
        flags = [k in held for k in train["positive_key"]]
        return (
            train.select([i for i, f in enumerate(flags) if not f]),
            train.select([i for i, f in enumerate(flags) if f]),
        )

    def batch_order(self, dataset, batch_size: int, seed: int) -> list[int]:
        """The training order for one epoch, read in consecutive batches: no batch holds a text
        (anchor, positive or negative) twice. Each batch takes one record from each of the
        passages with the most records left (ties in a seeded random order), so passages
        asked about many times (SQuAD: ~5 questions a paragraph) are spread over the epoch
        instead of piling up at its end. Only when fewer distinct passages than a batch remain
        (the end of an epoch) do short batches follow each other, and the Trainer's batch can
        then repeat a passage; the loss masks such duplicates (see mnrl)."""
        import heapq

        groups = self._groups_in(dataset.column_names)
        keys = [set(row) for row in zip(*(dataset[f"{g}_key"] for g in groups), strict=True)]
        rng = random.Random(seed)
        by_passage: dict[int, list[int]] = {}
        for index, passage in enumerate(dataset["positive_key"]):
            by_passage.setdefault(passage, []).append(index)
        heap = []
        for passage, rows in by_passage.items():
            rng.shuffle(rows)
            heap.append((-len(rows), rng.random(), passage))
        heapq.heapify(heap)
        placed: list[int] = []
        while heap:
            batch, seen, set_aside = [], set(), []
            while heap and len(batch) < batch_size:
                count, tie, passage = heapq.heappop(heap)
                rows = by_passage[passage]
                if keys[rows[-1]] & seen:  # its anchor or negative is already in this batch
                    set_aside.append((count, tie, passage))
                    continue
                index = rows.pop()
                batch.append(index)
                seen |= keys[index]
                if rows:
                    set_aside.append((count + 1, rng.random(), passage))
            for item in set_aside:
                heapq.heappush(heap, item)
            placed.extend(batch)
        return placed

    @staticmethod
    def _groups_in(columns) -> list[str]:
        """The groups (anchor, positive, negative) a tokenized split or batch holds."""
        return [g for g in GROUPS if f"{g}_key" in columns]

    # --- model --------------------------------------------------------------------------------
    def model(self, resolved):
        from transformers import AutoModel

        from ...models.resolution import load_model

        self._choose_pooling(resolved)
        model = load_model(resolved, AutoModel, "embedding training")
        if getattr(model, "pooler", None) is not None:
            # BERT's [CLS] pooler (new and random when the checkpoint has none) plays no part in
            # sentence vectors: untrained weights to save, and unused parameters DDP refuses.
            model.pooler = None
        self.attach(model)
        return model

    def _choose_pooling(self, resolved) -> None:
        """--pooling, else the model's sentence-transformers pooling (and normalisation), else mean."""
        from ...inference.embed import sentence_transformers_setup

        own = sentence_transformers_setup(resolved)
        if self.config.pooling != "auto":
            self.pooling, self.pooling_source = self.config.pooling, "--pooling"
        elif own is not None:
            self.pooling, self.pooling_source = own.pooling, own.source
        self.normalize = bool(own.normalize) if own is not None else False
        self.pooling_chosen = True

    def attach(self, model) -> None:
        """`bgcli eval` loaded the model: take the pooling its dir declares."""
        self.dimension = model.config.hidden_size
        if not getattr(self, "pooling_chosen", False):
            from ...models.resolution import resolve_model

            self._choose_pooling(resolve_model(model.name_or_path, offline=True))

    def collator(self):
        tokenizer = self.tokenizer

        def collate(features):
            import torch

            batch = {}
            for group in self._groups_in(features[0]):
                padded = tokenizer.pad(
                    [
                        {
                            "input_ids": f[f"{group}_input_ids"],
                            "attention_mask": f[f"{group}_attention_mask"],
                        }
                        for f in features
                    ],
                    return_tensors="pt",
                    pad_to_multiple_of=8,  # few distinct shapes (see engine.RoundedLengths)
                )
                batch[f"{group}_input_ids"] = padded["input_ids"]
                batch[f"{group}_attention_mask"] = padded["attention_mask"]
                batch[f"{group}_key"] = torch.tensor([f[f"{group}_key"] for f in features], dtype=torch.long)
            if "score" in features[0]:
                batch["score"] = torch.tensor([f["score"] for f in features], dtype=torch.float)
            return batch

        return collate

    def embed(self, model, inputs, group: str):
        from ...inference.embed import pool

        mask = inputs[f"{group}_attention_mask"]
        hidden = model(input_ids=inputs[f"{group}_input_ids"], attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.pooling)

    # --- loss ---------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, num_items_in_batch):
        vectors = self.embed_groups(model, inputs, self._groups_in(inputs))
        return self._loss(vectors, inputs)

    def embed_groups(self, model, inputs, groups: list[str]) -> dict:
        """Each group's vectors. One forward per group (a question is not padded to a passage's
        length), except under DistributedDataParallel, which allows one forward per backward:
        there the groups are padded to one width and run together."""
        import torch

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return {group: self.embed(model, inputs, group) for group in groups}
        width = max(inputs[f"{g}_input_ids"].shape[1] for g in groups)
        pad = self.tokenizer.pad_token_id or 0

        def widened(name: str, value: int):
            parts = [inputs[f"{g}_{name}"] for g in groups]
            return torch.cat(
                [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in parts]
            )

        joint = {
            "joint_input_ids": widened("input_ids", pad),
            "joint_attention_mask": widened("attention_mask", 0),
        }
        return dict(zip(groups, self.embed(model, joint, "joint").chunk(len(groups)), strict=True))

    def _loss(self, vectors: dict, inputs):
        if self.config.loss == "cosine":
            return cosine_loss(vectors["anchor"], vectors["positive"], inputs["score"])
        keys = {group: inputs[f"{group}_key"] for group in self._groups_in(inputs)}
        return mnrl(
            vectors["anchor"],
            vectors["positive"],
            vectors.get("negative"),
            keys,
            self.config.scale,
            self.config.symmetric,
        )

    def prediction_step(self, model, inputs):
        """The eval loss, and each row's (anchor, positive) vectors with its positive's id."""
        import torch

        vectors = self.embed_groups(model, inputs, self._groups_in(inputs))
        pairs = torch.stack([vectors["anchor"], vectors["positive"]], dim=1).float()
        return self._loss(vectors, inputs), pairs, inputs["positive_key"]

    def compute_metrics(self):
        def metrics(prediction) -> dict[str, float]:
            pairs, keys = prediction.predictions, prediction.label_ids
            corpus_rows: dict[int, int] = {}
            corpus = []
            for index, key in enumerate(keys.tolist()):
                if key not in corpus_rows:
                    corpus_rows[key] = len(corpus)
                    corpus.append(pairs[index, 1])
            relevant = [{corpus_rows[key]} for key in keys.tolist()]
            import numpy as np

            return retrieval_metrics(pairs[:, 0], np.stack(corpus), relevant)

        return metrics

    # --- saving and reporting -------------------------------------------------------------------
    def save_files(self, folder: Path) -> None:
        """sentence-transformers' model dir layout around the saved encoder."""
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append(
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                }
            )
            (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "1_Pooling").mkdir(exist_ok=True)
        dimension = self.dimension
        modes = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "last": "lasttoken"}
        pooling = {f"pooling_mode_{mode}": self.pooling == name for name, mode in modes.items()}
        pooling |= {"word_embedding_dimension": dimension, "pooling_mode_mean_sqrt_len_tokens": False}
        files = {
            "modules.json": modules,
            "1_Pooling/config.json": pooling,
            "sentence_bert_config.json": {"max_seq_length": self.config.max_length, "do_lower_case": False},
            "config_sentence_transformers.json": ST_CONFIG,
        }
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content, indent=2) + "\n")

    def run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "pooling": self.pooling,
            "pooling_source": self.pooling_source,
            "loss": self.config.loss,
        }
        if self.skipped:
            info["skipped_records"] = self.skipped
        return info


def complete_records(dataset, columns: dict[str, str], split: str, scores=None):
    """(the records with every text of `columns` (group -> column) and, given `scores`, a
    number; how many were skipped). Each skipped one is reported by number (the first five);
    more than half of them refuses the data."""
    values = [dataset[column] for column in columns.values()]
    bad = []
    for row, texts in enumerate(zip(*values, strict=True)):
        missing = [g for g, v in zip(columns, texts, strict=True) if not (isinstance(v, str) and v.strip())]
        if scores is not None and not isinstance(scores[row], (int, float)):
            missing.append("score")
        if missing:
            bad.append(row)
            if len(bad) <= 5:
                warn(f"{split} record {row + 1}: no {', no '.join(missing)}; skipped")
    if not bad:
        return dataset, 0
    if len(bad) > len(dataset) / 2:
        raise UsageError(
            f"{len(bad)} of {len(dataset)} {split} records lack an anchor or a positive: check "
            "--anchor-column / --positive-column"
        )
    warn(f"{split}: skipped {len(bad)} record(s) without an anchor or a positive")
    drop = set(bad)
    return dataset.select([i for i in range(len(dataset)) if i not in drop]), len(bad)


def mnrl(anchors, positives, negatives, keys: dict, scale: float, symmetric: bool):
    """Multiple-negatives ranking loss: each anchor against every positive (and hard negative)
    in the batch by cosine x scale, cross-entropy on its own positive. A candidate that is
    really relevant (the same positive text, another row of the same anchor text, a "negative"
    that is the anchor's positive) is masked out of the negatives, so a batch that holds a
    duplicate cannot teach the model to push a right answer away."""
    import torch
    import torch.nn.functional as F

    a = F.normalize(anchors, dim=-1)
    p = F.normalize(positives, dim=-1)
    anchor_key, positive_key = keys["anchor"], keys["positive"]
    rows = torch.arange(a.shape[0], device=a.device)
    relevant = (positive_key[:, None] == positive_key[None, :]) | (anchor_key[:, None] == anchor_key[None, :])
    relevant[rows, rows] = False
    candidates, masked = p, relevant
    if negatives is not None:
        candidates = torch.cat([p, F.normalize(negatives, dim=-1)])
        masked = torch.cat([relevant, keys["negative"][None, :] == positive_key[:, None]], dim=1)
    scores = (a @ candidates.T * scale).masked_fill(masked.to(a.device), float("-inf"))
    loss = F.cross_entropy(scores, rows)
    if symmetric:  # and each positive against the batch's anchors
        back = (p @ a.T * scale).masked_fill(relevant.T.to(a.device), float("-inf"))
        loss = (loss + F.cross_entropy(back, rows)) / 2
    return loss


def cosine_loss(anchors, positives, scores):
    """sentence-transformers' CosineSimilarityLoss: MSE between cos(a, b) and the pair's score."""
    import torch.nn.functional as F

    return F.mse_loss(F.cosine_similarity(anchors, positives).float(), scores.float())
