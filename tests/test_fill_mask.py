"""fill-mask equals pipeline("fill-mask"): tokens, sequences, and scores to 1e-4."""

from __future__ import annotations

import json

import pytest

TEXTS = [
    "the movie was [MASK] and the actors were wonderful",
    "paris is the [MASK] of [MASK]",  # two masks: a list per mask
    "the cat sat on the [MASK]",
    "[MASK]",
    "i loved the music but the story was slow and the [MASK] was long, dull and predictable",
]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def assert_same_predictions(ours, reference):
    if isinstance(reference[0], list):  # several masks
        assert isinstance(ours[0], list) and len(ours) == len(reference)
        for o, r in zip(ours, reference, strict=True):
            assert_same_predictions(o, r)
        return
    assert len(ours) == len(reference)
    for o, r in zip(ours, reference, strict=True):
        assert (o["token"], o["token_str"], o["sequence"]) == (r["token"], r["token_str"], r["sequence"])
        assert o["score"] == pytest.approx(r["score"], abs=1e-4)


@pytest.fixture(scope="module")
def reference(tiny_bert_dir):
    from transformers import pipeline

    return pipeline("fill-mask", model=str(tiny_bert_dir))


@pytest.mark.parametrize("batch_size", ["1", "2", "32"])
def test_equals_the_pipeline(cli, tiny_bert_dir, reference, batch_size):
    result = cli(["fill-mask", "-m", str(tiny_bert_dir), "--batch-size", batch_size, *TEXTS])
    assert result.code == 0, result.stderr
    ours = records(result.stdout)
    assert len(ours) == len(TEXTS)
    for text, record in zip(TEXTS, ours, strict=True):
        assert_same_predictions(record["predictions"], reference(text))
    assert len(ours[1]["predictions"]) == 2 and len(ours[1]["predictions"][0]) == 5


def test_top_k_and_targets_equal_the_pipeline(cli, tiny_bert_dir, reference):
    targets = ["great", "film", "the", "movie"]
    result = cli(
        ["fill-mask", "-m", str(tiny_bert_dir), "--top-k", "3", "--targets", ",".join(targets), TEXTS[0]]
    )
    assert result.code == 0, result.stderr
    (record,) = records(result.stdout)
    assert_same_predictions(record["predictions"], reference(TEXTS[0], top_k=3, targets=targets))


