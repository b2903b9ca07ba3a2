"""SQuAD data (issue 14, first part): the built-in v1.1 files, SQuAD JSON files flattened to
the Hub's layout (v2.0 impossible questions without answers), and the offline squad metric."""

from __future__ import annotations

import json

import pytest


def test_builtin_squad_has_the_official_sizes_and_the_hub_layout():
    from bertgpt_cli.io.data import load_data

    dev = load_data("squad@validation")
    assert len(dev) == 10570 and len(load_data("squad@train")) == 87599
    row = dev[0]
    assert set(row) == {"id", "title", "context", "question", "answers"}
    for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True):
        assert row["context"][start : start + len(text)] == text


def test_squad_v2_files_are_detected_and_flattened(tmp_path):
    from bertgpt_cli.io.data import load_data

    context = "Paris is the capital of France."
    qas = [
        {"id": "a", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {
            "id": "b",
            "question": "What is Rome?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "France", "answer_start": 24}],
        },
    ]
    document = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    (tmp_path / "train.json").write_text(json.dumps(document))
    rows = load_data(str(tmp_path / "train.json"))
    assert rows["id"] == ["a", "b"]
    assert rows["answers"] == [{"text": ["Paris"], "answer_start": [0]}, {"text": [], "answer_start": []}]


def test_squad_metric_scores_as_the_official_script_defines():
    from bertgpt_cli.training.metrics import load_metric

    metric = load_metric("squad")
    references = [
        {"id": "1", "answers": {"text": ["the Denver Broncos", "Broncos"], "answer_start": [0, 11]}},
        {"id": "2", "answers": {"text": ["Santa Clara, California"], "answer_start": [5]}},
        {"id": "3", "answers": {"text": ["February 7"], "answer_start": [0]}},
    ]
    predictions = [
        {"id": "1", "prediction_text": "Denver Broncos!"},  # articles and punctuation ignored: exact
        {"id": "2", "prediction_text": "Clara California"},  # 2 of 3 gold tokens, 2 of 2 predicted
        {"id": "3", "prediction_text": "March"},
    ]
    scores = metric.compute(predictions=predictions, references=references)
    partial_f1 = 2 * (2 / 2) * (2 / 3) / ((2 / 2) + (2 / 3))
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + partial_f1 + 0) / 3)


def test_squad_v2_metric_splits_has_answer_and_no_answer():
    from bertgpt_cli.training.metrics import load_metric

    metric = load_metric("squad_v2")
    references = [
        {"id": "1", "answers": {"text": ["Denver Broncos"], "answer_start": [0]}},
        {"id": "2", "answers": {"text": [], "answer_start": []}},
        {"id": "3", "answers": {"text": [], "answer_start": []}},
    ]
    predictions = [
        {"id": "1", "prediction_text": "the Denver Broncos", "no_answer_probability": 0.0},
        {"id": "2", "prediction_text": "", "no_answer_probability": 0.0},  # rightly no answer
        {"id": "3", "prediction_text": "Carolina", "no_answer_probability": 0.0},  # answered the unanswerable
    ]
    scores = metric.compute(predictions=predictions, references=references)
    assert scores["HasAns_exact"] == 100.0 and scores["HasAns_total"] == 1
    assert scores["NoAns_exact"] == 50.0 and scores["NoAns_f1"] == 50.0 and scores["NoAns_total"] == 2
    assert scores["exact"] == pytest.approx(200 / 3) and scores["total"] == 3


def test_squad_triplets_give_each_question_another_paragraph_of_its_article():
    """squad-triplets = squad-retrieval + a negative: a paragraph of the same article that is
    not the question's own; the same choice on every load."""
    from bertgpt_cli.io.data import load_data, load_squad

    squad = load_squad("validation")
    triplets = load_data("squad-triplets@validation")
    pairs = load_data("squad-retrieval@validation")
    assert triplets["anchor"] == pairs["anchor"] and triplets["positive"] == pairs["positive"]
    article_of = {}
    for title, context in zip(squad["title"], squad["context"], strict=True):
        article_of.setdefault(context, title)
    for positive, negative in zip(triplets["positive"], triplets["negative"], strict=True):
        assert negative != positive and article_of[negative] == article_of[positive]
    assert load_data("squad-triplets@validation")["negative"] == triplets["negative"]
