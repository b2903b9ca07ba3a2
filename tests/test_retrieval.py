"""Retrieval scoring and re-ranking: `eval --task retrieval` equal to sentence-transformers'
InformationRetrievalEvaluator on the same model, queries and corpus (distractors included);
`--compare` with a paired test; `finetune --task rerank` (negatives never relevant, a run dir
that CrossEncoder loads with our scores); `search --rerank` and `eval --rerank` orders; the
flags refused before anything loads."""

from __future__ import annotations

import json

import pytest

from .test_embedding_training import TOPICS
from .test_sft import write_jsonl


def qa_pairs(count: int) -> list[dict]:
    """Questions on a few passages (several questions per passage; one question twice with two
    passages), as SQuAD-style retrieval data."""
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {"anchor": f"tell me about {topic} {i // 3}", "positive": f"a passage on {topic} {i % 7}"}
        )
    rows.append({"anchor": rows[0]["anchor"], "positive": "a second passage for the first question"})
    return rows


def test_eval_retrieval_equals_the_sentence_transformers_evaluator(cli, bare_encoder_dir, tmp_path):
    """Same queries (distinct anchors), same corpus (distinct positives + distractors), the
    model's pooling: every metric equal to InformationRetrievalEvaluator's to 1e-6."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rows = qa_pairs(30)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    distractors = [f"an unrelated note {i} about {TOPICS[i % 4]}" for i in range(12)]
    corpus_file = tmp_path / "extra.txt"
    corpus_file.write_text("\n".join([*distractors, rows[1]["positive"]]) + "\n")
    result = cli(
        ["eval", "-m", str(bare_encoder_dir), "--task", "retrieval", "--data", str(data)]
        + ["--corpus", str(corpus_file), "--format", "jsonl"]
    )
    assert result.code == 0, result.stderr
    ours = json.loads(result.stdout)
    queries = list(dict.fromkeys(r["anchor"] for r in rows))
    passages = list(dict.fromkeys(r["positive"] for r in rows)) + distractors
    assert (ours["queries"], ours["corpus"]) == (len(queries), len(passages))  # a repeated distractor: once
    relevant = {q: {r["positive"] for r in rows if r["anchor"] == q} for q in queries}
    transformer = models.Transformer(str(bare_encoder_dir))
    pooling = models.Pooling(transformer.get_embedding_dimension(), "cls")  # bgcli's default
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    evaluator = InformationRetrievalEvaluator(
        {str(i): q for i, q in enumerate(queries)},
        {str(i): p for i, p in enumerate(passages)},
        {str(i): {str(passages.index(p)) for p in relevant[q]} for i, q in enumerate(queries)},
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        name="ref",
    )
    want = evaluator(model)
    for ours_name, theirs in [
        ("recall@1", "recall@1"),
        ("recall@10", "recall@10"),
        ("accuracy@5", "accuracy@5"),
    ]:
        assert ours[ours_name] == pytest.approx(want[f"ref_cosine_{theirs}"], abs=1e-6)
    for name in ("mrr@10", "ndcg@10", "map@10"):
        assert ours[name] == pytest.approx(want[f"ref_cosine_{name}"], abs=1e-6)


def test_compare_two_retrievers_with_a_paired_test(cli, bare_encoder_dir, tiny_bert_dir, tmp_path):
    """Per-query nDCG@10 of the two models feeds a paired t-test (scipy's on the same values);
    a model against itself: no difference, p = 1."""
    from bertgpt_cli.api import evaluate

    data = write_jsonl(tmp_path / "pairs.jsonl", qa_pairs(30))
    same = cli(
        ["eval", "--compare", str(bare_encoder_dir), str(bare_encoder_dir), "--task", "retrieval"]
        + ["--data", str(data), "--format", "json"]
    )
    assert same.code == 0, same.stderr
    paired = json.loads(same.stdout)["paired_test"]
    assert paired["p_value"] == 1.0 and paired["better_for_first"] == paired["better_for_second"] == 0
    two = cli(
        ["eval", "--compare", str(bare_encoder_dir), str(tiny_bert_dir), "--task", "retrieval"]
        + ["--data", str(data), "--format", "json"]
    )
    assert two.code == 0, two.stderr
    record = json.loads(two.stdout)
    first = evaluate(str(bare_encoder_dir), data=str(data), task="retrieval")
    second = evaluate(str(tiny_bert_dir), data=str(data), task="retrieval")
    assert record["metrics"]["ndcg@10"]["difference"] == pytest.approx(second["ndcg@10"] - first["ndcg@10"])
    assert record["paired_test"]["test"] == "paired t-test on per-query ndcg@10"
    table = cli(
        ["eval", "--compare", str(bare_encoder_dir), str(tiny_bert_dir), "--task", "retrieval"]
        + ["--data", str(data), "--format", "table"]
    )
    assert "paired t-test" in table.stdout


def test_paired_t_test_is_scipys():
    from scipy.stats import ttest_rel

    from bertgpt_cli.training.evaluation import paired_t_test

    a = {"ndcg@10": [0.1, 0.5, 1.0, 0.0, 0.3]}
    b = {"ndcg@10": [0.2, 0.5, 0.9, 0.4, 0.6]}
    result = paired_t_test(a, b, "ndcg@10")
    assert result["p_value"] == pytest.approx(ttest_rel(a["ndcg@10"], b["ndcg@10"]).pvalue)
    assert (result["better_for_first"], result["better_for_second"]) == (1, 3)


@pytest.fixture(scope="module")
def rerank_run(bare_encoder_dir, tmp_path_factory):
    """A cross-encoder trained a few steps from the tiny encoder on question -> passage pairs."""
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("rerank")
    data = write_jsonl(folder / "pairs.jsonl", qa_pairs(40))
    run = folder / "run"
    args = ["finetune", "--task", "rerank", "-m", str(bare_encoder_dir), "--train-data", str(data)]
    args += ["--max-steps", "3", "--batch-size", "8", "--rerank-negatives", "2", "--eval-split", "0.2"]
    result = run_cli([*args, "--precision", "fp32", "-o", str(run)])
    assert result.code == 0, result.stderr
    return run, data


def test_a_rerank_run_dir_is_a_cross_encoder_with_our_scores(rerank_run):
    from sentence_transformers import CrossEncoder

    from bertgpt_cli.inference.loading import InferenceOptions
    from bertgpt_cli.inference.rerank import load_reranker

    run, _ = rerank_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["eval"]["eval_ndcg@10"] <= 1 and metrics["run"]["negatives_per_anchor"] == 2
    config = json.loads((run / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    pairs = [("tell me about cats 1", "a passage on cats 3"), ("what", "a passage on boats 2 and more")]
    want = CrossEncoder(str(run), device="cpu").predict(pairs)
    ours = load_reranker(str(run), InferenceOptions(precision="fp32", device="cpu"), offline=True).score(
        pairs
    )
    assert ours == pytest.approx([float(x) for x in want], abs=1e-5)


def test_rerank_negatives_are_never_a_relevant_passage(tiny_bert_dir):
    """Drawn at random or mined, a record's negatives are never a passage its anchor is paired
    with anywhere in the data, and the record's own hard negative comes first."""
    import datasets
    from transformers import AutoTokenizer

    from bertgpt_cli.training.config import FinetuneConfig
    from bertgpt_cli.training.tasks.rerank import RerankTask

    rows = qa_pairs(30)
    rows[2]["negative"] = "a hard near miss"
    for row in rows:
        row.setdefault("negative", None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    for mine in (None, str(tiny_bert_dir)):
        config = FinetuneConfig(task="rerank", train_data="unused", rerank_negatives=3, mine_negatives=mine)
        config.offline = True
        task = RerankTask(config, tokenizer)
        train, _ = task.prepare(datasets.Dataset.from_list(rows), {})
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in train["input_ids"]]
        assert len(train) == len(rows) * 4
        for group, row in enumerate(rows):
            wanted = {r["positive"] for r in rows if r["anchor"] == row["anchor"]}
            labels = [train["labels"][i] for i in range(len(train)) if train["group"][i] == group]
            candidates = [texts[i] for i in range(len(train)) if train["group"][i] == group]
            assert labels == [1.0, 0.0, 0.0, 0.0]
            assert not any(p.lower() in c for c in candidates[1:] for p in wanted)
        assert "a hard near miss" in texts[9]  # record 3's first negative


def test_search_and_eval_rerank_order_by_the_cross_encoder(cli, rerank_run, bare_encoder_dir, tmp_path):
    """search --rerank returns the top hits in the cross-encoder's order with both scores and
    the first-stage rank; eval --rerank scores that order."""
    from bertgpt_cli.inference.loading import InferenceOptions
    from bertgpt_cli.inference.rerank import load_reranker

    run, data = rerank_run
    passages = list(dict.fromkeys(json.loads(line)["positive"] for line in data.read_text().splitlines()))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(passages) + "\n")
    query = "tell me about dogs 2"
    result = cli(
        ["search", "-m", str(bare_encoder_dir), "--corpus", str(corpus), "--rerank", str(run)]
        + ["--rerank-top", "6", "-k", "4", "--format", "jsonl", query]
    )
    assert result.code == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all({"score", "rerank_score", "retrieval_rank", "text"} <= set(h) for h in hits)
    reranker = load_reranker(str(run), InferenceOptions(precision="fp32", device="cpu"), offline=True)
    first_stage = cli(
        ["search", "-m", str(bare_encoder_dir), "--corpus", str(corpus), "-k", "6"]
        + ["--format", "jsonl", query]
    )
    top6 = [json.loads(line)["text"] for line in first_stage.stdout.splitlines()]
    scores = reranker.score([(query, text) for text in top6])
    want = [top6[i] for i in sorted(range(6), key=lambda i: -scores[i])][:4]
    assert [h["text"] for h in hits] == want
    assert [h["rerank_score"] for h in hits] == pytest.approx(sorted(scores, reverse=True)[:4], abs=1e-6)

    plain = cli(["eval", "-m", str(bare_encoder_dir), "--data", str(data), "--format", "jsonl"])
    reranked = cli(
        ["eval", "-m", str(bare_encoder_dir), "--data", str(data), "--format", "jsonl"]
        + ["--rerank", str(run), "--rerank-top", "10"]
    )
    assert plain.code == 0 and reranked.code == 0, reranked.stderr
    plain, reranked = json.loads(plain.stdout), json.loads(reranked.stdout)
    assert plain["recall@10"] == reranked["recall@10"]  # re-ranking the top 10 keeps the same ten
    assert "re-ranked by the cross-encoder" in reranked["protocol"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["search", "--corpus", "{corpus}", "--rerank", "x", "--rerank-top", "2", "-k", "3", "q"],
            "--rerank-top 2 is fewer than --top-k 3",
        ),
        (
            ["eval", "-m", "x", "--data", "{data}", "--corpus", "missing.txt"],
            "--corpus file 'missing.txt' not found",
        ),
        (
            ["eval", "-m", "x", "--data", "{data}", "--task", "classification", "--rerank", "y"],
            "--rerank applies to --task retrieval",
        ),
        (
            ["finetune", "--train-data", "{data}", "--rerank-negatives", "2"],
            "--rerank-negatives applies to --task rerank",
        ),
        (
            ["finetune", "--train-data", "{data}", "--anchor-column", "q"],
            "--anchor-column applies to --task embedding or rerank",
        ),
    ],
)
def test_retrieval_flags_are_refused_before_loading(cli, tmp_path, args, message):
    data = write_jsonl(tmp_path / "pairs.jsonl", qa_pairs(5))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a\n")
    result = cli([a.format(data=data, corpus=corpus) for a in args])
    assert result.code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_too_few_passages_for_the_negatives_is_one_line(cli, bare_encoder_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", qa_pairs(4))
    result = cli(
        ["finetune", "--task", "rerank", "-m", str(bare_encoder_dir), "--train-data", str(data)]
        + ["--rerank-negatives", "8", "-o", str(tmp_path / "run")]
    )
    assert result.code == 2 and "too few to draw --rerank-negatives 8" in result.stderr