def test_model_own_mask_token_and_generic_mask(cli, tiny_bert_dir, tmp_path):
    """A RoBERTa-style model whose mask is `<mask>` accepts both `<mask>` and `[MASK]`."""
    import shutil

    other = tmp_path / "angle-mask"
    shutil.copytree(tiny_bert_dir, other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = other / name
        path.write_text(path.read_text().replace("[MASK]", "<mask>"))
    result = cli(["fill-mask", "-m", str(other), "the cat sat on the [MASK]", "the cat sat on the <mask>"])
    assert result.code == 0, result.stderr
    first, second = records(result.stdout)
    assert first["predictions"] == second["predictions"]
    assert "<mask>" not in first["predictions"][0]["sequence"]


def test_bad_records_and_truncation(cli, tiny_bert_dir):
    long_tail = "the cat sat on the [MASK] " + "word " * 100
    late_mask = "word " * 100 + "[MASK]"
    result = cli(["fill-mask", "-m", str(tiny_bert_dir)], input=f"no mask here\n{long_tail}\n{late_mask}\n")
    assert result.code == 1
    first, second, third = records(result.stdout)
    assert first["line"] == 1 and "no mask token" in first["error"]
    assert len(second["predictions"]) == 5  # truncated with a warning, mask kept
    assert "truncated" in result.stderr
    assert third["line"] == 3 and "falls after the model's 64-token limit" in third["error"]


def test_passthrough_fields(cli, tiny_bert_dir):
    result = cli(["fill-mask", "-m", str(tiny_bert_dir)], input='{"id": 3, "text": "the [MASK] sat"}\n')
    (record,) = records(result.stdout)
    assert record["id"] == 3 and "predictions" in record


def test_a_causal_lm_cannot_fill_masks(cli, tiny_gpt2_dir):
    result = cli(["fill-mask", "-m", str(tiny_gpt2_dir), "the [MASK]"])
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot do fill-mask" in result.stderr


def test_an_encoder_without_an_mlm_head_is_refused_not_guessed(cli, bare_encoder_dir):
    # transformers would load it with a random head and print confident-looking noise
    result = cli(["fill-mask", "-m", str(bare_encoder_dir), "the [MASK]"])
    assert result.code == 2 and result.stdout == ""
    error = result.stderr.strip().splitlines()[-1]  # one line (after the weight-loading bar)
    assert error.startswith("error: ") and "no trained weights for fill-mask (cls.predictions" in error
    assert "bgcli finetune --task mlm" in error


def test_bf16_runs_and_mostly_agrees(cli, tiny_bert_dir):
    fp32 = records(cli(["fill-mask", "-m", str(tiny_bert_dir), *TEXTS[:3]]).stdout)
    bf16 = cli(["fill-mask", "-m", str(tiny_bert_dir), "--precision", "bf16", *TEXTS[:3]])
    assert bf16.code == 0 and "bfloat16" in bf16.stderr
    assert [len(r["predictions"]) for r in records(bf16.stdout)] == [len(r["predictions"]) for r in fp32]


def test_int8_answers_as_the_pipeline_on_the_same_quantized_model(cli, tiny_bert_dir):
    import warnings

    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    # One text per batch: activations are quantized per batch (docs/performance.md).
    one_mask = [TEXTS[0], TEXTS[2], TEXTS[4]]
    result = cli(
        ["fill-mask", "-m", str(tiny_bert_dir), "--precision", "int8", "--batch-size", "1", *one_mask]
    )
    assert result.code == 0 and "int8 linear layers" in result.stderr, result.stderr
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_channel = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        quantized = torch.ao.quantization.quantize_dynamic(model, per_channel, dtype=torch.qint8)
    reference = pipeline("fill-mask", model=quantized, tokenizer=AutoTokenizer.from_pretrained(tiny_bert_dir))
    for text, ours in zip(one_mask, records(result.stdout), strict=True):
        theirs = reference(text, top_k=5)
        assert [p["token_str"] for p in ours["predictions"]] == [p["token_str"] for p in theirs]
        assert [p["score"] for p in ours["predictions"]] == pytest.approx(
            [p["score"] for p in theirs], abs=1e-4
        )


def test_fp16_on_cpu_warns(cli, tiny_bert_dir):
    result = cli(["fill-mask", "-m", str(tiny_bert_dir), "--precision", "fp16", "--device", "cpu", TEXTS[2]])
    assert "fp16 on a CPU is ~100x slower" in result.stderr


def test_unavailable_device_is_a_usage_error(cli, tiny_bert_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = cli(["fill-mask", "-m", str(tiny_bert_dir), "--device", "cuda", TEXTS[2]])
    assert result.code == 2 and "no CUDA GPU is visible" in result.stderr


def test_terminal_table_shows_tokens_and_scores_per_mask(cli, tiny_bert_dir):
    from bertgpt_cli.cli.commands.fill_mask import predictions_cell

    (record,) = records(cli(["fill-mask", "-m", str(tiny_bert_dir), "--top-k", "2", TEXTS[1]]).stdout)
    first, second = record["predictions"]
    expected = ", ".join(f"{p['token_str']} {p['score']:.3f}" for p in first)
    assert predictions_cell(first) == expected  # one mask
    assert predictions_cell(record["predictions"]) == expected + " | " + predictions_cell(second)
    table = cli(["fill-mask", "-m", str(tiny_bert_dir), "--top-k", "2", "--format", "table", TEXTS[1]]).stdout
    assert "paris is the" in table and first[0]["token_str"] in table and '"token"' not in table
