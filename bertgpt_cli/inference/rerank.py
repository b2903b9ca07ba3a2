"""Cross-encoder re-ranking, shared by `bgcli search --rerank` and `bgcli eval --task retrieval
--rerank`: a sequence-pair classifier (or regressor) reads each (query, passage) pair together
and scores how relevant the passage is, which a bi-encoder's cosine only approximates.

The score of a one-logit model is its sigmoid, as sentence-transformers' CrossEncoder.predict
returns it; of a classifier, the softmax probability of its "relevant" class (the label named
relevant / positive / 1 / LABEL_1, else the last one), one number to order hits by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..options import ModelOptions, option
from .loading import load_for_inference, model_max_length, process_sorted

PANEL = "Re-ranking"
RELEVANT_LABELS = ("relevant", "positive", "1", "label_1", "true", "yes", "entailment")


@dataclass
class RerankOptions:
    """The cross-encoder flags of `search` and `eval --task retrieval`."""

    rerank: str | None = option(
        None,
        "Re-score the top hits with this cross-encoder (a sequence-pair classifier or regressor: "
        "a Hub id, or a `finetune --task rerank` run dir) and order them by its score.",
        panel=PANEL,
        metavar="MODEL",
    )
    rerank_top: int = option(
        20, "How many of the embedding search's best hits the cross-encoder re-scores.", panel=PANEL, ge=1
    )


def relevant_index(id2label: dict) -> int:
    """Which output of a classifier means "relevant"."""
    names = {int(i): str(name).lower() for i, name in id2label.items()}
    for wanted in RELEVANT_LABELS:
        for index, name in names.items():
            if name == wanted:
                return index
    return max(names)


class Reranker:
    """Batched (query, passage) forward passes, longest pairs together."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.limit = model_max_length(tokenizer, model)
        labels = int(model.config.num_labels)
        self.relevant = None if labels == 1 else relevant_index(model.config.id2label)

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        queries = [q for q, _ in pairs]
        passages = [p for _, p in pairs]
        lengths = [
            min(len(ids), self.limit)
            for ids in self.tokenizer(queries, passages, truncation=False)["input_ids"]
        ]

        def run(rows: list[int]) -> list[float]:
            return self._scores([queries[i] for i in rows], [passages[i] for i in rows])

        return process_sorted(lengths, self.batch_size, run)

    def _scores(self, queries: list[str], passages: list[str]) -> list[float]:
        import torch

        inputs = self.tokenizer(
            queries,
            passages,
            padding=True,
            truncation="longest_first",
            max_length=self.limit,
            return_tensors="pt",
        ).to(self.model.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        if self.relevant is None:
            values = torch.sigmoid(logits[:, 0])
        else:
            values = torch.softmax(logits, dim=-1)[:, self.relevant]
        return values.cpu().tolist()


def load_reranker(spec: str, speed: Any, offline: bool, trust_remote_code: bool = False) -> Reranker:
    """The cross-encoder `spec` on the device and precision of `speed` (InferenceOptions)."""
    from transformers import AutoModelForSequenceClassification

    from ..models.heads import require_head

    def check(resolved, model_config) -> None:
        require_head(resolved, model_config, "classification", "re-rank with a cross-encoder")

    model, tokenizer = load_for_inference(
        ModelOptions(model=spec, offline=offline, trust_remote_code=trust_remote_code),
        speed,
        AutoModelForSequenceClassification,
        "re-ranking",
        check=check,
        tokenizer_kwargs={"padding_side": "right"},
        trained_by="bgcli finetune --task rerank",
    )
    return Reranker(model, tokenizer, speed.batch_size)


def rerank_hits(reranker: Reranker, query: str, passages: list[str]) -> list[tuple[int, float]]:
    """(position in `passages`, cross-encoder score), best first; ties keep the first-stage order."""
    scores = reranker.score([(query, passage) for passage in passages])
    order = sorted(range(len(passages)), key=lambda i: -scores[i])
    return [(i, scores[i]) for i in order]


def check_rerank_flags(rerank: str | None, rerank_top: int, top_k: int) -> None:
    if rerank and rerank_top < top_k:
        raise UsageError(
            f"--rerank-top {rerank_top} is fewer than --top-k {top_k}: the cross-encoder must see at "
            f"least the hits it returns (use --rerank-top {top_k} or more)"
        )
