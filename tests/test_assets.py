"""Built-in assets: atomic writes, and the smollm2 GGUF -> safetensors conversion."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertgpt_cli.io.assets import BUILTIN_MODELS, SMOLLM2_GGUF, smollm2_cache_dir
from bertgpt_cli.io.atomic import remove_stale_temp_dirs, save_dir_atomically

from .conftest import ROOT


def test_failed_write_leaves_no_target_and_no_temp(tmp_path):
    target = tmp_path / "model"

    def write(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_dir_atomically(target, write)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_killed_write_leaves_no_target_and_the_leftover_is_cleaned(tmp_path):
    target = tmp_path / "model"
    code = (
        "import time, sys\nfrom pathlib import Path\n"
        "from bertgpt_cli.io.atomic import save_dir_atomically\n"
        "def write(folder):\n"
        "    (folder / 'model.safetensors').write_bytes(b'half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"save_dir_atomically(Path({str(target)!r}), write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.tmp-")
    remove_stale_temp_dirs(target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.assets
def test_smollm2_copy_generates_exactly_what_the_gguf_generates():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alias = BUILTIN_MODELS["smollm2"]
    start = time.monotonic()
    copy_dir = alias.model_dir()  # converts (once per test session: BGCLI_HOME is private)
    first = time.monotonic() - start
    assert copy_dir == smollm2_cache_dir()
    assert (copy_dir / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((copy_dir / "config.json").read_text())
    assert not [p for p in copy_dir.parent.iterdir() if ".tmp-" in p.name]

    gguf_dir = alias.source_path().parent
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(copy_dir)
    tokenizer = AutoTokenizer.from_pretrained(copy_dir)
    for prompt in ("The capital of France is", "def fibonacci(n):"):
        ids = tokenizer(prompt, return_tensors="pt")
        want = reference.generate(**ids, max_new_tokens=16, do_sample=False)
        got = converted.generate(**ids, max_new_tokens=16, do_sample=False)
        assert torch.equal(want, got), (tokenizer.decode(want[0]), tokenizer.decode(got[0]))

    start = time.monotonic()
    assert alias.model_dir() == copy_dir  # second use: no conversion
    assert time.monotonic() - start < first
