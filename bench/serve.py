"""bgcli serve: a warm server against loading the model on every call.

Rows, in one run against one server (minilm + a seeded classification head, and smollm2):
- a one-sentence `bgcli classify --server` whole-process call vs the local `bgcli classify`;
- 32 concurrent clients each sending single texts (the 1,066 RT sentences): throughput vs the
  offline batched classifier on the same texts in-process, with p50 / p99 request latency;
- 8 concurrent chat streams on smollm2: generated tokens/s and time to first token.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from .assets import minilm_with_head, rt_sentences
from .inference import REPEATS, row, run_process
from .runner import Result

CLIENTS = 32
STREAMS = 8
STREAM_TOKENS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(models: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(Path(sys.executable).parent / "bgcli"), "serve", "--port", str(port), "--preload", "--quiet"]
    process = subprocess.Popen([*args, *(a for m in models for a in ("-m", m))], stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not start")


def one_call_row(url: str, classifier: str) -> Result:
    bgcli = str(Path(sys.executable).parent / "bgcli")
    text = "a gorgeous, witty movie\n"
    env_remote = [bgcli, "classify", "--server", url, "-m", "rt", "--quiet"]
    local = [bgcli, "classify", "-m", classifier, "--quiet"]
    remote_times, local_times, outputs = [], [], {}
    for _ in range(REPEATS):
        wall, _, outputs["remote"] = run_process(env_remote, text)
        remote_times.append(wall)
        wall, _, outputs["local"] = run_process(local, text)
        local_times.append(wall)
    same = json.loads(outputs["remote"])["label"] == json.loads(outputs["local"])["label"]
    remote, local_wall = statistics.median(remote_times), statistics.median(local_times)
    return Result(
        name="classify one sentence: --server vs local (whole process)",
        ours=round(remote, 3),
        baseline=round(local_wall, 2),
        unit="s",
        ratio=round(local_wall / remote, 1),
        identical=same,
        baseline_name="bgcli classify loading the model",
    )


def concurrent_row(url: str, classifier: str) -> Result:
    import httpx
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertgpt_cli.inference.classify import Classifier, ClassifyConfig
    from bertgpt_cli.io.records import InputRecord

    texts = rt_sentences()
    tokenizer = AutoTokenizer.from_pretrained(classifier)
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    offline = Classifier(model, tokenizer, ClassifyConfig(model=classifier))
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    start = time.perf_counter()
    offline_labels = [r[0]["label"] for r in offline.classify(records)]
    offline_rate = len(texts) / (time.perf_counter() - start)

    latencies: list[float] = []
    labels: dict[int, str] = {}

    async def clients() -> None:
        """CLIENTS concurrent clients, each sending one text at a time until none is left
        (asyncio: 32 client threads in this process would take CPU from the server)."""
        import asyncio

        queue = iter(range(len(texts)))
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:

            async def client() -> None:
                for index in queue:
                    sent = time.perf_counter()
                    answer = await http.post(url + "/v1/classify", json={"model": "rt", "text": texts[index]})
                    latencies.append(time.perf_counter() - sent)
                    labels[index] = answer.json()["data"][0]["label"]

            await asyncio.gather(*(client() for _ in range(CLIENTS)))

    import asyncio

    start = time.perf_counter()
    asyncio.run(clients())
    served_rate = len(texts) / (time.perf_counter() - start)
    latencies.sort()
    return row(
        f"classify, {CLIENTS} concurrent single-text clients vs offline batched",
        served_rate,
        offline_rate,
        "sentences/s",
        [labels[i] for i in range(len(texts))] == offline_labels,
        "Classifier over all texts in-process (batch 32)",
        p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
        p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
    )


def streams_row(url: str) -> Result:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    prompts = [f"Write one sentence about movie number {i}." for i in range(STREAMS)]
    first_token: list[float] = []
    tokens: list[int] = []

    def stream(prompt: str) -> None:
        sent = time.perf_counter()
        chunks = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=STREAM_TOKENS,
            temperature=0,
            stream=True,
        )
        count, seen_first = 0, False
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                if not seen_first:
                    first_token.append(time.perf_counter() - sent)
                    seen_first = True
                count += 1
        tokens.append(count)

    start = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    rate = sum(tokens) / wall
    return Result(
        name=f"chat, {STREAMS} concurrent streams (smollm2, {STREAM_TOKENS} tokens)",
        ours=round(rate, 1),
        baseline=round(rate, 1),
        unit="text pieces/s",
        ratio=1.0,
        identical=None,
        baseline_name="(no baseline: throughput and time to first token)",
        details={
            "ttft_p50_s": round(statistics.median(first_token), 2),
            "ttft_max_s": round(max(first_token), 2),
            "wall_s": round(wall, 1),
        },
    )


def run() -> list[Result]:
    classifier = str(minilm_with_head("classification"))
    process, url = start_server([f"rt={classifier}", "chat=smollm2"])
    try:
        rows = [one_call_row(url, classifier), concurrent_row(url, classifier)]
        if os.environ.get("BENCH_SERVE_STREAMS", "1") == "1":
            rows.append(streams_row(url))
        return rows
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
