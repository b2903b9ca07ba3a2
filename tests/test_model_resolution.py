"""--model resolution: local dirs, aliases, Hub ids (fast offline failure), task checks, safetensors."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from bertgpt_cli.errors import BgcliError, UsageError
from bertgpt_cli.models.resolution import load_model, resolve_model

from .conftest import BGCLI, ROOT


def test_local_dir(tiny_bert_dir):
    resolved = resolve_model(str(tiny_bert_dir))
    assert resolved.source == "local" and resolved.location == str(tiny_bert_dir)
    assert resolved.pretrained_kwargs()["trust_remote_code"] is False  # off unless asked
    assert resolve_model(str(tiny_bert_dir), trust_remote_code=True).pretrained_kwargs()["trust_remote_code"]


def test_directory_without_config_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="without config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_is_a_usage_error():
    with pytest.raises(UsageError, match="model dir './runs/nope' not found"):
        resolve_model("./runs/nope")


@pytest.mark.assets
def test_minilm_alias_points_at_the_packaged_model():
    resolved = resolve_model("minilm")
    assert resolved.source == "alias" and resolved.local_files_only
    assert os.path.isfile(os.path.join(resolved.location, "model.safetensors"))


def test_hub_id_offline_fails_with_one_line_naming_the_ways_out(cli):
    result = cli(["tokenize", "-m", "bert-base-uncased", "hello"])
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load model 'bert-base-uncased'")
    for way_out in ("network", "local model dir", "minilm"):
        assert way_out in lines[0]


def test_unreachable_hub_fails_in_about_a_second():
    """Without HF_HUB_OFFLINE and no network, huggingface_hub alone retries for ~23 s.

    The endpoint is a closed local port, so the test behaves the same with or without a
    network. The bound is loose (10 s); it only separates "probe" from "retries".
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    start = time.monotonic()
    out = subprocess.run(
        BGCLI + ["tokenize", "-m", "someone/some-model", "hi"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 1
    assert "the Hub is unreachable and it is not in the local HF cache" in out.stderr
    assert "Traceback" not in out.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_model_that_cannot_do_the_task_is_one_clear_error(tiny_gpt2_dir):
    from transformers import AutoModelForMaskedLM

    with pytest.raises(UsageError, match=r"\(gpt2\) cannot do fill-mask"):
        load_model(resolve_model(str(tiny_gpt2_dir)), AutoModelForMaskedLM, "fill-mask")


def test_loads_weights_for_a_supported_task(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    model = load_model(resolve_model(str(tiny_bert_dir)), AutoModelForMaskedLM, "fill-mask")
    assert model.config.model_type == "bert"


def test_pickled_weights_are_refused(tiny_bert_dir, tmp_path):
    """Only safetensors are loaded: a .bin checkpoint can run code when unpickled."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(BgcliError, match="no safetensors weights"):
        load_model(resolve_model(str(pickled)), AutoModelForMaskedLM, "fill-mask")
