"""bgcli export --format onnx: the exported dir answers like the PyTorch model through the same
commands (classify, fill-mask, embed), int8 is reported, and only bgcli's folders are written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

TEXTS = ["the movie was great", "a terrible film with a boring plot", "paris", "what a fun comedy " * 3]


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_classifier_dir, tiny_bert_dir, bare_encoder_dir):
    from .conftest import run_cli

    root = tmp_path_factory.mktemp("exports")
    made = {}
    for name, model, extra in (
        ("cls", tiny_classifier_dir, []),
        ("cls8", tiny_classifier_dir, ["--quantize", "int8"]),
        ("fused", tiny_classifier_dir, ["--optimize"]),
        ("fused8", tiny_classifier_dir, ["--optimize", "--quantize", "int8"]),  # QAttention
        ("mlm", tiny_bert_dir, []),
        ("enc", bare_encoder_dir, []),
    ):
        result = run_cli(["export", "-m", str(model), "-o", str(root / name), *extra])
        assert result.code == 0, result.stderr
        made[name] = root / name
    return made


@pytest.mark.parametrize("name", ["cls", "fused"])
def test_an_exported_classifier_answers_like_pytorch(cli, exports, tiny_classifier_dir, name):
    folder = exports[name]
    assert {"model.onnx", "config.json", "tokenizer.json", "bgcli_export.json"} <= {
        p.name for p in folder.iterdir()
    }
    record = json.loads((folder / "bgcli_export.json").read_text())
    assert record["task"] == "classification" and record["check"]["max_abs_difference"] < 1e-4
    if name == "fused":  # each layer's attention is one kernel (the batch below mixes lengths: padding)
        assert record["fused_ops"]["Attention"] == 2 and record["fused_ops"]["SkipLayerNormalization"] >= 2
    else:
        assert record["fused_ops"] == {}
    ours = cli(["classify", "-m", str(folder), "--batch-size", "2", *TEXTS])
    assert ours.code == 0 and "onnxruntime" in ours.stderr
    reference = lines(cli(["classify", "-m", str(tiny_classifier_dir), *TEXTS]).stdout)
    exported = lines(ours.stdout)
    assert [r["label"] for r in exported] == [r["label"] for r in reference]
    for o, r in zip(exported, reference, strict=True):
        assert o["score"] == pytest.approx(r["score"], abs=1e-4)


@pytest.mark.parametrize("name", ["cls8", "fused8"])
def test_int8_export_is_checked_and_runs(cli, exports, name):
    record = json.loads((exports[name] / "bgcli_export.json").read_text())
    assert record["quantize"] == "int8" and record["check"]["tolerance"] is None
    assert (exports[name] / "model.onnx").stat().st_size < (exports["cls"] / "model.onnx").stat().st_size
    result = cli(["classify", "-m", str(exports[name]), *TEXTS])
    assert result.code == 0 and len(lines(result.stdout)) == len(TEXTS)


def test_a_fused_graph_that_drifts_from_pytorch_is_not_kept(cli, tiny_classifier_dir, tmp_path, monkeypatch):
    from bertgpt_cli.models import export

    compare = export.compare_with_pytorch

    def drifting(model, tokenizer, graph, outputs):
        largest, agree = compare(model, tokenizer, graph, outputs)
        return (1.0, agree) if graph.name == "model.fused.onnx" else (largest, agree)

    monkeypatch.setattr(export, "compare_with_pytorch", drifting)
    result = cli(["export", "-m", str(tiny_classifier_dir), "-o", str(tmp_path / "plain"), "--optimize"])
    assert result.code == 0, result.stderr
    assert "kept the unfused graph" in result.stderr
    record = json.loads((tmp_path / "plain" / "bgcli_export.json").read_text())
    assert record["fused_ops"] == {} and record["check"]["max_abs_difference"] < 1e-4
    assert sorted(p.name for p in (tmp_path / "plain").glob("*.onnx")) == ["model.onnx"]


def test_fill_mask_and_embed_through_onnxruntime(cli, exports, tiny_bert_dir, bare_encoder_dir):
    text = "the [MASK] was great"
    ours = lines(cli(["fill-mask", "-m", str(exports["mlm"]), "--top-k", "3", text]).stdout)[0]["predictions"]
    ref = lines(cli(["fill-mask", "-m", str(tiny_bert_dir), "--top-k", "3", text]).stdout)[0]["predictions"]
    assert [p["token"] for p in ours] == [p["token"] for p in ref]
    vectors = [lines(cli(["embed", "-m", str(m), *TEXTS]).stdout) for m in (exports["enc"], bare_encoder_dir)]
    np.testing.assert_allclose(
        [r["embedding"] for r in vectors[0]], [r["embedding"] for r in vectors[1]], atol=1e-4
    )


def test_an_export_for_another_task_is_refused(cli, exports):
    result = cli(["embed", "-m", str(exports["mlm"]), "a"])
    assert result.code == 2 and "exported for mlm, not feature-extraction" in result.stderr
    head = cli(["classify", "-m", str(exports["mlm"]), "a"])
    assert head.code == 2 and "no trained classification head" in head.stderr


def test_export_writes_only_new_folders_or_its_own(cli, tiny_classifier_dir, tmp_path, tiny_gpt2_dir):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff")
    refused = cli(["export", "-m", str(tiny_classifier_dir), "-o", str(foreign)])
    assert refused.code == 2 and "not a bgcli export" in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]
    first = tmp_path / "export"
    assert cli(["export", "-m", str(tiny_classifier_dir), "-o", str(first)]).code == 0
    again = cli(["export", "-m", str(tiny_classifier_dir), "-o", str(first)])
    assert again.code == 2 and "--overwrite" in again.stderr
    assert cli(["export", "-m", str(tiny_classifier_dir), "-o", str(first), "--overwrite"]).code == 0
    clm = cli(["export", "-m", str(tiny_gpt2_dir), "-o", str(tmp_path / "gpt")])
    assert clm.code == 2 and "causal LMs are not exported" in clm.stderr
    assert not (tmp_path / "gpt").exists()


def test_a_copied_export_without_onnxruntime_says_what_to_install(cli, exports, tmp_path, monkeypatch):
    import bertgpt_cli.models.onnx as onnx_model

    monkeypatch.setattr(onnx_model, "onnxruntime_version", lambda: None)
    copy = tmp_path / "copy"
    shutil.copytree(exports["cls"], copy)
    result = cli(["classify", "-m", str(copy), "a"])
    assert result.code == 2 and "pip install 'bertgpt-cli[onnx]'" in result.stderr
