"""bgcli serve's continuous batching of generation: requests join the running batch at the
next decode step and get exactly what a lone request gets (greedy text equal to `bgcli
generate`, seeded samples equal to a lone seeded `bgcli generate`), streams interleave, a
client that leaves frees its rows, admission limits queue and refuse, and /metrics counts."""

from __future__ import annotations

import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .test_serve import CHAT_TEMPLATE, CLEAN_EXITS, RunningServer

PROMPTS = [
    "the movie was",
    "a terrible film with a boring plot and actors who",
    "paris",
    "what a fun comedy, the whole family",
    "it rained all day",
    "the food at the restaurant was cold and the waiter",
]


@pytest.fixture(scope="module")
def long_llama_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny Llama with a 4,096-token window (RoPE has no position weights), so streams run
    long enough to overlap, and a chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("long-llama")
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.max_position_embeddings = 4096
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.model_max_length = 4096
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, long_llama_dir, tiny_gpt2_dir):
    tmp = tmp_path_factory.mktemp("serve-generation")
    running = RunningServer(["-m", f"llama={long_llama_dir}", "-m", f"gpt={tiny_gpt2_dir}", "--preload"], tmp)
    yield running
    assert running.stop() in CLEAN_EXITS


def complete(url: str, body: dict, timeout: float = 120):
    import httpx

    return httpx.post(url + "/v1/completions", json=body, timeout=timeout)


def generate_locally(cli, model: Path, prompts: list[str], *flags: str) -> list[dict]:
    result = cli(["generate", "-m", str(model), *flags, *prompts])
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- the engine in-process: requests joining a running batch ---------------------------------


def run_engine_in_waves(
    model_dir, prompts: list[str], max_tokens: list[int], stops=(), loaded=None
) -> list[dict]:
    """Half the prompts start; the rest join once the first tokens are out (mid-batch)."""
    from bertgpt_cli.inference import generate
    from bertgpt_cli.serving.continuous import ContinuousEngine, GenerationRequest, Limits

    base = generate.GenerateConfig(model=str(model_dir), quiet=True, offline=True)
    loaded = loaded or generate.load(base)
    engine = ContinuousEngine(*loaded, Limits(max_sequences=8), ThreadPoolExecutor(1))
    events: queue.Queue = queue.Queue()
    first_tokens = threading.Event()

    def submit(position: int) -> None:
        config = generate.GenerateConfig(
            model=str(model_dir), quiet=True, max_new_tokens=max_tokens[position], stop=list(stops)
        )
        generator = generate.Generator(*loaded, config)

        def deliver(kind, payload, position=position):
            first_tokens.set()
            events.put((position, kind, payload))

        prompt = prompts[position]
        engine.submit(
            GenerationRequest(prompt, generator.prompt_ids(prompt), generator, deliver, stream=True)
        )

    half = len(prompts) // 2
    for position in range(half):
        submit(position)
    assert first_tokens.wait(60)
    for position in range(half, len(prompts)):
        submit(position)
    records: dict[int, dict] = {}
    pieces: dict[int, str] = {}
    while len(records) < len(prompts):
        position, kind, payload = events.get(timeout=60)
        assert kind != "error", payload
        if kind == "piece":
            pieces[position] = pieces.get(position, "") + payload[1]
        else:
            records[position] = payload[1]
    for position, record in records.items():  # the stream adds up to the record
        assert pieces.get(position, "") == record["completion"]
    return [records[i] for i in range(len(prompts))]


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_sequences_joining_mid_batch_equal_bgcli_generate(cli, request, fixture):
    """Mixed prompt lengths, some finishing early (their own max tokens, a stop string), half of
    them joining while the others decode: each equals `bgcli generate` of its prompt."""
    model = request.getfixturevalue(fixture)
    max_tokens = [12, 3, 20, 7, 16, 1]
    served = run_engine_in_waves(model, PROMPTS, max_tokens, stops=["zz"])
    for prompt, tokens, record in zip(PROMPTS, max_tokens, served, strict=True):
        [local] = generate_locally(cli, model, [prompt], "--max-new-tokens", str(tokens), "--stop", "zz")
        assert record == local
    assert {r["finish_reason"] for r in served} & {"length"}


def test_smollm2_in_fp32_joining_mid_batch_equals_bgcli_generate():
    """The real model: what `bgcli generate` runs (Generator.generate) on each prompt alone."""
    from bertgpt_cli.inference import generate
    from bertgpt_cli.io.records import InputRecord

    prompts = [
        "The capital of France is",
        "Once upon a time, in a land far away, there lived",
        "1, 2, 3,",
        "def f(a):",
    ]
    max_tokens = [16, 6, 12, 16]
    loaded = generate.load(generate.GenerateConfig(model="smollm2", quiet=True, offline=True))
    served = run_engine_in_waves("smollm2", prompts, max_tokens, loaded=loaded)
    for prompt, tokens, record in zip(prompts, max_tokens, served, strict=True):
        config = generate.GenerateConfig(model="smollm2", quiet=True, max_new_tokens=tokens)
        [[alone]] = generate.Generator(*loaded, config).generate([InputRecord(1, prompt)])
        assert record == alone


# --- over HTTP ----------------------------------------------------------------------------------


