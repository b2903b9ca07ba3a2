"""embed equals SentenceTransformer.encode (minilm) and hand-computed poolings (tiny BERT);
files are streamed in input order; search ranks by cosine and guards its index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

TEXTS = [
    "the movie was great",
    "a terrible film with a boring plot",
    "what a fun and charming comedy for the whole family",
    "paris",
    "dull, long and predictable; i want my money back " * 2,
]


def vectors(stdout: str) -> np.ndarray:
    return np.array([json.loads(line)["embedding"] for line in stdout.splitlines()])


def hidden_states(model_dir: Path, texts: list[str]):
    """The reference: one text at a time through AutoModel (no padding at all)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        return [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].numpy() for t in texts]


@pytest.mark.assets
def test_minilm_equals_sentence_transformers(cli):
    from sentence_transformers import SentenceTransformer

    from bertgpt_cli.io.assets import BUILTIN_MODELS

    reference = SentenceTransformer(str(BUILTIN_MODELS["minilm"].model_dir()), device="cpu").encode(TEXTS)
    result = cli(["embed", "-m", "minilm", "--batch-size", "2", *TEXTS])
    assert result.code == 0, result.stderr
    assert "pooling: mean, normalised (sentence-transformers config)" in result.stderr
    ours = vectors(result.stdout)
    assert ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("batch_size", ["1", "2", "32"])
def test_cls_pooling_is_the_first_hidden_state(cli, bare_encoder_dir, batch_size):
    result = cli(["embed", "-m", str(bare_encoder_dir), "--batch-size", batch_size, *TEXTS])
    assert result.code == 0, result.stderr
    assert (
        "pooling: cls (default: the model has no pooling config)" in result.stderr
    )  # no sentence-transformers config: cls, not normalised
    expected = np.stack([h[0] for h in hidden_states(bare_encoder_dir, TEXTS)])
    np.testing.assert_allclose(vectors(result.stdout), expected, atol=1e-5)


@pytest.mark.parametrize(
    "pooling, reduce",
    [("mean", lambda h: h.mean(0)), ("max", lambda h: h.max(0)), ("last", lambda h: h[-1])],
)
def test_poolings_ignore_padding(cli, bare_encoder_dir, pooling, reduce):
    result = cli(["embed", "-m", str(bare_encoder_dir), "--pooling", pooling, "--normalize", *TEXTS])
    assert result.code == 0, result.stderr
    expected = np.stack([reduce(h) for h in hidden_states(bare_encoder_dir, TEXTS)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors(result.stdout), expected, atol=1e-5)


def test_a_sentence_transformers_config_sets_the_default(cli, bare_encoder_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = tmp_path / "st-model"
    shutil.copytree(bare_encoder_dir, model)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (model / "modules.json").write_text(json.dumps(modules))
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_max_tokens": True})
    )
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    result = cli(["embed", "-m", str(model), *TEXTS])
    assert result.code == 0, result.stderr
    assert "pooling: max (sentence-transformers config); 32 dimensions, up to 8 tokens" in result.stderr
    assert "truncated" in result.stderr  # the long text passes 8 tokens
    reference = SentenceTransformer(str(model), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(vectors(result.stdout), reference, atol=1e-5)


def test_token_vectors_carry_their_offsets(cli, bare_encoder_dir):
    text = "Paris, the capital"
    result = cli(["embed", "-m", str(bare_encoder_dir), "--pooling", "tokens", text])
    assert result.code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    tokens = record["tokens"]
    assert [t["token"] for t in tokens] == ["Paris", ",", "the", "capital"]
    assert all(text[t["start"] : t["end"]] == t["token"] for t in tokens)
    hidden = hidden_states(bare_encoder_dir, [text])[0]
    # Special tokens ([CLS], [SEP]) are left out: token i is hidden state i + 1.
    for i, token in enumerate(tokens):
        np.testing.assert_allclose(token["embedding"], hidden[i + 1], atol=1e-5)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".parquet"])
