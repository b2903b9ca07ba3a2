"""Retrieval scores as BEIR and sentence-transformers' InformationRetrievalEvaluator report
them: accuracy / recall@k, MRR@k, nDCG@k and MAP@k of queries against a corpus, by cosine
similarity, binary relevance. Used by `finetune --task embedding` (eval during training) and
`bgcli eval --task retrieval`; per-query values feed `eval --compare`'s paired test."""

from __future__ import annotations

import math
from typing import Any

from ..errors import UsageError
from ..io.console import warn

RECALL_AT = (1, 5, 10)
RANK_AT = 10  # MRR@10, nDCG@10, MAP@10
SELECTION_METRIC = "ndcg@10"


def top_hits(query_vectors, corpus_vectors, k: int, chunk: int = 1024) -> list[list[int]]:
    """The k corpus rows most similar to each query (cosine), best first; ties broken by the
    lower corpus row, as the evaluator does."""
    import torch

    queries = torch.nn.functional.normalize(torch.as_tensor(query_vectors).float(), dim=-1)
    corpus = torch.nn.functional.normalize(torch.as_tensor(corpus_vectors).float(), dim=-1)
    k = min(k, corpus.shape[0])
    hits: list[list[int]] = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ corpus.T
        # stable sort on -score: equal scores keep ascending corpus order
        order = torch.sort(-scores, dim=-1, stable=True).indices[:, :k]
        hits.extend(order.tolist())
    return hits


def per_query_scores(hits: list[list[int]], relevant: list[set[int]]) -> dict[str, list[float]]:
    """Each metric's value for each query."""
    scores: dict[str, list[float]] = {f"recall@{k}": [] for k in RECALL_AT}
    scores |= {f"accuracy@{k}": [] for k in RECALL_AT}
    scores |= {f"mrr@{RANK_AT}": [], f"ndcg@{RANK_AT}": [], f"map@{RANK_AT}": []}
    for ranked, wanted in zip(hits, relevant, strict=True):
        flags = [1 if row in wanted else 0 for row in ranked]
        for k in RECALL_AT:
            scores[f"recall@{k}"].append(sum(flags[:k]) / len(wanted))
            scores[f"accuracy@{k}"].append(float(any(flags[:k])))
        top = flags[:RANK_AT]
        first = next((rank for rank, flag in enumerate(top) if flag), None)
        scores[f"mrr@{RANK_AT}"].append(0.0 if first is None else 1.0 / (first + 1))
        ideal = _dcg([1] * len(wanted), RANK_AT)
        scores[f"ndcg@{RANK_AT}"].append(_dcg(top, RANK_AT) / ideal)
        found, precision_sum = 0, 0.0
        for rank, flag in enumerate(top):
            if flag:
                found += 1
                precision_sum += found / (rank + 1)
        scores[f"map@{RANK_AT}"].append(precision_sum / min(RANK_AT, len(wanted)))
    return scores


def _dcg(relevances: list[int], k: int) -> float:
    return sum(rel / math.log2(rank + 2) for rank, rel in enumerate(relevances[:k]))


def retrieval_metrics(query_vectors, corpus_vectors, relevant: list[set[int]]) -> dict[str, Any]:
    """The means over queries, rounded for reports."""
    per_query = per_query_scores(top_hits(query_vectors, corpus_vectors, max(*RECALL_AT, RANK_AT)), relevant)
    return {name: round(sum(values) / len(values), 6) for name, values in per_query.items()}


def retrieval_set(data, anchor_column: str, positive_column: str, max_rows: int | None, source: str):
    """(queries, corpus, relevant corpus rows per query, skipped records) from (anchor, positive)
    records: each distinct anchor is one query, relevant to every positive it appears with;
    each distinct positive is one corpus passage, embedded once however many anchors share it.
    Records without an anchor or a positive are reported by number and skipped."""
    from ..io.data import require_columns

    require_columns(data, {anchor_column: "--anchor-column", positive_column: "--positive-column"}, source)
    rows = len(data) if max_rows is None else min(max_rows, len(data))
    anchors, positives = data[anchor_column][:rows], data[positive_column][:rows]
    passages: dict[str, int] = {}
    wanted: dict[str, set[int]] = {}
    skipped = 0
    for number, (anchor, positive) in enumerate(zip(anchors, positives, strict=True), start=1):
        if not (_is_text(anchor) and _is_text(positive)):
            skipped += 1
            if skipped <= 5:
                warn(f"record {number}: no {'anchor' if not _is_text(anchor) else 'positive'}; skipped")
            continue
        row = passages.setdefault(positive, len(passages))
        wanted.setdefault(anchor, set()).add(row)
    if skipped > rows / 2 or not wanted:
        raise UsageError(
            f"{skipped} of {rows} records of {source} lack an anchor or a positive: check "
            "--anchor-column / --positive-column"
        )
    if skipped:
        warn(f"skipped {skipped} record(s) without an anchor or a positive")
    return list(wanted), list(passages), list(wanted.values()), skipped


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())
