"""bgcli serve: a warm server against loading the model on every call, concurrent clients
against offline batches, and continuous batching against `transformers serve`.

Rows, in one run against one server (minilm + a seeded classification head, and smollm2):
- a one-sentence `bgcli classify --server` whole-process call vs the local `bgcli classify`;
- 32 concurrent clients each sending single texts (the 1,066 RT sentences): throughput vs the
  offline batched classifier on the same texts in-process, with p50 / p99 request latency;
  once with a light load generator (raw HTTP/1.1 keep-alive on asyncio streams: what the
  server can do) and once with httpx clients (their CPU shares the 2 cores with the server);
- 16 concurrent chat streams to smollm2 (64 new tokens, greedy, mixed prompt lengths):
  aggregate tokens/s vs offline batched `bgcli generate` of the same 16 prompts, time to
  first token p50 vs a lone request's, p99 latency, and the same load against
  `transformers serve --continuous-batching` on the same model (identical text checked).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .assets import minilm_with_head, rt_sentences
from .inference import REPEATS, row, run_process
from .runner import Result

CLIENTS = 32
STREAMS = 16
STREAM_TOKENS = 64


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


def in_subprocess(function: str, *args):
    """Run `bench.serve.<function>(*args)` in a fresh process and return its JSON result: the
    offline baselines then leave no torch threads (or models) in the process whose clients
    measure the server (idle OpenMP threads of a finished run cost the next one here)."""
    code = (
        "import json, sys; import bench.serve as s; "
        f"print(json.dumps(s.{function}(*json.loads(sys.argv[1]))))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def offline_classify(classifier: str, texts: list[str]) -> tuple[float, list[str]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertgpt_cli.inference.classify import Classifier, ClassifyConfig
    from bertgpt_cli.io.records import InputRecord

    tokenizer = AutoTokenizer.from_pretrained(classifier)
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    offline = Classifier(model, tokenizer, ClassifyConfig(model=classifier))
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    start = time.perf_counter()
    labels = [r[0]["label"] for r in offline.classify(records)]
    return len(texts) / (time.perf_counter() - start), labels


async def light_clients(url: str, texts: list[str], latencies: list[float], labels: dict) -> None:
    """CLIENTS keep-alive connections speaking plain HTTP/1.1: ~0.05 s of CPU for the 1,066
    requests, so the 2 cores go to the server (httpx spends ~1.3 s)."""
    import asyncio

    host, port = url.split("//")[1].split(":")
    queue = iter(range(len(texts)))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for index in queue:
            body = json.dumps({"model": "rt", "text": texts[index]}).encode()
            head = b"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            sent = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            header = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            length = int(header.split("content-length:")[1].split("\r\n")[0])
            answer = json.loads(await reader.readexactly(length))
            latencies.append(time.perf_counter() - sent)
            labels[index] = answer["data"][0]["label"]
        writer.close()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def httpx_clients(url: str, texts: list[str], latencies: list[float], labels: dict) -> None:
    """CLIENTS concurrent httpx clients (asyncio: 32 client threads would take more CPU)."""
    import asyncio

    import httpx

    queue = iter(range(len(texts)))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as http:

        async def client() -> None:
            for index in queue:
                sent = time.perf_counter()
                answer = await http.post(url + "/v1/classify", json={"model": "rt", "text": texts[index]})
                latencies.append(time.perf_counter() - sent)
                labels[index] = answer.json()["data"][0]["label"]

        await asyncio.gather(*(client() for _ in range(CLIENTS)))


def concurrent_rows(url: str, classifier: str) -> list[Result]:
    import asyncio
    import resource

    texts = rt_sentences()
    offline_rate, offline_labels = in_subprocess("offline_classify", classifier, texts)
    rows = []
    for name, clients in (("light load generator", light_clients), ("httpx clients", httpx_clients)):
        latencies: list[float] = []
        labels: dict[int, str] = {}
        used = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        asyncio.run(clients(url, texts, latencies, labels))
        served_rate = len(texts) / (time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
        latencies.sort()
        rows.append(
            row(
                f"classify, {CLIENTS} concurrent single-text clients ({name}) vs offline batched",
                served_rate,
                offline_rate,
                "sentences/s",
                [labels[i] for i in range(len(texts))] == offline_labels,
                "Classifier over all texts in-process (batch 32)",
                p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
                p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
                client_cpu_s=round(client_cpu, 2),
            )
        )
    return rows


def chat_prompts() -> list[str]:
    """16 requests of mixed lengths: RT sentences of 1 to 4 sentences' worth."""
    sentences = rt_sentences()
    return [
        "Summarize this review in one sentence: " + " ".join(sentences[i * 4 : i * 4 + 1 + i % 4])
        for i in range(STREAMS)
    ]


