"""finetune --task embedding: the no-duplicates batch order, the losses equal to
sentence-transformers' on the same embeddings, duplicates masked out of the negatives, a run
dir that SentenceTransformer loads with the vectors of `bgcli embed`, bad records, and the
retrieval metrics equal to sentence-transformers' InformationRetrievalEvaluator."""

from __future__ import annotations

import json
import random

import pytest

from .test_sft import write_jsonl

TOPICS = ["cats", "dogs", "cars", "rain", "music", "films", "bread", "trees", "boats", "chess"]


def pairs(count: int, negatives: bool = False) -> list[dict]:
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        row = {"anchor": f"what about {topic} {i}", "positive": f"a passage on {topic} number {i}"}
        if negatives:
            row["negative"] = f"a passage on {TOPICS[(i + 1) % len(TOPICS)]} number {i}"
        rows.append(row)
    return rows


def task_for(tokenizer_dir, **flags):
    from transformers import AutoTokenizer

    from bertgpt_cli.training.config import FinetuneConfig
    from bertgpt_cli.training.tasks import EmbeddingTask

    config = FinetuneConfig(task="embedding", train_data="unused", **flags)
    return EmbeddingTask(config, AutoTokenizer.from_pretrained(tokenizer_dir))


def test_batches_never_hold_the_same_text_twice(bare_encoder_dir):
    """40 questions on 10 passages (4 each), batches of 4: every batch but the tail of
    leftovers has 4 different passages, and the order is a permutation of the records."""
    from datasets import Dataset

    from bertgpt_cli.training.tasks.embedding import text_key

    task = task_for(bare_encoder_dir)
    rows = [{"anchor": f"q{i}", "positive": f"passage {i % 10}"} for i in range(40)]
    dataset = Dataset.from_list(
        [{"anchor_key": text_key(r["anchor"]), "positive_key": text_key(r["positive"])} for r in rows]
    )
    for seed in (1, 2, 3):
        order = task.batch_order(dataset, 4, seed)
        assert sorted(order) == list(range(40))
        batches = [order[i : i + 4] for i in range(0, 40, 4)]
        clean = [len({rows[i]["positive"] for i in batch}) == len(batch) for batch in batches]
        assert all(clean), f"seed {seed}: batches with a repeated passage: {clean}"
    assert task.batch_order(dataset, 4, 1) != task.batch_order(dataset, 4, 2)  # reshuffled per epoch


def st_embeddings(count: int = 6, dimension: int = 8, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(count, dimension, generator=generator) for _ in range(3)]


def unique_keys(count: int, offset: int = 0):
    import torch

    return torch.arange(offset, offset + count)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_mnrl_equals_sentence_transformers(bare_encoder_dir, with_negatives):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from bertgpt_cli.training.tasks.embedding import mnrl

    anchors, positives, negatives = st_embeddings()
    reference = MultipleNegativesRankingLoss(
        SentenceTransformer(str(bare_encoder_dir), device="cpu"), scale=20.0
    )
    columns = [anchors, positives] + ([negatives] if with_negatives else [])
    want = reference.compute_loss_from_embeddings(columns, None)
    keys = {"anchor": unique_keys(6), "positive": unique_keys(6, 100), "negative": unique_keys(6, 200)}
    got = mnrl(anchors, positives, negatives if with_negatives else None, keys, 20.0, symmetric=False)
    assert got.item() == pytest.approx(want.item(), abs=1e-5)