def test_output_files_hold_the_rows_in_input_order(cli, bare_encoder_dir, tmp_path, suffix):
    lines = [json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(TEXTS)]
    lines.insert(2, json.dumps({"id": "bad"}))  # a bad record: reported, left out, the rest goes on
    source = tmp_path / "texts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    expected = vectors(cli(["embed", "-m", str(bare_encoder_dir), *TEXTS]).stdout)
    output = tmp_path / f"vectors{suffix}"
    result = cli(
        ["embed", "-m", str(bare_encoder_dir), "-i", str(source), "-o", str(output), "--batch-size", "2"]
    )
    assert result.code == 1 and "line 3: no 'text' field" in result.stderr
    assert result.stdout == ""
    if suffix == ".npy":
        matrix = np.load(output)
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        matrix = load_file(output)["embeddings"]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(output)
        matrix = np.array(table.column("embedding").to_pylist())
        rows = table.drop(["embedding"]).to_pylist()
    if suffix != ".parquet":
        rows = [json.loads(line) for line in (tmp_path / "vectors.rows.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(TEXTS))]
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6]
    assert [r["text"] for r in rows] == TEXTS
    assert not list(tmp_path.glob(".*tmp-*"))  # temp files renamed into place


def test_a_failed_run_leaves_no_output_file(cli, tiny_gpt2_dir, tmp_path):
    output = tmp_path / "vectors.npy"
    result = cli(["embed", "-m", str(tmp_path / "missing-model"), "-o", str(output), "a"])
    assert result.code == 2 and not output.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pooling", "tokens", "-o", "x.npy"], "--pooling tokens gives a vector per token"),
        (["-o", "x.csv"], "must end in .npy, .safetensors, .parquet"),
        (["--max-length", "1"], "--max-length must be >= 2"),
        (["--pooling", "avg"], "'avg' is not one of"),
    ],
)
def test_bad_flags_are_usage_errors(cli, bare_encoder_dir, args, message):
    result = cli(["embed", "-m", str(bare_encoder_dir), *args, "a"])
    assert result.code == 2 and message in result.stderr


def test_a_decoder_embeds_with_last_token_pooling(cli, tiny_gpt2_dir):
    result = cli(["embed", "-m", str(tiny_gpt2_dir), "--pooling", "last", "--batch-size", "8", *TEXTS])
    assert result.code == 0, result.stderr
    expected = np.stack([h[-1] for h in hidden_states(tiny_gpt2_dir, TEXTS)])
    np.testing.assert_allclose(vectors(result.stdout), expected, atol=1e-5)


# search ---------------------------------------------------------------------------------

CORPUS = TEXTS + [
    "i loved the music but the story was slow",
    "the best picture of the year, a moving story",
    "paris is the capital of france and london of england",
    "the cat sat on the mat while the dog slept",
    "a terrible film",
    "what a fun comedy",
    "the actors were wonderful",
]


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"doc": i, "text": t}) + "\n" for i, t in enumerate(CORPUS)) + "\n")
    return path


def brute_force(model_dir: Path, queries: list[str]):
    """Cosine of every query with every corpus text, cls pooling, one text at a time."""
    import torch

    from bertgpt_cli.inference.embed import pool

    def embed(texts):
        return torch.stack(
            [
                pool(torch.tensor(h)[None], torch.ones(1, len(h)), "cls")[0]
                for h in hidden_states(model_dir, texts)
            ]
        )

    corpus = torch.nn.functional.normalize(embed(CORPUS), dim=1)
    queried = torch.nn.functional.normalize(embed(queries), dim=1)
    return (queried @ corpus.T).numpy()