def offline_generation(prompts: list[str]) -> tuple[float, list[str]]:
    """`bgcli generate --chat` of the 16 prompts as one batch, in-process: wall s, texts."""
    from bertgpt_cli.inference.generate import GenerateConfig, Generator, load
    from bertgpt_cli.io.records import InputRecord

    config = GenerateConfig(
        model="smollm2", chat=True, max_new_tokens=STREAM_TOKENS, batch_size=STREAMS, quiet=True
    )
    generator = Generator(*load(config), config)
    records = [InputRecord(i, p) for i, p in enumerate(prompts)]
    generator.generate(records[:2])  # warm-up
    start = time.perf_counter()
    results = generator.generate(records)
    return time.perf_counter() - start, [r[0]["completion"] for r in results]


async def one_stream(http, url: str, model: str, prompt: str) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    sent, first, text = time.perf_counter(), None, ""
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                first = first or time.perf_counter()
                text += piece
    return {
        "ttft": first - sent if first else float("nan"),
        "latency": time.perf_counter() - sent,
        "text": text,
    }


def stream_load(url: str, model: str, prompts: list[str]) -> tuple[float, list[dict], float]:
    """A lone request's TTFT (median of 3), then all prompts at once: (wall, per stream)."""
    import asyncio

    import httpx

    async def run() -> tuple[float, list[dict], float]:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=STREAMS)) as http:
            lone = [await one_stream(http, url, model, prompts[0]) for _ in range(3)]
            start = time.perf_counter()
            streams = await asyncio.gather(*(one_stream(http, url, model, p) for p in prompts))
            return time.perf_counter() - start, streams, statistics.median(s["ttft"] for s in lone)

    return asyncio.run(run())


def streams_rows(url: str) -> list[Result]:
    from transformers import AutoTokenizer

    from bertgpt_cli.io.assets import BUILTIN_MODELS

    model_dir = str(BUILTIN_MODELS["smollm2"].model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = chat_prompts()
    offline_wall, offline_texts = in_subprocess("offline_generation", prompts)

    def count(texts: list[str]) -> int:
        """The unit for every contender: the answers' text, tokenized again."""
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    offline_rate = count(offline_texts) / offline_wall

    def summary(wall: float, streams: list[dict], lone_ttft: float) -> dict:
        tokens = count([s["text"] for s in streams])
        ttfts = sorted(s["ttft"] for s in streams)
        latencies = sorted(s["latency"] for s in streams)
        return {
            "rate": tokens / wall,
            "identical": [s["text"] for s in streams] == offline_texts,
            "ttft_p50_s": round(statistics.median(ttfts), 3),
            "lone_ttft_s": round(lone_ttft, 3),
            "ttft_p50_vs_lone": round(statistics.median(ttfts) / lone_ttft, 1),
            "latency_p99_s": round(
                latencies[-1] if len(latencies) < 100 else latencies[int(len(latencies) * 0.99)], 2
            ),
            "wall_s": round(wall, 1),
        }

    ours = summary(*stream_load(url, "chat", prompts))
    rows = [
        row(
            f"chat, {STREAMS} concurrent streams (smollm2, {STREAM_TOKENS} tokens) vs offline generate",
            ours.pop("rate"),
            offline_rate,
            "tokens/s",
            ours.pop("identical"),
            f"bgcli generate --chat of the {STREAMS} prompts in one batch, in-process",
            **ours,
        )
    ]
    theirs = transformers_serve_load(model_dir, prompts)
    if isinstance(theirs, str):
        print(f"transformers serve --continuous-batching: {theirs}", file=sys.stderr)
        return rows
    theirs = summary(*theirs)
    rows.append(
        row(
            f"chat, {STREAMS} concurrent streams: bgcli serve vs transformers serve --continuous-batching",
            rows[0].ours,
            theirs.pop("rate"),
            "tokens/s",
            theirs.pop("identical"),
            "transformers serve --continuous-batching --device cpu (same model, load, greedy)",
            **{f"theirs_{k}": v for k, v in theirs.items()},
        )
    )
    return rows


def transformers_serve_load(model_dir: str, prompts: list[str]):
    """The same load against `transformers serve --continuous-batching`; its error if it fails."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "transformers"), "serve", "--continuous-batching"]
    command += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port), model_dir]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"transformers-serve-{port}.log"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if process.poll() is not None:
                return f"exited: {log.read_text()[-300:]}"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        return stream_load(url, model_dir, prompts)
    except Exception as exc:  # noqa: BLE001 - report it as the row's note
        return f"{type(exc).__name__}: {exc}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def run() -> list[Result]:
    classifier = str(minilm_with_head("classification"))
    process, url = start_server([f"rt={classifier}", "chat=smollm2"])
    try:
        rows = [one_call_row(url, classifier), *concurrent_rows(url, classifier)]
        if os.environ.get("BENCH_SERVE_STREAMS", "1") == "1":
            rows.extend(streams_rows(url))
        return rows
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