def test_a_duplicate_positive_in_a_batch_is_not_a_negative():
    """Rows 0 and 1 share a passage: the loss is what it is without row 1's copy among row 0's
    negatives (and vice versa), not a penalty for ranking the right passage high."""
    import torch

    from bertgpt_cli.training.tasks.embedding import mnrl

    anchors, positives, _ = st_embeddings()
    positives[1] = positives[0]
    keys = {"anchor": unique_keys(6), "positive": torch.tensor([7, 7, 2, 3, 4, 5])}
    masked = mnrl(anchors, positives, None, keys, 20.0, symmetric=False)
    unmasked = mnrl(anchors, positives, None, {**keys, "positive": unique_keys(6)}, 20.0, symmetric=False)
    assert masked.item() < unmasked.item()
    a = torch.nn.functional.normalize(anchors, dim=-1)
    p = torch.nn.functional.normalize(positives, dim=-1)
    scores = a @ p.T * 20
    scores[0, 1] = scores[1, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(scores, torch.arange(6))
    assert masked.item() == pytest.approx(expected.item(), abs=1e-6)


def test_cosine_loss_equals_sentence_transformers(bare_encoder_dir):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    from bertgpt_cli.training.tasks.embedding import cosine_loss

    anchors, positives, _ = st_embeddings()
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 1.0, 0.0])
    reference = CosineSimilarityLoss(SentenceTransformer(str(bare_encoder_dir), device="cpu"))
    want = reference.compute_loss_from_embeddings([anchors, positives], scores)
    assert cosine_loss(anchors, positives, scores).item() == pytest.approx(want.item(), abs=1e-6)


