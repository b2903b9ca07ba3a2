"""NER: tag schemes and data layouts, seqeval-equal metrics, `finetune --task ner`, and
`bgcli ner` equal to pipeline("token-classification") (all aggregations, long texts, Chinese)."""

from __future__ import annotations

import json
import random

import pytest

from bertgpt_cli.errors import UsageError
from bertgpt_cli.io.tagging import (
    detect_scheme,
    ordered_labels,
    read_conll,
    spans_to_word_tags,
    to_bio,
    words_with_offsets,
)

from .conftest import CORPUS, NER_LINES

AGGREGATIONS = ["none", "simple", "first", "average", "max"]


# -- tag schemes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tags", "scheme", "bio"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], "bio", ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "iob1", ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),
        (["PER", "PER", "O", "LOC"], "io", ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "I-PER", "O", "I-LOC"], "io", ["B-PER", "I-PER", "O", "B-LOC"]),
        (["B-PER", "E-PER", "S-LOC", "O"], "bioes", ["B-PER", "I-PER", "B-LOC", "O"]),
        (["B-ORG", "I-ORG", "L-ORG", "U-PER"], "bilou", ["B-ORG", "I-ORG", "I-ORG", "B-PER"]),
    ],
)
def test_schemes_are_detected_and_normalised_to_bio(tags, scheme, bio):
    assert detect_scheme([tags]) == scheme
    assert to_bio(tags)[0] == bio


def test_invalid_bio_starts_are_repaired_and_counted_as_seqeval_reads_them():
    from seqeval.metrics.sequence_labeling import get_entities

    tags = ["O", "I-PER", "I-PER", "O", "B-LOC", "I-ORG"]
    bio, repaired = to_bio(tags)
    assert bio == ["O", "B-PER", "I-PER", "O", "B-LOC", "B-ORG"]
    assert repaired == 2
    assert get_entities(bio) == get_entities(tags)


def test_label_order_puts_o_first_then_sorted():
    assert ordered_labels(["I-PER", "O", "B-LOC", "B-PER"]) == ["O", "B-LOC", "B-PER", "I-PER"]


def test_conll_reader_skips_docstart_reads_last_or_chosen_column(tmp_path):
    path = tmp_path / "x.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter\tNNP\tB-NP\tB-PER\n"
    )
    sentences = read_conll(path, "x.conll")
    assert sentences.tokens == [["EU", "rejects"], ["Peter"]]
    assert sentences.tags == [["B-ORG", "O"], ["B-PER"]]
    assert read_conll(path, "x.conll", tag_column=3).tags == [["B-NP", "B-VP"], ["B-NP"]]
    (tmp_path / "bad.conll").write_text("EU B-ORG\nrejects\n")
    with pytest.raises(UsageError, match="line 2 of 'bad.conll' has one column"):
        read_conll(tmp_path / "bad.conll", "bad.conll")