def test_concurrent_completions_equal_bgcli_generate(cli, server, long_llama_dir):
    max_tokens = [30, 4, 18, 9, 25, 2]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(
            pool.map(
                lambda i: complete(
                    server.url,
                    {"model": "llama", "prompt": PROMPTS[i], "max_tokens": max_tokens[i], "temperature": 0},
                ),
                range(len(PROMPTS)),
            )
        )
    for prompt, tokens, answer in zip(PROMPTS, max_tokens, answers, strict=True):
        assert answer.status_code == 200, answer.text
        [local] = generate_locally(cli, long_llama_dir, [prompt], "--max-new-tokens", str(tokens))
        choice = answer.json()["choices"][0]
        assert choice["text"] == local["completion"]
        assert answer.json()["usage"]["completion_tokens"] == local["generated_tokens"]


def test_a_seeded_sample_equals_a_lone_seeded_bgcli_generate(cli, server, long_llama_dir):
    """Sampled next to other requests, a seeded request draws what it draws alone, and n = 2
    draws what `--num-return-sequences 2` draws."""
    body = {"model": "llama", "prompt": "the movie was", "max_tokens": 12, "temperature": 0.8, "seed": 11}
    with ThreadPoolExecutor(4) as pool:
        others = [
            pool.submit(complete, server.url, {**body, "prompt": p, "seed": None}) for p in PROMPTS[1:4]
        ]
        single = pool.submit(complete, server.url, body)
        pair = pool.submit(complete, server.url, {**body, "n": 2})
        assert all(o.result().status_code == 200 for o in others)
    flags = ["--sample", "--seed", "11", "--temperature", "0.8", "--top-k", "0", "--max-new-tokens", "12"]
    [alone] = generate_locally(cli, long_llama_dir, ["the movie was"], *flags)
    assert single.result().json()["choices"][0]["text"] == alone["completion"]
    two = generate_locally(cli, long_llama_dir, ["the movie was"], *flags, "--num-return-sequences", "2")
    assert [c["text"] for c in pair.result().json()["choices"]] == [r["completion"] for r in two]


def stream_times(url: str, prompt: str, max_tokens: int, record: dict) -> None:
    """Streams a completion; notes when its first piece and its end arrived."""
    import httpx

    body = {"model": "llama", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    text = ""
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice["text"] and "first" not in record:
                record["first"] = time.monotonic()
            text += choice["text"]
    record["end"], record["text"] = time.monotonic(), text


def test_eight_streams_interleave(server):
    """All 8 concurrent streams see their first piece before the first of them finishes."""
    records: list[dict] = [{} for _ in range(8)]
    threads = [
        threading.Thread(target=stream_times, args=(server.url, f"{PROMPTS[i % 6]} {i}", 600, records[i]))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all("first" in r and r["text"] for r in records)
    assert max(r["first"] for r in records) < min(r["end"] for r in records)


def metric(url: str, prefix: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


RUNNING = 'bgcli_running_sequences{model="llama"}'
CANCELLED = 'bgcli_finished_sequences_total{model="llama",reason="cancelled"}'


def test_a_client_that_disconnects_frees_its_sequence(server):
    import httpx

    cancelled_before = metric(server.url, CANCELLED)
    body = {"model": "llama", "prompt": "the movie was", "max_tokens": 3000, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # one piece, then hang up mid-stream
    deadline = time.monotonic() + 10
    while metric(server.url, RUNNING) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server.url, RUNNING) == 0
    assert metric(server.url, CANCELLED) == cancelled_before + 1
    started = time.monotonic()  # the next request is not behind 3,000 tokens of the dead one
    answer = complete(server.url, {"model": "llama", "prompt": "paris", "max_tokens": 4, "temperature": 0})
    assert answer.status_code == 200 and time.monotonic() - started < 10


def test_a_prompt_over_the_window_is_a_400_with_the_numbers(server):
    answer = complete(server.url, {"model": "gpt", "prompt": "the movie was " * 30, "max_tokens": 20})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "over the model's 64-token window" in message and "max_tokens 20" in message


def test_limits_queue_then_refuse_with_retry_after(tmp_path, long_llama_dir):
    """One sequence at a time and one waiting: a third concurrent request is a 503."""
    running = RunningServer(
        ["-m", f"llama={long_llama_dir}", "--preload", "--max-concurrent-sequences", "1", "--max-queue", "1"],
        tmp_path,
    )
    try:
        body = {"model": "llama", "prompt": "the movie was", "max_tokens": 1500, "temperature": 0}
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(complete, running.url, body) for _ in range(3)]
            codes = sorted(a.result().status_code for a in answers)
        assert codes == [200, 200, 503]
        refused = next(a.result() for a in answers if a.result().status_code == 503)
        assert refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]["message"]
        too_big = complete(running.url, {**body, "n": 2, "temperature": 1})
        assert (
            too_big.status_code == 400 and "--max-concurrent-sequences" in too_big.json()["error"]["message"]
        )
    finally:
        assert running.stop() in CLEAN_EXITS


def test_metrics_in_prometheus_format(server):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    complete(server.url, {"model": "llama", "prompt": "paris", "max_tokens": 5, "temperature": 0})
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    ok = ("endpoint", "/v1/completions"), ("model", "llama"), ("status", "200")
    assert samples[("bgcli_requests_total", ok)] >= 1
    assert samples[("bgcli_generated_tokens_total", (("model", "llama"),))] >= 5
    assert samples[("bgcli_time_to_first_token_seconds_count", (("model", "llama"),))] >= 1
    assert samples[("bgcli_request_latency_seconds_count", ok[:2])] >= 1
    assert ("bgcli_queue_length", (("model", "llama"),)) in samples
    decode = ("kind", "decode"), ("model", "llama")
    assert samples[("bgcli_batch_size_count", decode)] >= 4
