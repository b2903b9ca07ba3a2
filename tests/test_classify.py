"""classify equals pipeline("text-classification"): label, and score to 1e-4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TEXTS = [
    "the movie was great",
    "a terrible film with a boring plot",
    "what a fun and charming comedy",
    "dull, long and predictable; i want my money back " * 3,
    "paris",
]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.parametrize("batch_size", ["1", "3", "32"])
def test_equals_the_pipeline(cli, tiny_classifier_dir, batch_size):
    from transformers import pipeline

    reference = pipeline("text-classification", model=str(tiny_classifier_dir))(TEXTS)
    result = cli(["classify", "-m", str(tiny_classifier_dir), "--batch-size", batch_size, *TEXTS])
    assert result.code == 0, result.stderr
    ours = records(result.stdout)
    assert [r["label"] for r in ours] == [r["label"] for r in reference]
    for o, r in zip(ours, reference, strict=True):
        assert o["score"] == pytest.approx(r["score"], abs=1e-4)
    assert len({round(r["score"], 6) for r in ours}) > 1  # the fixture really tells texts apart


def test_all_scores_are_probabilities_by_label_name(cli, tiny_classifier_dir):
    result = cli(["classify", "-m", str(tiny_classifier_dir), "--all-scores", TEXTS[0]])
    (record,) = records(result.stdout)
    assert set(record["scores"]) == {"negative", "neutral", "positive"}
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["scores"][record["label"]] == record["score"]


def test_multi_label_gives_labels_above_threshold(cli, tiny_multilabel_dir):
    from transformers import pipeline

    reference = pipeline("text-classification", model=str(tiny_multilabel_dir), top_k=None)(TEXTS)
    result = cli(["classify", "-m", str(tiny_multilabel_dir), "--threshold", "0.5", "--all-scores", *TEXTS])
    ours = records(result.stdout)
    for o, r in zip(ours, reference, strict=True):
        expected = sorted(x["label"] for x in r if x["score"] >= 0.5)
        assert sorted(o["labels"]) == expected
        for x in r:
            assert o["scores"][x["label"]] == pytest.approx(x["score"], abs=1e-4)


def test_an_encoder_without_a_classification_head_is_refused(cli, tiny_bert_dir):
    result = cli(["classify", "-m", str(tiny_bert_dir), "hello"])
    assert result.code == 2 and "has no trained classification head" in result.stderr


def test_a_classifier_config_without_its_head_weights_is_refused(cli, bare_encoder_dir, tmp_path):
    # the config claims a classifier (so the architecture check passes), the weights lack the head
    folder = tmp_path / "headless"
    shutil.copytree(bare_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "neg", "1": "pos"})
    (folder / "config.json").write_text(json.dumps(config))
    result = cli(["classify", "-m", str(folder), "hello"])
    assert result.code == 2 and result.stdout == ""
    assert "no trained weights for text classification (classifier." in result.stderr


def test_model_is_required(cli):
    result = cli(["classify", "hello"])
    assert result.code == 2 and "--model" in result.stderr


def test_jsonl_pass_through_and_bad_lines(cli, tiny_classifier_dir):
    data = '{"id": 1, "text": "great"}\n\n{"id": 3, "text": "boring"}\n'
    result = cli(["classify", "-m", str(tiny_classifier_dir)], input=data)
    assert result.code == 1
    ours = records(result.stdout)
    assert [r.get("id") for r in ours] == [1, None, 3]
    assert ours[1]["line"] == 2 and "label" in ours[2]


def test_terminal_table_shows_each_text_with_its_label(cli, tiny_classifier_dir):
    texts = ["the movie was great", "paris"]
    jsonl = records(cli(["classify", "-m", str(tiny_classifier_dir), *texts]).stdout)
    assert all("text" not in r for r in jsonl)  # programs get the record as specified
    table = cli(["classify", "-m", str(tiny_classifier_dir), "--format", "table", *texts]).stdout
    rows = [line for line in table.splitlines() if "│" in line]
    assert [r.split("│")[1].strip() for r in rows] == texts
    assert [r.split("│")[2].strip() for r in rows] == [r["label"] for r in jsonl]


PAIRS = [
    ("a man is playing a guitar", "someone makes music"),
    ("the cat sat on the mat", "paris is the capital of france"),
    ("what a fun and charming comedy", "the movie was great"),
]


@pytest.fixture(scope="module")
def pair_classifier_dir(tmp_path_factory, tiny_classifier_dir) -> Path:
    """The tiny classifier, marked as fine-tuned on pairs as `finetune --text-pair-column` does."""
    folder = tmp_path_factory.mktemp("pair-classifier") / "model"
    shutil.copytree(tiny_classifier_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "bgcli_text_pair_column": "hypothesis"}))
    return folder


def test_sentence_pairs_equal_the_pipeline(cli, pair_classifier_dir, tmp_path):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(pair_classifier_dir))
    reference = [classifier({"text": a, "text_pair": b}) for a, b in PAIRS]
    singles = records(cli(["classify", "-m", str(pair_classifier_dir), *(a for a, _ in PAIRS)]).stdout)
    jsonl = "".join(json.dumps({"id": i, "text": a, "text_pair": b}) + "\n" for i, (a, b) in enumerate(PAIRS))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS))
    for args, data in ((["--batch-size", "2"], jsonl), (["-i", str(tsv)], None)):
        result = cli(["classify", "-m", str(pair_classifier_dir), *args], input=data)
        assert result.code == 0 and "sentence pairs" not in result.stderr, result.stderr
        ours = records(result.stdout)
        assert [r["label"] for r in ours] == [r["label"] for r in reference]
        for o, r in zip(ours, reference, strict=True):
            assert o["score"] == pytest.approx(r["score"], abs=1e-4)
        assert [o["text_pair"] for o in ours] == [b for _, b in PAIRS]  # passed through
    # The second text counts: scores differ from the first text alone.
    assert [s["score"] for s in singles] != pytest.approx([r["score"] for r in reference], abs=1e-4)


def test_a_pair_model_given_one_text_warns_once(cli, pair_classifier_dir):
    result = cli(["classify", "-m", str(pair_classifier_dir), "a", "b"])
    assert result.code == 0 and len(records(result.stdout)) == 2
    assert result.stderr.count("fine-tuned on sentence pairs but line 1 has one text") == 1


def test_a_single_text_model_given_pairs_warns_once(cli, tiny_classifier_dir):
    data = "".join(json.dumps({"text": a, "text_pair": b}) + "\n" for a, b in PAIRS)
    result = cli(["classify", "-m", str(tiny_classifier_dir)], input=data)
    assert result.code == 0 and result.stderr.count("does not record training on pairs") == 1


def test_bad_pair_records_are_reported_and_the_rest_goes_on(cli, pair_classifier_dir, tmp_path):
    data = (
        json.dumps({"text": "a", "text_pair": 3}) + "\n" + json.dumps({"text": "a", "text_pair": "b"}) + "\n"
    )
    result = cli(["classify", "-m", str(pair_classifier_dir)], input=data)
    assert result.code == 1 and "line 1: field 'text_pair' is not a string" in result.stderr
    assert "label" in records(result.stdout)[1]
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("one column only\na\tb\n")
    result = cli(["classify", "-m", str(pair_classifier_dir), "-i", str(tsv)])
    assert result.code == 1 and "line 1: expected 2 tab-separated texts" in result.stderr
    assert "label" in records(result.stdout)[1]


def test_int8_equals_torch_dynamic_quantization(cli, tiny_classifier_dir):
    import warnings

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # One text per batch: dynamic quantization scales activations per batch, so a text's answer
    # depends a little on its batch mates (docs/performance.md).
    result = cli(
        ["classify", "-m", str(tiny_classifier_dir), "--precision", "int8", "--batch-size", "1", *TEXTS]
    )
    assert result.code == 0 and "int8 linear layers" in result.stderr
    assert "int8 changes answers: a trained minilm classifier kept 97.3%" in result.stderr  # measured
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_channel = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        quantized = torch.ao.quantization.quantize_dynamic(model, per_channel, dtype=torch.qint8)
    for text, ours in zip(TEXTS, records(result.stdout), strict=True):
        with torch.inference_mode():
            probs = quantized(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        assert ours["label"] == model.config.id2label[int(probs.argmax())]
        assert ours["score"] == pytest.approx(float(probs.max()), abs=1e-4)


def test_int8_is_cpu_only():
    import torch

    from bertgpt_cli.errors import UsageError
    from bertgpt_cli.inference.loading import quantize_int8

    with pytest.raises(UsageError, match="CPU only"):
        quantize_int8(torch.nn.Linear(2, 2), torch.device("cuda"))


def test_a_batch_of_mixed_lengths_is_split_where_padding_costs_more_than_a_pass():
    """A server's gathered batch (one long text among short ones) runs as two passes, not one
    padded to the longest; equal lengths stay one batch of batch_size; results keep input order."""
    from bertgpt_cli.inference.loading import BATCH_OVERHEAD_TOKENS, length_sorted, process_sorted

    lengths = [10, 500, 12, 11, 10]
    batches = list(length_sorted(range(5), lengths, 32, split_by_padding=True))
    assert batches == [[1], [2, 3, 0, 4]]
    padded_once = 5 * 500 + BATCH_OVERHEAD_TOKENS
    split = 500 + 4 * 12 + 2 * BATCH_OVERHEAD_TOKENS
    assert split < padded_once
    equal = list(length_sorted(range(40), [7] * 40, 32, split_by_padding=True))
    assert sorted(len(b) for b in equal) == [8, 32]  # the fewest passes batch_size allows
    assert process_sorted(lengths, 32, lambda batch: [f"r{i}" for i in batch]) == [f"r{i}" for i in range(5)]
