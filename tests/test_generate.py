"""generate: batching never changes the text; finish reasons; sampling with seeds; errors."""

from __future__ import annotations

import json
import shutil

import pytest

PROMPTS = [
    "the movie was",
    "a terrible film with a boring plot and",
    "paris",
    "i loved the music but the story",
]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def generate_alone(model_dir, prompts, max_new_tokens):
    """The reference: plain `model.generate` on each prompt by itself, no padding at all."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
        full = tokenizer.decode(out[0], skip_special_tokens=True)
        texts.append(full[len(tokenizer.decode(ids["input_ids"][0], skip_special_tokens=True)) :])
    return texts


@pytest.mark.parametrize(
    ("model", "batch_size"), [("gpt2", "1"), ("gpt2", "3"), ("gpt2", "16"), ("llama", "3")]
)
def test_batched_greedy_equals_each_prompt_alone(cli, request, model, batch_size):
    model_dir = request.getfixturevalue(f"tiny_{model}_dir")  # GPT-2 (Conv1D), Llama (nn.Linear)
    result = cli(
        ["generate", "-m", str(model_dir), "--max-new-tokens", "12", "--batch-size", batch_size, *PROMPTS]
    )
    assert result.code == 0, result.stderr
    ours = records(result.stdout)
    assert [r["prompt"] for r in ours] == PROMPTS  # input order
    assert [r["completion"] for r in ours] == generate_alone(model_dir, PROMPTS, 12)
    assert all(r["generated_tokens"] == 12 and r["finish_reason"] == "length" for r in ours)


def test_finish_reason_eos(cli, tiny_gpt2_dir, tmp_path):
    """Make the token greedy decoding picks first the end-of-text token: it stops there."""
    first = records(
        cli(
            ["generate", "-m", str(tiny_gpt2_dir), "--max-new-tokens", "1", "--format", "jsonl", PROMPTS[0]]
        ).stdout
    )[0]
    from transformers import AutoTokenizer

    first_id = AutoTokenizer.from_pretrained(tiny_gpt2_dir)(first["completion"])["input_ids"][0]
    eos_model = tmp_path / "eos"
    shutil.copytree(tiny_gpt2_dir, eos_model)
    for name in ("config.json", "generation_config.json"):
        path = eos_model / name
        data = json.loads(path.read_text())
        data["eos_token_id"] = first_id
        path.write_text(json.dumps(data))
    (record,) = records(cli(["generate", "-m", str(eos_model), "--max-new-tokens", "10", PROMPTS[0]]).stdout)
    assert record["finish_reason"] == "eos" and record["generated_tokens"] == 1


def test_stop_string_is_cut(cli, tiny_gpt2_dir):
    (plain,) = records(
        cli(["generate", "-m", str(tiny_gpt2_dir), "--max-new-tokens", "12", PROMPTS[1]]).stdout
    )
    stop = plain["completion"][4:7]
    assert stop.strip()
    (cut,) = records(
        cli(
            ["generate", "-m", str(tiny_gpt2_dir), "--max-new-tokens", "12", "--stop", stop, PROMPTS[1]]
        ).stdout
    )
    assert cut["finish_reason"] == "stop"
    assert cut["completion"] == plain["completion"][: plain["completion"].find(stop)]


def test_sampling_with_a_seed_is_repeatable(cli, tiny_gpt2_dir):
    args = [
        "generate",
        "-m",
        str(tiny_gpt2_dir),
        "--sample",
        "--temperature",
        "1.5",
        "--max-new-tokens",
        "10",
        "--num-return-sequences",
        "3",
    ]
    first = records(cli([*args, "--seed", "1", *PROMPTS[:2]]).stdout)
    again = records(cli([*args, "--seed", "1", *PROMPTS[:2]]).stdout)
    other = records(cli([*args, "--seed", "2", *PROMPTS[:2]]).stdout)
    assert len(first) == 6
    assert [r["sequence_index"] for r in first] == [0, 1, 2, 0, 1, 2]
    assert [r["prompt"] for r in first] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert first == again
    assert [r["completion"] for r in first] != [r["completion"] for r in other]


def test_an_encoder_cannot_generate(cli, tiny_bert_dir):
    result = cli(["generate", "-m", str(tiny_bert_dir), "hello"])
    assert result.code == 2 and "is not a causal LM" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_chat_needs_a_template(cli, tiny_gpt2_dir):
    result = cli(["generate", "-m", str(tiny_gpt2_dir), "--chat", "hello"])
    assert result.code == 2 and "no chat template" in result.stderr


def test_long_prompts_keep_their_last_tokens(cli, tiny_gpt2_dir):
    result = cli(["generate", "-m", str(tiny_gpt2_dir), "--max-new-tokens", "4", "the movie was great " * 40])
    assert result.code == 0 and "longer than 60 tokens" in result.stderr


@pytest.mark.assets
def test_smollm2_batched_equals_alone_and_chat_works(cli):
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    prompts = ["The capital of France is", "def add(a, b):", "My favourite film is", "Once upon a time"]
    result = cli(["generate", "-m", "smollm2", "--max-new-tokens", "16", "--batch-size", "4", *prompts])
    assert result.code == 0, result.stderr
    ours = [r["completion"] for r in records(result.stdout)]
    assert ours == generate_alone(BUILTIN_MODELS["smollm2"].model_dir(), prompts, 16)
    chat = records(
        cli(
            [
                "generate",
                "-m",
                "smollm2",
                "--chat",
                "--system",
                "Answer in one word.",
                "--max-new-tokens",
                "8",
                "What is the capital of France?",
            ]
        ).stdout
    )[0]
    assert "Paris" in chat["completion"]


def test_one_prompt_on_a_terminal_streams(tiny_gpt2_dir):
    """stdout is a terminal: the completion is printed as it is produced (TextStreamer)."""
    import os
    import pty
    import subprocess

    from .conftest import BGCLI, ROOT

    expected = generate_alone(tiny_gpt2_dir, [PROMPTS[0]], 8)[0]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        BGCLI + ["generate", "-m", str(tiny_gpt2_dir), "--max-new-tokens", "8", PROMPTS[0]],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1024)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    stderr = proc.communicate(timeout=60)[1].decode()
    os.close(leader)
    assert proc.returncode == 0
    text = shown.decode(errors="replace").replace("\r\n", "\n")
    assert expected.strip() in text and "{" not in text  # the text itself, not a JSON record
    assert "8 tokens, finish: length" in stderr