def test_spans_become_word_tags_through_the_tokenizer_offsets(tiny_ner_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_ner_dir)
    text = "Angela Merkel met Emmanuel Macron in Paris."
    words = words_with_offsets(text, tokenizer)
    assert [w for w, _ in words] == ["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "Paris", "."]
    spans = [{"start": 0, "end": 13, "label": "PER"}, {"start": 37, "end": 42, "label": "LOC"}]
    assert spans_to_word_tags(words, spans, "r") == ["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "O"]
    overlapping = [{"start": 0, "end": 13, "label": "PER"}, {"start": 7, "end": 17, "label": "ORG"}]
    with pytest.raises(UsageError, match="record 3: entities overlap"):
        spans_to_word_tags(words, overlapping, "data.jsonl: record 3")


def test_conll2003_builtin_has_the_standard_splits():
    from bertgpt_cli.io.data import load_data

    sizes = {split: len(load_data(f"conll2003@{split}")) for split in ("train", "validation", "test")}
    assert sizes == {"train": 14041, "validation": 3250, "test": 3453}
    first = load_data("conll2003@test")[0]
    assert set(first) == {"tokens", "ner_tags"} and len(first["tokens"]) == len(first["ner_tags"])


# -- metrics ----------------------------------------------------------------------------------
def test_entity_metrics_equal_seqeval_classification_report():
    from seqeval.metrics import accuracy_score, classification_report

    from bertgpt_cli.training.metrics import EntityMetrics

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    predicted = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in gold]
    scores = EntityMetrics()(predicted, gold)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for name, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
        assert scores[name] == pytest.approx(report["micro avg"][key], abs=1e-12)
    for kind in ("PER", "LOC", "ORG"):
        assert scores[f"f1_{kind}"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)


# -- bgcli ner == pipeline --------------------------------------------------------------------
def _pipeline(model_dir, aggregation: str):
    from transformers import pipeline

    return pipeline("token-classification", model=str(model_dir), aggregation_strategy=aggregation)


def _ner(cli, model_dir, texts: list[str], *flags: str) -> list[list[dict]]:
    result = cli(["ner", "-m", str(model_dir), "--format", "jsonl", *flags], input="\n".join(texts) + "\n")
    assert result.code == 0, result.stderr
    return [json.loads(line)["entities"] for line in result.stdout.splitlines()]


def _assert_same(ours: list[dict], reference: list[dict]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
        assert a["score"] == pytest.approx(float(b["score"]), abs=1e-4)


TEXTS = [*NER_LINES, *CORPUS[:4], "Angela Merkel met Emmanuel Macron in Paris.", "paris"]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_ner_equals_the_pipeline_for_every_aggregation(cli, tiny_ner_dir, aggregation):
    reference = _pipeline(tiny_ner_dir, aggregation)
    ours = _ner(cli, tiny_ner_dir, TEXTS, "--aggregation", aggregation, "--batch-size", "3")
    assert sum(len(e) for e in ours) > 5  # the fixture tags things: the comparison means something
    for text, entities in zip(TEXTS, ours, strict=True):
        _assert_same(entities, reference(text))


def test_chinese_offsets_are_character_positions(cli, tiny_ner_dir):
    text = NER_LINES[2]
    (entities,) = _ner(cli, tiny_ner_dir, [text])
    assert entities
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["word"].replace(" ", "")
    _assert_same(entities, _pipeline(tiny_ner_dir, "simple")(text))


def _long_text() -> tuple[str, int]:
    """~2,400 tokens of corpus words; returns the text and where token 2,000 starts."""
    words = " ".join(CORPUS * 30).split()
    return " ".join(words), len(" ".join(words[:2000])) + 1


def test_long_texts_are_read_whole_and_equal_the_pipeline_with_the_same_stride(cli, tiny_ner_dir):
    text, around_2000 = _long_text()
    (entities,) = _ner(cli, tiny_ner_dir, [text], "--stride", "16")
    _assert_same(entities, _pipeline(tiny_ner_dir, "simple")(text, stride=16))
    late = [e for e in entities if e["start"] >= around_2000]
    assert late, "no entity past the 2,000th token: the text was cut off"
    for entity in late:
        assert text[entity["start"] : entity["end"]] == entity["word"]
    truncated = _pipeline(tiny_ner_dir, "simple")(text)  # what the pipeline does without stride
    assert max(e["end"] for e in truncated) < around_2000 / 10


def test_default_stride_reads_long_texts_whole_too(cli, tiny_ner_dir):
    text, around_2000 = _long_text()
    (entities,) = _ner(cli, tiny_ner_dir, [text])
    assert max(e["start"] for e in entities) >= around_2000


def test_jsonl_fields_pass_through_and_bad_records_do_not_stop_the_rest(cli, tiny_ner_dir):
    lines = [json.dumps({"id": 1, "text": "paris"}), "{not json", json.dumps({"id": 3, "text": "london"})]
    result = cli(["ner", "-m", str(tiny_ner_dir), "-f", "jsonl"], input="\n".join(lines) + "\n")
    assert result.code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("id") for r in records] == [1, None, 3]
    assert records[1]["line"] == 2 and "error" in records[1]
    assert "entities" in records[0] and "entities" in records[2]
    assert "line 2:" in result.stderr


def test_min_score_drops_low_scored_entities(cli, tiny_ner_dir):
    (everything,) = _ner(cli, tiny_ner_dir, [TEXTS[0]])
    cut = sorted(e["score"] for e in everything)[len(everything) // 2]
    (kept,) = _ner(cli, tiny_ner_dir, [TEXTS[0]], "--min-score", str(cut))
    assert kept == [e for e in everything if e["score"] >= cut] and len(kept) < len(everything)


def test_conll_output_tags_each_word_from_the_entities(cli, tiny_ner_dir):
    result = cli(["ner", "-m", str(tiny_ner_dir), "-f", "conll"], input="\n".join(TEXTS[:2]) + "\n")
    assert result.code == 0, result.stderr
    blocks = result.stdout.rstrip("\n").split("\n\n")
    assert len(blocks) == 2
    (entities,) = _ner(cli, tiny_ner_dir, [TEXTS[0]])
    rows = [line.split("\t") for line in blocks[0].splitlines()]
    assert [word for word, _ in rows] == TEXTS[0].split()
    from seqeval.metrics.sequence_labeling import get_entities

    tagged = [
        (kind, " ".join(w for w, _ in rows[s : e + 1])) for kind, s, e in get_entities([t for _, t in rows])
    ]
    assert tagged == [(e["entity_group"], e["word"]) for e in entities]


def test_table_highlights_entities_on_a_terminal(cli, tiny_ner_dir):
    result = cli(["ner", "-m", str(tiny_ner_dir), "-f", "table", TEXTS[0]])
    assert result.code == 0, result.stderr
    (entities,) = _ner(cli, tiny_ner_dir, [TEXTS[0]])
    assert entities[0]["entity_group"] in result.stdout


@pytest.mark.parametrize("fixture", ["bare_encoder_dir", "tiny_classifier_dir"])
def test_models_without_a_token_classification_head_are_refused(cli, request, fixture):
    result = cli(["ner", "-m", str(request.getfixturevalue(fixture)), "paris"])
    assert result.code == 2
    assert "no trained token-classification head" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_stride_as_large_as_the_window_is_refused(cli, tiny_ner_dir):
    result = cli(["ner", "-m", str(tiny_ner_dir), "--stride", "62", "paris"])
    assert result.code == 2 and "--stride 62" in result.stderr


# -- finetune --task ner ------------------------------------------------------------------------
NAMES = ["angela merkel", "emmanuel macron", "john smith"]
PLACES = ["paris", "new york"]


def _sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence of corpus words with a person and a place, IOBES-tagged."""
    words, tags = [], []
    for chunk, kind in ((rng.choice(NAMES), "PER"), ("met", None), (rng.choice(PLACES), "LOC")):
        parts = chunk.split()
        words += parts
        if kind is None:
            tags += ["O"] * len(parts)
        elif len(parts) == 1:
            tags.append(f"S-{kind}")
        else:
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(parts) - 2) + [f"E-{kind}"]
    filler = rng.choice(CORPUS).split()
    return words + filler, tags + ["O"] * len(filler)


@pytest.fixture
def ner_files(tmp_path):
    rng = random.Random(0)
    train = [_sentence(rng) for _ in range(48)]
    conll = "".join("".join(f"{w} X {t}\n" for w, t in zip(*s, strict=True)) + "\n" for s in train)
    (tmp_path / "train.iob").write_text("-DOCSTART- -X- O\n\n" + conll)
    # Eval: records with tokens + BIO tags, one sentence longer than --max-length.
    bio = [(w, to_bio(t)[0]) for w, t in (_sentence(rng) for _ in range(8))]
    long_words, long_tags = zip(*[_sentence(rng) for _ in range(6)], strict=True)
    bio.append(([w for s in long_words for w in s], to_bio([t for s in long_tags for t in s])[0]))
    rows = [json.dumps({"tokens": w, "ner_tags": t}) for w, t in bio]
    (tmp_path / "eval.jsonl").write_text("\n".join(rows) + "\n")
    # Test: character spans, as annotation tools export them.
    spans = []
    for name, place in (("angela merkel", "paris"), ("john smith", "new york")):
        text = f"{name} met {place} today"
        entities = [
            {"start": 0, "end": len(name), "label": "PER"},
            {"start": len(name) + 5, "end": len(name) + 5 + len(place), "label": "LOC"},
        ]
        spans.append(json.dumps({"text": text, "entities": entities}))
    (tmp_path / "test.jsonl").write_text("\n".join(spans) + "\n")
    return tmp_path


def test_finetune_ner_end_to_end_on_three_layouts(cli, tiny_bert_dir, ner_files, monkeypatch):
    from transformers import AutoConfig, pipeline

    folder = ner_files
    monkeypatch.chdir(folder)
    args = ["finetune", "--task", "ner", "-m", str(tiny_bert_dir), "--train-data", "train.iob"]
    args += ["--eval-data", "eval.jsonl", "--test-data", "test.jsonl", "--max-length", "16"]
    args += ["--epochs", "2", "--lr", "5e-3", "--batch-size", "8", "--precision", "fp32", "-o", "runs/ner"]
    result = cli(args)
    assert result.code == 0, result.stderr
    metrics = json.loads((folder / "runs/ner/metrics.json").read_text())
    for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "test_f1", "eval_f1_PER"):
        assert key in {**metrics["eval"], **metrics["test"]}, key
    assert metrics["run"]["tag_scheme"] == "bioes"
    # The long eval sentence was split into windows, not cut: every gold entity is counted.
    report = metrics["test_report"]
    assert report["per_type"]["micro avg"]["support"] == 4
    assert report["confusion_labels"][-1] == "(none)"
    config = AutoConfig.from_pretrained(folder / "runs/ner")
    assert config.id2label == {0: "O", 1: "B-LOC", 2: "B-PER", 3: "I-LOC", 4: "I-PER"}
    assert metrics["eval"]["eval_f1"] == pytest.approx(_recomputed_eval_f1(folder, tiny_bert_dir), abs=1e-6)
    card = (folder / "runs/ner/README.md").read_text()
    assert "gold vs predicted" in card and "pipeline_tag: token-classification" in card
    text = "john smith met paris today"
    reference = pipeline(
        "token-classification", model=str(folder / "runs/ner"), aggregation_strategy="simple"
    )
    _assert_same(_ner(cli, folder / "runs/ner", [text])[0], reference(text))


def _recomputed_eval_f1(folder, tokenizer_dir) -> float:
    """The run's eval F1 computed independently: the saved model on each eval window alone."""
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.metrics import EntityMetrics
    from bertgpt_cli.training.tasks import NerTask

    config = FinetuneConfig(task="ner", train_data=str(folder / "train.iob"), max_length=16)
    task = NerTask(config, AutoTokenizer.from_pretrained(tokenizer_dir))
    _, others = task.prepare(load_data(config.train_data), {"eval": load_data(str(folder / "eval.jsonl"))})
    windows = task.finalize(others["eval"], "eval")
    model = AutoModelForTokenClassification.from_pretrained(folder / "runs/ner").eval()
    logits = np.zeros((len(windows), 16, len(task.labels)))
    for row, ids in enumerate(windows["input_ids"]):
        with torch.no_grad():
            logits[row, : len(ids)] = model(torch.tensor([ids])).logits[0].numpy()
    predicted, gold = task.sentences(logits)
    return EntityMetrics()(predicted, gold)["f1"]


def test_long_eval_sentences_count_every_gold_entity(tiny_bert_dir, ner_files):
    """Windows at --max-length 16: the eval metrics see the long sentence's words in full."""
    import numpy as np
    from transformers import AutoTokenizer

    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.tasks import NerTask

    folder = ner_files
    config = FinetuneConfig(task="ner", train_data=str(folder / "train.iob"), max_length=16)
    task = NerTask(config, AutoTokenizer.from_pretrained(tiny_bert_dir))
    train, others = task.prepare(
        load_data(config.train_data), {"eval": load_data(str(folder / "eval.jsonl"))}
    )
    windows = task.finalize(others["eval"], "eval")
    assert len(windows) > len(others["eval"])  # the long sentence became several windows
    assert max(len(ids) for ids in windows["input_ids"]) <= 16
    gold_ids = np.array([[-100] * 16] * len(windows))
    for row, labels in enumerate(windows["labels"]):
        gold_ids[row, : len(labels)] = labels
    logits = np.eye(len(task.labels))[np.where(gold_ids < 0, 0, gold_ids)]  # a perfect model
    predicted, gold = task.sentences(logits)
    assert predicted == gold
    assert [len(s) for s in gold] == [len(t) for t in load_data(str(folder / "eval.jsonl"))["tokens"]]


def test_unseen_eval_tags_and_overlapping_spans_are_one_line_errors(
    cli, tiny_bert_dir, ner_files, monkeypatch
):
    folder = ner_files
    monkeypatch.chdir(folder)
    (folder / "odd.jsonl").write_text(json.dumps({"tokens": ["paris"], "ner_tags": ["B-GPE"]}) + "\n")
    overlapping = [{"start": 0, "end": 5, "label": "LOC"}, {"start": 2, "end": 8, "label": "ORG"}]
    (folder / "overlap.jsonl").write_text(
        json.dumps({"text": "paris france", "entities": overlapping}) + "\n"
    )
    base = [
        "finetune",
        "--task",
        "ner",
        "-m",
        str(tiny_bert_dir),
        "--train-data",
        "train.iob",
        "--max-steps",
        "1",
    ]
    unseen = cli([*base, "--eval-data", "odd.jsonl", "-o", "runs/a"])
    assert unseen.code == 2 and "B-GPE not seen in training" in unseen.stderr
    overlap = cli([*base, "--eval-data", "overlap.jsonl", "-o", "runs/b"])
    assert overlap.code == 2 and "record 1: entities overlap" in overlap.stderr
    assert not (folder / "runs/a").exists() and not (folder / "runs/b").exists()


def test_ner_flags_are_refused_for_other_tasks(cli):
    result = cli(["finetune", "--train-data", "x.csv", "--label-all-tokens"])
    assert result.code == 2 and "--label-all-tokens applies to --task ner" in result.stderr


def _prepared(tokenizer_dir, train, **flags):
    from transformers import AutoTokenizer

    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.tasks import NerTask

    task = NerTask(
        FinetuneConfig(task="ner", train_data="train", **flags), AutoTokenizer.from_pretrained(tokenizer_dir)
    )
    prepared, _ = task.prepare(train, {})
    return task, prepared


def test_class_label_tags_as_the_hubs_conll2003(tiny_bert_dir):
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    train = datasets.Dataset.from_dict(
        {"tokens": [["john", "smith", "met", "paris"]], "ner_tags": [[1, 2, 0, 3]]}, features=features
    )
    task, prepared = _prepared(tiny_bert_dir, train)
    assert task.labels == ["O", "B-LOC", "B-PER", "I-PER"]  # from the data, O first, sorted
    assert [task.labels[i] for i in prepared["tag_ids"][0]] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_integer_tags_need_names(tiny_bert_dir):
    import datasets

    train = datasets.Dataset.from_dict({"tokens": [["john", "met", "paris"]], "ner_tags": [[1, 0, 2]]})
    with pytest.raises(UsageError, match="numbers without names; pass --label-names"):
        _prepared(tiny_bert_dir, train)
    task, prepared = _prepared(tiny_bert_dir, train, label_names="O,B-PER,B-LOC")
    assert [task.labels[i] for i in prepared["tag_ids"][0]] == ["B-PER", "O", "B-LOC"]


def test_two_processes_score_windows_in_the_right_sentences(tiny_bert_dir, ner_files):
    """Under torchrun each rank evaluates a shard; the gathered predictions must still be put
    back into the right sentences: the run's eval F1 equals the one recomputed alone."""
    import subprocess

    from .conftest import BGCLI, ROOT

    folder = ner_files
    args = ["finetune", "--task", "ner", "-m", str(tiny_bert_dir), "--train-data", str(folder / "train.iob")]
    args += ["--eval-data", str(folder / "eval.jsonl"), "--max-length", "16", "--max-steps", "24"]
    args += ["--lr", "5e-3", "--batch-size", "4", "--precision", "fp32", "--num-processes", "2"]
    args += ["--output", str(folder / "runs/ner"), "--quiet", "--format", "jsonl"]
    done = subprocess.run(BGCLI + args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["world_size"] == 2 and summary["eval_f1"] > 0.1  # it learned something to compare
    assert summary["eval_f1"] == pytest.approx(_recomputed_eval_f1(folder, tiny_bert_dir), abs=1e-4)


@pytest.mark.parametrize("label_all", [False, True])
def test_sub_tokens_after_the_first_are_ignored_or_tagged_inside(tiny_bert_dir, label_all):
    import datasets

    tokens = [["smith", "met", "paris"], ["paris", "smith", "smith"]]  # smith: s ##m ##i ##t ##h
    tags = [["B-PER", "O", "B-LOC"], ["B-LOC", "B-PER", "I-PER"]]
    train = datasets.Dataset.from_dict({"tokens": tokens, "ner_tags": tags})
    task, prepared = _prepared(tiny_bert_dir, train, label_all_tokens=label_all)
    windows = task.finalize(prepared, "eval")
    row = task.layouts["eval"].window_sentence.index(0)
    pieces = task.tokenizer.convert_ids_to_tokens(windows["input_ids"][row])
    assert pieces[1:6] == ["s", "##m", "##i", "##t", "##h"]
    labels = [task.labels[i] if i >= 0 else None for i in windows["labels"][row]]
    assert labels[1] == "B-PER"
    assert labels[2:6] == (["I-PER"] * 4 if label_all else [None] * 4)
    # Scores stay per word either way: the layout points at each word's first sub-token only.
    words = task.layouts["eval"].window_words[row]
    assert [(i, w) for i, w in enumerate(words) if w >= 0] == [(1, 0), (6, 1), (9, 2)]