def hits(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_search_ranks_the_corpus_by_cosine(cli, bare_encoder_dir, corpus_file, monkeypatch):
    import bertgpt_cli.inference.search as search_index

    monkeypatch.setattr(search_index, "SEARCH_CHUNK_ROWS", 3)  # several chunks, one running top-k
    queries = ["a boring film", CORPUS[7]]
    result = cli(["search", "-m", str(bare_encoder_dir), "--corpus", str(corpus_file), "-k", "4", *queries])
    assert result.code == 0, result.stderr
    found = hits(result.stdout)
    assert len(found) == 8 and [h["rank"] for h in found] == [1, 2, 3, 4] * 2
    cosine = brute_force(bare_encoder_dir, queries)
    for q, query_hits in enumerate((found[:4], found[4:])):
        best = np.sort(cosine[q])[::-1][:4]
        np.testing.assert_allclose([h["score"] for h in query_hits], best, atol=1e-5)
        np.testing.assert_allclose(
            [h["score"] for h in query_hits], cosine[q][[h["doc"] for h in query_hits]], atol=1e-5
        )
    assert found[4]["text"] == CORPUS[7] and found[4]["score"] == pytest.approx(1.0, abs=1e-5)
    assert found[4]["corpus_line"] == 8 and found[0]["query"] == "a boring film"
    scores = [h["score"] for h in found[:4]]
    assert scores == sorted(scores, reverse=True)


def test_an_index_is_reused_and_guarded(cli, bare_encoder_dir, tiny_bert_dir, corpus_file, tmp_path):
    index = tmp_path / "index"
    base = ["search", "--corpus", str(corpus_file), "--index", str(index), "-k", "2"]
    first = cli([*base, "-m", str(bare_encoder_dir), "paris"])
    assert first.code == 0 and "embedding the corpus" in first.stderr
    assert {p.name for p in index.iterdir()} == {
        "index.json",
        "embeddings.safetensors",
        "embeddings.rows.jsonl",
    }
    again = cli(
        ["search", "--index", str(index), "-k", "2", "paris"]
    )  # the index's model, nothing re-embedded
    assert again.code == 0 and "embedding the corpus" not in again.stderr
    assert hits(again.stdout) == hits(first.stdout)
    other = cli(["search", "--index", str(index), "-m", str(tiny_bert_dir), "paris"])
    assert other.code == 2 and "was built with model" in other.stderr
    pooled = cli(["search", "--index", str(index), "--pooling", "mean", "paris"])
    assert pooled.code == 2 and "was built with pooling cls" in pooled.stderr
    corpus_file.write_text(json.dumps({"doc": 99, "text": "paris"}) + "\n")
    rebuilt = cli([*base, "paris"])
    assert rebuilt.code == 0 and "embedding the corpus" in rebuilt.stderr
    assert [h["doc"] for h in hits(rebuilt.stdout)] == [99]


def test_search_refuses_a_folder_of_other_files(cli, bare_encoder_dir, corpus_file, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff")
    result = cli(
        ["search", "-m", str(bare_encoder_dir), "--corpus", str(corpus_file), "--index", str(folder), "q"]
    )
    assert result.code == 2 and "not a bgcli index" in result.stderr
    assert [p.name for p in folder.iterdir()] == ["cat.jpg"]


def test_bad_corpus_lines_are_reported_and_the_search_goes_on(cli, bare_encoder_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"the movie was great\n\nparis\n\xff\xfe bad\n")
    result = cli(["search", "-m", str(bare_encoder_dir), "--corpus", str(corpus), "-k", "5", "paris"])
    assert result.code == 1 and "line 4: not valid UTF-8" in result.stderr
    assert "line 2" not in result.stderr  # blank lines in a corpus are skipped, not errors
    found = hits(result.stdout)
    assert [h["text"] for h in found][0] == "paris" and len(found) == 2


def test_search_without_a_corpus_is_a_usage_error(cli):
    result = cli(["search", "q"])
    assert result.code == 2 and "pass --corpus FILE" in result.stderr


def test_a_damaged_or_stale_index_is_one_line_and_rebuilt_from_the_corpus(cli, tiny_bert_dir, tmp_path):
    corpus, index = tmp_path / "corpus.txt", tmp_path / "index"
    corpus.write_text("great film\nboring plot\nlovely music\n")
    search = ["search", "-m", str(tiny_bert_dir), "--index", str(index), "-f", "jsonl", "film"]
    assert cli([*search, "--corpus", str(corpus)]).code == 0
    matrix = index / "embeddings.safetensors"
    matrix.write_bytes(matrix.read_bytes()[:5])  # a killed copy
    damaged = cli(search)
    assert damaged.code == 1 and "is damaged" in damaged.stderr and "--corpus" in damaged.stderr
    assert "Traceback" not in damaged.stderr and damaged.stdout == ""
    rebuilt = cli([*search, "--corpus", str(corpus)])
    assert rebuilt.code == 0 and "rebuilding it" in rebuilt.stderr and len(rebuilt.stdout.splitlines()) == 3
    corpus.write_text("great film\nboring plot\nlovely music\nnew line\n")
    stale = cli(search)
    assert stale.code == 0 and f"the corpus {corpus} changed since" in stale.stderr


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(cli, tiny_bert_dir, tmp_path):
    """kill -9 leaves a hidden temp file beside the output; the next write removes it, but
    never one whose writer is still running."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".vectors.npy.tmp-{int(dead.stdout)}-abc123"
        running = tmp_path / f".vectors.npy.tmp-{alive.pid}-def456"
        stale.write_bytes(b"x" * 4096)
        running.write_bytes(b"y")
        result = cli(["embed", "-m", str(tiny_bert_dir), "-o", str(tmp_path / "vectors.npy"), "a", "b"])
        assert result.code == 0, result.stderr
        assert not stale.exists() and running.exists()
    finally:
        alive.kill()
