"""`finetune --task sft` (chat / instruction data, assistant-only loss, packing), `--lora` for
every task (merged model + adapter/, adapter-only run dirs), `eval --task sft`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# SmolLM2-Instruct's template: no {% generation %} markers, a default system turn when the
# conversation has none (the mask is then found by rendering prefixes).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
THREE_TURNS = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "two plus two"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and three more"},
    {"role": "assistant", "content": "seven"},
    {"role": "user", "content": "double it"},
    {"role": "assistant", "content": "fourteen"},
]


@pytest.fixture(scope="module")
def chat_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer has ChatML markers and SmolLM2's chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .conftest import _byte_level_tokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("chat-llama")
    tokenizer = _byte_level_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    tokenizer.model_max_length = 256
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sums(count: int = 40) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{a} plus {a + 1}"},
                {"role": "assistant", "content": f"it is {2 * a + 1}"},
            ]
        }
        for a in range(count)
    ]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- the mask --------------------------------------------------------------------------------


def hand_mask(tokenizer, messages) -> tuple[list[int], list[int]]:
    """Token ids and 0/1 trained flags built piece by piece: each assistant reply's content and
    its <|im_end|> are trained; the roles, the newlines and everything else are not."""
    ids, flags = [], []

    def add(text: str, trained: int) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        flags.extend([trained] * len(piece))

    for message in messages:
        add(f"<|im_start|>{message['role']}\n", 0)
        trained = int(message["role"] == "assistant")
        add(message["content"], trained)
        add("<|im_end|>", trained)
        add("\n", 0)
    return ids, flags


@pytest.mark.parametrize("template", ["prefixes", "generation markers"])
def test_the_mask_trains_each_assistant_reply_and_its_end_of_turn(chat_llama_dir, template):
    from transformers import AutoTokenizer

    from bertgpt_cli.training.chat_data import CHATML_TEMPLATE, IGNORE, encode_conversation

    tokenizer = AutoTokenizer.from_pretrained(chat_llama_dir)
    if template == "generation markers":
        tokenizer.chat_template = CHATML_TEMPLATE
    encoded = encode_conversation(tokenizer, THREE_TURNS, max_length=256)
    want_ids, want_flags = hand_mask(tokenizer, THREE_TURNS)
    assert encoded.input_ids == want_ids
    assert [int(label != IGNORE) for label in encoded.labels] == want_flags
    assert sum(want_flags) > 3  # three replies, each with content and end-of-turn


def test_train_on_prompt_trains_every_token(chat_llama_dir):
    from transformers import AutoTokenizer

    from bertgpt_cli.training.chat_data import encode_conversation

    tokenizer = AutoTokenizer.from_pretrained(chat_llama_dir)
    encoded = encode_conversation(tokenizer, THREE_TURNS, max_length=256, train_on_prompt=True)
    assert encoded.labels == encoded.input_ids


def test_a_long_conversation_is_cut_after_the_last_reply_that_fits(chat_llama_dir):
    from transformers import AutoTokenizer

    from bertgpt_cli.training.chat_data import IGNORE, encode_conversation

    tokenizer = AutoTokenizer.from_pretrained(chat_llama_dir)
    full = encode_conversation(tokenizer, THREE_TURNS, max_length=256)
    first_two = encode_conversation(tokenizer, THREE_TURNS[:5], max_length=256)
    cut = encode_conversation(tokenizer, THREE_TURNS, max_length=len(full.input_ids) - 3)  # not "fourteen"
    assert cut.cut and cut.input_ids == first_two.input_ids[: len(cut.input_ids)]
    only_newline = encode_conversation(tokenizer, THREE_TURNS, max_length=len(full.input_ids) - 1)
    assert not only_newline.cut and only_newline.labels[-1] != IGNORE  # every reply kept
    assert cut.labels[-1] != IGNORE  # ends on the end-of-turn of a whole reply
    assert tokenizer.decode(cut.input_ids).endswith("seven<|im_end|>")
    first_reply_end = len(encode_conversation(tokenizer, THREE_TURNS[:3], max_length=256).input_ids) - 1
    assert encode_conversation(tokenizer, THREE_TURNS, max_length=first_reply_end - 1) is None


# --- layouts and bad records -------------------------------------------------------------------

EXPECTED = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]


@pytest.mark.parametrize(
    "record, layout",
    [
        ({"messages": EXPECTED}, "messages"),
        (
            {
                "conversations": [
                    {"from": "human", "value": "Name a colour."},
                    {"from": "gpt", "value": "Blue."},
                ]
            },
            "sharegpt",
        ),
        ({"prompt": "Name a colour.", "completion": "Blue."}, "prompt-completion"),
        ({"prompt": [EXPECTED[0]], "completion": [EXPECTED[1]]}, "prompt-completion"),
        ({"instruction": "Name a colour.", "input": "", "output": "Blue."}, "alpaca"),
    ],
)
def test_each_layout_is_detected_and_becomes_the_same_messages(record, layout):
    from bertgpt_cli.training.chat_data import Columns, detect_layout, to_messages

    assert detect_layout(list(record), Columns(), record) == layout
    assert to_messages(record, layout, Columns()) == EXPECTED


def test_alpaca_input_joins_the_instruction():
    from bertgpt_cli.training.chat_data import Columns, to_messages

    record = {"instruction": "Translate.", "input": "chat", "output": "cat"}
    assert to_messages(record, "alpaca", Columns())[0]["content"] == "Translate.\n\nchat"


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"messages": []}, "empty"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
        (
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},
            "not a string",
        ),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ],
)
def test_bad_records_say_what_is_wrong(record, reason):
    from bertgpt_cli.training.chat_data import BadRecord, Columns, to_messages

    with pytest.raises(BadRecord, match=reason):
        to_messages(record, "messages", Columns())


def test_bad_records_are_reported_by_number_and_skipped(cli, chat_llama_dir, tmp_path):
    records = sums(20)
    records[3] = {"messages": [{"role": "bot", "content": "x"}]}
    records[7] = {"messages": []}
    data = write_jsonl(tmp_path / "chat.jsonl", records)
    out = tmp_path / "run"
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data)]
    result = cli(args + ["--max-steps", "2", "--batch-size", "4", "--eval-split", "0", "-o", str(out)])
    assert result.code == 0, result.stderr
    assert "train record 4: unknown role 'bot'" in result.stderr
    assert "train record 8:" in result.stderr
    counts = json.loads((out / "metrics.json").read_text())["run"]["records"]["train"]
    assert counts == {"records": 20, "bad": 2, "cut": 0, "too_long": 0}
    assert "[[" in (out / "README.md").read_text()  # the first example, trained tokens marked


def test_mostly_bad_records_refuse_the_run(cli, chat_llama_dir, tmp_path):
    records = sums(4) + [{"messages": [{"role": "user", "content": "no reply"}]}] * 5
    data = write_jsonl(tmp_path / "chat.jsonl", records)
    result = cli(["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data)])
    assert result.code == 2
    assert "5 of 9 train records are bad" in result.stderr and "Traceback" not in result.stderr


def test_a_base_model_without_a_template_is_told_about_chatml(cli, tiny_gpt2_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", sums(8))
    args = ["finetune", "--task", "sft", "-m", str(tiny_gpt2_dir), "--train-data", str(data)]
    result = cli(args)
    assert result.code == 2 and "--chat-template chatml" in result.stderr
    out = tmp_path / "run"
    result = cli(
        args + ["--chat-template", "chatml", "--max-steps", "2", "--eval-split", "0", "-o", str(out)]
    )
    assert result.code == 0, result.stderr
    assert "generation" in (out / "chat_template.jinja").read_text()  # saved: generate --chat uses it
    reply = cli(["generate", "-m", str(out), "--chat", "--max-new-tokens", "3", "--format", "jsonl", "hi"])
    assert reply.code == 0, reply.stderr
    assert json.loads(reply.stdout)["generated_tokens"] >= 1


# --- packing -----------------------------------------------------------------------------------


def test_a_packed_batch_gives_the_loss_of_the_same_examples_unpacked(chat_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bertgpt_cli.training.chat_data import encode_conversation
    from bertgpt_cli.training.config import FinetuneConfig
    from bertgpt_cli.training.tasks.sft import SftCollator, SftTask

    tokenizer = AutoTokenizer.from_pretrained(chat_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(chat_llama_dir, attn_implementation="sdpa")
    task = SftTask(FinetuneConfig(task="sft", model=str(chat_llama_dir), train_data="x"), tokenizer)
    task.attach(model)
    features = []
    for record in sums(5)[1:] + [{"messages": THREE_TURNS}]:
        encoded = encode_conversation(tokenizer, record["messages"], 256)
        features.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    results = {}
    for packing in (False, True):
        batch = SftCollator(tokenizer, packing)(features)
        assert ("position_ids" in batch) == packing and batch["input_ids"].shape[0] == (1 if packing else 5)
        with torch.no_grad():
            losses, *_ = task.trained_token_losses(model, batch)
        results[packing] = (float(losses.sum()), len(losses))
    assert results[True][1] == results[False][1]
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-4)


def test_sft_trains_with_packing(cli, chat_llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", sums(24))
    out = tmp_path / "run"
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--packing"]
    result = cli(args + ["--max-steps", "3", "--batch-size", "4", "--eval-split", "0.25", "-o", str(out)])
    assert result.code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["packing"] is True and metrics["eval"]["eval_tokens"] > 0


# --- LoRA ----------------------------------------------------------------------------------------


def test_lora_with_gradient_checkpointing_trains(cli, chat_llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", sums(12))
    out = tmp_path / "run"
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--lora"]
    result = cli(args + ["--gradient-checkpointing", "--max-steps", "2", "--eval-split", "0", "-o", str(out)])
    assert result.code == 0, result.stderr
    assert "deprecated" not in result.stderr
    history = [json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines()]
    assert any("train_loss" in entry for entry in history)


def test_lora_flags_need_lora_and_4bit_needs_cuda(cli, chat_llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", sums(4))
    base = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data)]
    result = cli(base + ["--lora-r", "4"])
    assert result.code == 2 and "--lora-r applies with --lora" in result.stderr
    result = cli(base + ["--lora", "--quantize-base", "4bit", "--device", "cpu"])
    assert result.code == 2 and "needs a CUDA GPU" in result.stderr
    result = cli(base + ["--lora", "--lora-targets", "nope_proj"])
    assert result.code == 2 and "--lora-targets" in result.stderr


def test_lora_sft_saves_a_merged_model_equal_to_base_plus_adapter(cli, chat_llama_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "chat.jsonl", sums(24))
    out = tmp_path / "run"
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--lora"]
    result = cli(args + ["--max-steps", "4", "--lr", "1e-2", "--eval-split", "0", "-o", str(out)])
    assert result.code == 0, result.stderr
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert 0 < run["trainable_share"] < 1 and run["lora"]["r"] == 16
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "adapter" / "README.md").exists()
    ids = torch.tensor([[5, 9, 12, 40, 7, 3]])
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(chat_llama_dir)
    with torch.no_grad():
        original = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out / "adapter")(ids).logits
        got = merged(ids).logits
    assert (adapted - original).abs().max() > 1e-3  # the adapter learned something
    assert torch.allclose(got, adapted, atol=1e-4)


@pytest.mark.parametrize("task", ["classification", "ner", "qa", "mlm", "clm"])
def test_lora_trains_every_task_and_its_new_head_in_full(cli, task, request, tmp_path):
    from .test_finetune_lm import lm_args  # noqa: F401  (the LM tests' data layout)

    model, data, extra = lora_task_setup(task, request, tmp_path)
    out = tmp_path / "run"
    args = [
        "finetune",
        "--task",
        task,
        "-m",
        str(model),
        "--train-data",
        str(data),
        "--lora",
        "--lora-r",
        "4",
    ]
    result = cli(
        args + extra + ["--max-steps", "2", "--batch-size", "4", "--eval-split", "0", "-o", str(out)]
    )
    assert result.code == 0, result.stderr
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert 0 < run["trainable_share"] < 1
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    # The bare encoder has no pooler: the one classification adds is new, so trained in full too.
    heads = {
        "classification": ["bert.pooler.dense", "classifier"],
        "ner": ["classifier"],
        "qa": ["qa_outputs"],
    }
    assert (adapter["modules_to_save"] or []) == heads.get(
        task, ["cls.predictions.transform"] if task == "mlm" else []
    )
    assert all(".layer" in name or ".h." in name for name in adapter["target_modules"])  # inside the blocks


def lora_task_setup(task: str, request, tmp_path: Path):
    if task == "classification":
        rows = [{"text": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2} for i in range(16)]
        return request.getfixturevalue("bare_encoder_dir"), write_jsonl(tmp_path / "d.jsonl", rows), []
    if task == "ner":
        rows = [{"tokens": ["Anna", "visits", "Paris"], "ner_tags": ["B-PER", "O", "B-LOC"]}] * 16
        return request.getfixturevalue("bare_encoder_dir"), write_jsonl(tmp_path / "d.jsonl", rows), []
    if task == "qa":
        rows = [
            {
                "id": str(i),
                "context": "The film was shot in Paris in the spring.",
                "question": "Where was the film shot?",
                "answers": {"text": ["Paris"], "answer_start": [21]},
            }
            for i in range(16)
        ]
        return (
            request.getfixturevalue("bare_encoder_dir"),
            write_jsonl(tmp_path / "d.jsonl", rows),
            ["--max-length", "64", "--doc-stride", "16"],
        )
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"the film number {i} was good and the actors were fine\n" for i in range(40)))
    if task == "mlm":
        return request.getfixturevalue("bare_encoder_dir"), texts, ["--block-size", "16"]
    return request.getfixturevalue("tiny_gpt2_dir"), texts, ["--block-size", "16"]


def test_an_adapter_only_dir_classifies_like_the_merged_run(cli, bare_encoder_dir, tmp_path):
    rows = [{"text": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2} for i in range(24)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    args = ["finetune", "-m", str(bare_encoder_dir), "--train-data", str(data), "--lora", "--lr", "1e-2"]
    args += ["--max-steps", "3", "--batch-size", "8", "--eval-split", "0", "--precision", "fp32"]
    outputs = {}
    for name, extra in (("merged", []), ("adapter", ["--save-adapter-only"])):
        result = cli(args + extra + ["-o", str(tmp_path / name)])
        assert result.code == 0, result.stderr
        classified = cli(
            ["classify", "-m", str(tmp_path / name), "--format", "jsonl"], input="good film\nbad film\n"
        )
        assert classified.code == 0, classified.stderr
        outputs[name] = [json.loads(line) for line in classified.stdout.splitlines()]
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    for got, want in zip(outputs["adapter"], outputs["merged"], strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-4)


def test_an_adapter_only_chat_dir_generates_like_the_merged_run(cli, chat_llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", sums(16))
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--lora"]
    args += ["--lr", "1e-2", "--max-steps", "3", "--eval-split", "0", "--precision", "fp32"]
    replies = {}
    for name, extra in (("merged", []), ("adapter", ["--save-adapter-only"])):
        assert cli(args + extra + ["-o", str(tmp_path / name)]).code == 0
        reply = cli(
            [
                "generate",
                "-m",
                str(tmp_path / name),
                "--chat",
                "--max-new-tokens",
                "6",
                "--format",
                "jsonl",
                "3 plus 4",
            ]
        )
        assert reply.code == 0, reply.stderr
        replies[name] = json.loads(reply.stdout)["completion"]
    assert replies["adapter"] == replies["merged"]
    served = served_chat_reply(tmp_path / "adapter", "3 plus 4", 6, tmp_path)
    assert served == replies["merged"]  # bgcli serve loads an adapter-only dir like any model


def served_chat_reply(model: Path, prompt: str, max_tokens: int, tmp_path: Path) -> str:
    import httpx

    from .test_serve import CLEAN_EXITS, RunningServer

    running = RunningServer(["-m", f"lm={model}", "--preload"], tmp_path)
    try:
        body = {"model": "lm", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        answer = httpx.post(running.url + "/v1/chat/completions", json={**body, "temperature": 0}, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["content"]
    finally:
        assert running.stop() in CLEAN_EXITS


def test_a_killed_lora_run_resumes_to_the_same_final_metrics(chat_llama_dir, tmp_path):
    from .test_finetune import kill_after_first_checkpoint_and_resume

    data = write_jsonl(tmp_path / "chat.jsonl", sums(60))
    common = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--lora"]
    common += ["--max-steps", "30", "--eval-every", "10", "--batch-size", "4", "--eval-split", "0.2"]
    got, want = kill_after_first_checkpoint_and_resume(tmp_path, common, first_checkpoint=10)
    assert got["eval"]["eval_loss"] == pytest.approx(want["eval"]["eval_loss"], rel=1e-5)


# --- eval --task sft -------------------------------------------------------------------------------


def test_eval_scores_assistant_loss_and_generated_answers(cli, chat_llama_dir, tmp_path):
    train = write_jsonl(tmp_path / "chat.jsonl", sums(16))
    out = tmp_path / "run"
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(train)]
    assert cli(args + ["--max-steps", "2", "--eval-split", "0", "-o", str(out)]).code == 0
    held_out = [
        {"prompt": f"{a} plus 1", "completion": str(a + 1), "references": [str(a + 1)]} for a in range(6)
    ]
    data = write_jsonl(tmp_path / "held.jsonl", held_out)
    result = cli(
        [
            "eval",
            "-m",
            str(out),
            "--data",
            str(data),
            "--generate",
            "--max-new-tokens",
            "3",
            "--format",
            "jsonl",
        ]
    )
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["task"] == "sft" and record["tokens"] == pytest.approx(
        sum(len(str(a + 1)) for a in range(6)), abs=12
    )
    assert 0 <= record["generated_exact_match"] <= 100 and "generated_f1" in record
    refused = cli(["eval", "-m", str(out), "--data", str(data), "--task", "clm", "--generate"])
    assert refused.code == 2


def test_generated_answers_are_scored_with_squad_normalisation():
    from bertgpt_cli.training.generative_eval import score_replies

    scores = score_replies(
        ["The Denver Broncos.", "in Paris, France", "no idea"], [["Denver Broncos"], ["Paris"], ["x"]]
    )
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.5) / 3)


# --- built-in data ------------------------------------------------------------------------------


@pytest.mark.assets
def test_sharegpt_reads_every_complete_conversation():
    from bertgpt_cli.io.assets import sharegpt_file
    from bertgpt_cli.io.data import load_data

    data = load_data("sharegpt")
    ids = sharegpt_file().read_text(encoding="utf-8").count('"id": "')
    assert len(data) == ids - 1  # the last one is cut off inside
    assert all(turn["from"] for turn in data[-1]["conversations"])


@pytest.mark.assets
def test_squad_instruct_is_prompt_completion_with_every_reference():
    from bertgpt_cli.io.data import load_data

    data = load_data("squad-instruct@validation")
    assert len(data) == 10570 and set(data.column_names) == {"prompt", "completion", "references"}
    first = data[0]
    assert first["completion"] in first["prompt"] and first["completion"] == first["references"][0]


def test_lora_sft_trains_in_two_processes(chat_llama_dir, tmp_path):
    """--num-processes 2 with adapters: DDP over the trainable parameters only; rank 0 saves the
    merged model and adapter/."""
    import subprocess

    from .conftest import BGCLI, ROOT

    data = write_jsonl(tmp_path / "chat.jsonl", sums(16))
    args = ["finetune", "--task", "sft", "-m", str(chat_llama_dir), "--train-data", str(data), "--lora"]
    args += ["--num-processes", "2", "--max-steps", "2", "--batch-size", "2", "--eval-split", "0.25"]
    done = subprocess.run(
        BGCLI + args + ["--output", str(tmp_path / "run"), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["run"]["world_size"] == 2 and 0 < metrics["run"]["trainable_share"] < 1
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