def test_a_run_dir_is_a_sentence_transformers_model_with_the_vectors_of_embed(
    cli, bare_encoder_dir, tmp_path
):
    """A plain BERT starts with mean pooling and saves it; SentenceTransformer(DIR) and `bgcli
    embed -m DIR` give the same vectors; a record without a positive is reported and skipped."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    rows = pairs(40)
    rows[6]["positive"] = ""
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = tmp_path / "run"
    args = ["finetune", "--task", "embedding", "-m", str(bare_encoder_dir), "--train-data", str(data)]
    args += [
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--eval-split",
        "0.25",
        "-o",
        str(run),
        "--precision",
        "fp32",
    ]
    result = cli(args)
    assert result.code == 0, result.stderr
    assert "train record 7: no positive; skipped" in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["pooling"] == "mean" and 0 <= metrics["eval"]["eval_ndcg@10"] <= 1
    pooling = json.loads((run / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    texts = ["a passage on cats number 3", "what about dogs"]
    reference = SentenceTransformer(str(run), device="cpu").encode(texts)
    embedded = cli(["embed", "-m", str(run), "--format", "jsonl", *texts])
    assert embedded.code == 0, embedded.stderr
    ours = np.array([json.loads(line)["embedding"] for line in embedded.stdout.splitlines()])
    assert np.abs(ours - reference).max() < 1e-5


def test_hard_negatives_and_scored_pairs_train(cli, bare_encoder_dir, tmp_path):
    triplets = write_jsonl(tmp_path / "triplets.jsonl", pairs(24, negatives=True))
    common = ["finetune", "--task", "embedding", "-m", str(bare_encoder_dir), "--max-steps", "2"]
    common += ["--batch-size", "8", "--eval-split", "0.25", "--precision", "fp32"]
    plain = write_jsonl(tmp_path / "plain.jsonl", pairs(12))  # a test split without negatives
    done = cli([*common, "--train-data", str(triplets), "--test-data", str(plain), "-o", str(tmp_path / "t")])
    assert done.code == 0, done.stderr
    assert 0 <= json.loads((tmp_path / "t" / "metrics.json").read_text())["test"]["test_ndcg@10"] <= 1
    scored = [
        {"anchor": r["anchor"], "positive": r["positive"], "score": (i % 5) / 4}
        for i, r in enumerate(pairs(24))
    ]
    data = write_jsonl(tmp_path / "scored.jsonl", scored)
    done = cli([*common, "--train-data", str(data), "--loss", "cosine", "-o", str(tmp_path / "s")])
    assert done.code == 0, done.stderr
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["run"]["loss"] == "cosine"


def test_embedding_flags_are_refused_for_other_tasks(cli, tmp_path):
    result = cli(["finetune", "--task", "classification", "--train-data", "x.csv", "--anchor-column", "q"])
    assert result.code == 2 and "--anchor-column applies to --task embedding" in result.stderr


def test_retrieval_metrics_equal_the_information_retrieval_evaluator():
    """Random vectors, 30 queries with 1-3 relevant passages among 50: every metric equals
    sentence-transformers' evaluator's computation on the same ranked hits."""
    import numpy as np
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from bertgpt_cli.training.retrieval import per_query_scores, top_hits

    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(30, 16)), rng.normal(size=(50, 16))
    relevant = [set(random.Random(i).sample(range(50), 1 + i % 3)) for i in range(30)]
    hits = top_hits(queries, corpus, 10)
    ours = {name: float(np.mean(values)) for name, values in per_query_scores(hits, relevant).items()}
    evaluator = InformationRetrievalEvaluator(
        {str(i): "q" for i in range(30)},
        {str(i): "d" for i in range(50)},
        {str(i): {str(d) for d in r} for i, r in enumerate(relevant)},
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
    )
    scores = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = scores @ (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)).T
    results = [[{"corpus_id": str(j), "score": float(scores[i, j])} for j in range(50)] for i in range(30)]
    want = evaluator.compute_metrics(results)
    for k in (1, 5, 10):
        assert ours[f"recall@{k}"] == pytest.approx(want["recall@k"][k], abs=1e-9)
        assert ours[f"accuracy@{k}"] == pytest.approx(want["accuracy@k"][k], abs=1e-9)
    assert ours["mrr@10"] == pytest.approx(want["mrr@k"][10], abs=1e-9)
    assert ours["ndcg@10"] == pytest.approx(want["ndcg@k"][10], abs=1e-9)
    assert ours["map@10"] == pytest.approx(want["map@k"][10], abs=1e-9)


def test_a_killed_embedding_run_resumes_to_the_same_final_metrics(bare_encoder_dir, tmp_path):
    """The no-duplicates order is seeded by the epoch: a resumed run replays the batches of an
    uninterrupted one."""
    from .test_finetune import kill_after_first_checkpoint_and_resume

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(80))
    common = ["finetune", "--task", "embedding", "-m", str(bare_encoder_dir), "--train-data", str(data)]
    common += ["--max-steps", "12", "--eval-every", "4", "--batch-size", "8", "--eval-split", "0.2"]
    common += ["--precision", "fp32"]
    got, want = kill_after_first_checkpoint_and_resume(tmp_path, common, first_checkpoint=4)
    assert got["eval"]["eval_ndcg@10"] == pytest.approx(want["eval"]["eval_ndcg@10"], abs=1e-6)
    assert got["eval"]["eval_loss"] == pytest.approx(want["eval"]["eval_loss"], rel=1e-5)


def test_lora_and_two_processes(cli, bare_encoder_dir, tmp_path):
    """--lora trains adapters on the encoder (the merged run dir is still a sentence-transformers
    model); --num-processes 2 runs two ranks with the same batch order rules."""
    import subprocess

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from .conftest import BGCLI, ROOT

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(48))
    common = ["finetune", "--task", "embedding", "-m", str(bare_encoder_dir), "--train-data", str(data)]
    common += ["--max-steps", "3", "--batch-size", "8", "--eval-split", "0.25", "--precision", "fp32"]
    lora = cli([*common, "--lora", "-o", str(tmp_path / "lora")])
    assert lora.code == 0, lora.stderr
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    text = ["a passage on cats number 3"]
    reference = SentenceTransformer(str(tmp_path / "lora"), device="cpu").encode(text)
    embedded = cli(["embed", "-m", str(tmp_path / "lora"), "--format", "jsonl", *text])
    assert np.abs(np.array(json.loads(embedded.stdout)["embedding"]) - reference[0]).max() < 1e-5
    two = subprocess.run(
        BGCLI
        + [*common, "--num-processes", "2", "--quiet", "--format", "jsonl", "-o", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["run"]["world_size"] == 2


def test_an_eval_split_of_one_passage_is_refused_in_one_line(cli, bare_encoder_dir, tmp_path):
    rows = [{"anchor": f"question {i}", "positive": "the only passage"} for i in range(20)]
    data = write_jsonl(tmp_path / "one.jsonl", rows)
    args = ["finetune", "--task", "embedding", "-m", str(bare_encoder_dir), "--train-data", str(data)]
    result = cli([*args, "--max-steps", "1", "-o", str(tmp_path / "run")])
    assert result.code == 2 and "one distinct positive" in result.stderr
    assert "Traceback" not in result.stderr
