"""`bgcli env` and `bgcli models`."""

from __future__ import annotations

import json

from bertgpt_cli.io.assets import BUILTIN_MODELS, COMMON_HUB_MODELS


def test_env_json_reports_versions_devices_and_assets(cli):
    result = cli(["env", "--format", "json"])
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    import torch
    import transformers

    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["transformers"] == transformers.__version__
    assert report["devices"]["torch_threads"] == torch.get_num_threads()
    assert report["hub"]["state"].startswith("offline")  # HF_HUB_OFFLINE=1 in tests
    assert set(report["assets"]) == {"minilm", "smollm2", "movie-reviews", "conll2003", "squad", "sharegpt"}
    assert report["caches"]["bgcli_home"]


def test_env_text_is_key_value_lines(cli):
    result = cli(["env", "--format", "tsv"])
    pairs = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert pairs["versions.bgcli"] and "devices.cpu" in pairs


def test_models_lists_aliases_and_common_hub_ids(cli):
    result = cli(["models"])  # piped: JSON Lines
    assert result.code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = [r["name"] for r in records]
    assert names == list(BUILTIN_MODELS) + list(COMMON_HUB_MODELS)
    minilm = records[0]
    assert minilm["parameters"] == "22.7M" and minilm["installed"] == "yes"
    assert minilm["size"].endswith("MB")
    assert {r["kind"] for r in records[2:]} == {"hub"}


def test_models_text_format_is_names(cli):
    result = cli(["models", "--format", "text"])
    assert result.stdout.split() == list(BUILTIN_MODELS) + list(COMMON_HUB_MODELS)


def test_models_lists_what_each_model_can_do_from_the_commands(cli):
    """The uses come from the table of heads and the finetune tasks, so a new task shows up."""
    from bertgpt_cli.models.heads import FINETUNE_TASKS

    records = {r["name"]: r for r in map(json.loads, cli(["models"]).stdout.splitlines())}
    minilm, smollm2, bert = (
        records["minilm"]["tasks"],
        records["smollm2"]["tasks"],
        records["bert-base-uncased"]["tasks"],
    )
    for use in (
        "embed",
        "search",
        "pretrain --tokenizer",
        *(t for t in FINETUNE_TASKS if t not in ("clm", "sft")),
    ):
        assert use in minilm, (use, minilm)
    assert "fill-mask" not in minilm and "fill-mask" in bert  # a bare encoder has no MLM head
    assert (
        smollm2.startswith("generate")
        and "finetune (clm, sft)" in smollm2
        and "classification" not in smollm2
    )
