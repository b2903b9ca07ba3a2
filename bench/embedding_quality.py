"""Retrieval quality on SQuAD dev (issue 30), one run:

- the squad-minilm-embedding recipe vs minilm as it is: the 10,539 distinct SQuAD dev questions
  against the 2,067 dev paragraphs (`bgcli eval --task retrieval`);
- the squad-minilm-rerank cross-encoder re-ranking that bi-encoder's top 20, on 1,000 of the dev
  questions (seeded sample) still against all 2,067 paragraphs (the other paragraphs given as
  --corpus): a cross-encoder reads 20 pairs per question, ~20x the cost of the search itself.

    python -m bench embedding_quality
"""

from __future__ import annotations

import json

from .embedding_speed import folder, run_quality
from .runner import Result, bgcli

RERANK_QUERIES, RERANK_TOP = 1000, 20


def run() -> list[Result]:
    return run_quality() + run_rerank_quality()


def dev_sample() -> tuple[str, str]:
    """(RERANK_QUERIES dev pairs, every dev paragraph as a JSONL corpus), written once."""
    from bertgpt_cli.io.data import load_data

    dev = load_data("squad-retrieval@validation")
    pairs, corpus = folder() / f"dev-{RERANK_QUERIES}.jsonl", folder() / "dev-paragraphs.jsonl"
    if not pairs.is_file():
        dev.shuffle(seed=0).select(range(RERANK_QUERIES)).to_json(pairs)
    if not corpus.is_file():
        lines = [json.dumps({"text": text}) for text in dict.fromkeys(dev["positive"])]
        corpus.write_text("\n".join(lines) + "\n")
    return str(pairs), str(corpus)


def run_rerank_quality() -> list[Result]:
    from bertgpt_cli.api import evaluate

    embedding, reranker = folder() / "squad-minilm-embedding", folder() / "squad-minilm-rerank"
    if not (reranker / "metrics.json").is_file():
        bgcli(["finetune", "--recipe", "squad-minilm-rerank", "-o", str(reranker), "--overwrite", "--quiet"])
    pairs, corpus = dev_sample()
    common = {"data": pairs, "corpus": corpus, "task": "retrieval", "quiet": True, "offline": True}
    untuned = evaluate("minilm", **common)
    searched = evaluate(str(embedding), **common)
    reranked = evaluate(str(embedding), rerank=str(reranker), rerank_top=RERANK_TOP, **common)
    wall = json.loads((reranker / "metrics.json").read_text())["run"]["wall_time_s"]
    return [
        Result(
            name=f"squad-minilm-rerank on squad-minilm-embedding's top {RERANK_TOP}: SQuAD dev nDCG@10 "
            f"({RERANK_QUERIES} questions x 2,067 paragraphs)",
            ours=round(reranked["ndcg@10"] * 100, 2),
            baseline=round(searched["ndcg@10"] * 100, 2),
            unit="nDCG@10 x 100",
            ratio=round(reranked["ndcg@10"] / searched["ndcg@10"], 3),
            identical=None,
            baseline_name="squad-minilm-embedding alone",
            details={
                "reranked": reranked,
                "embedding": searched,
                "minilm": untuned,
                "rerank_training_wall_s": wall,
            },
        )
    ]
