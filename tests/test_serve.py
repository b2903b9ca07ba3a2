"""bgcli serve: OpenAI-compatible endpoints (tested with the real openai client), task endpoints
equal to the CLI's records, batching across requests, overload, shutdown, and the inference
commands' --server path (same output and exit codes as the local path, no torch import)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import ROOT

CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# uvicorn shuts down gracefully on SIGTERM, then re-raises it: the conventional exit by signal.
CLEAN_EXITS = (0, -signal.SIGTERM)
TEXTS = ["the movie was great", "a terrible film with a boring plot", "paris", "what a fun comedy"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bertgpt_cli", "serve", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env=env,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        import httpx

        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, tiny_gpt2_dir) -> Path:
    folder = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_gpt2_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_classifier_dir, tiny_bert_dir, bare_encoder_dir, chat_model_dir):
    tmp = tmp_path_factory.mktemp("serve")
    models = [
        f"rt={tiny_classifier_dir}",
        f"mlm={tiny_bert_dir}",
        f"enc={bare_encoder_dir}",
        f"gpt={chat_model_dir}",
    ]
    running = RunningServer([arg for m in models for arg in ("-m", m)] + ["--batch-wait-ms", "50"], tmp)
    yield running
    assert running.stop() in CLEAN_EXITS


def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_completions_equal_bgcli_generate(cli, server, chat_model_dir):
    client = openai_client(server)
    answer = client.completions.create(model="gpt", prompt="the movie was", max_tokens=8, temperature=0)
    local = json.loads(
        cli(["generate", "-m", str(chat_model_dir), "--max-new-tokens", "8", "the movie was"]).stdout
    )
    assert answer.choices[0].text == local["completion"]
    assert answer.usage.completion_tokens == local["generated_tokens"]
    assert (
        answer.choices[0].finish_reason
        == {"eos": "stop", "stop": "stop", "length": "length"}[local["finish_reason"]]
    )
    assert [m.id for m in client.models.list().data] == ["rt", "mlm", "enc", "gpt"]


def test_chat_with_and_without_streaming(server, chat_model_dir):
    from transformers import AutoTokenizer

    client = openai_client(server)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a great movie?"}]
    whole = client.chat.completions.create(model="gpt", messages=messages, max_tokens=6, temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant" and whole.object == "chat.completion"
    chunks = list(
        client.chat.completions.create(
            model="gpt", messages=messages, max_tokens=6, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == text and len(chunks) >= 3
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert whole.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_seeded_sampling_is_reproducible(server):
    client = openai_client(server)
    runs = [
        client.completions.create(model="gpt", prompt="the movie", max_tokens=8, temperature=1.0, seed=7, n=2)
        for _ in range(2)
    ]
    assert [c.text for c in runs[0].choices] == [c.text for c in runs[1].choices]
    assert len(runs[0].choices) == 2


def test_embeddings_equal_bgcli_embed(cli, server, bare_encoder_dir):
    import numpy as np

    client = openai_client(server)
    answer = client.embeddings.create(model="enc", input=TEXTS)  # the client asks for base64
    local = [
        json.loads(line)["embedding"]
        for line in cli(["embed", "-m", str(bare_encoder_dir), *TEXTS]).stdout.splitlines()
    ]
    np.testing.assert_allclose([d.embedding for d in answer.data], local, atol=1e-6)
    assert [d.index for d in answer.data] == list(range(len(TEXTS)))


def test_32_concurrent_classify_requests_equal_the_cli(cli, server, tiny_classifier_dir):
    import httpx

    texts = [f"{t} {i}" for i in range(8) for t in TEXTS]
    results: dict[int, dict] = {}

    def ask(index: int) -> None:
        response = httpx.post(
            server.url + "/v1/classify", json={"model": "rt", "text": texts[index]}, timeout=60
        )
        assert response.status_code == 200, response.text
        results[index] = response.json()["data"][0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    local = [
        json.loads(line)
        for line in cli(["classify", "-m", str(tiny_classifier_dir), *texts]).stdout.splitlines()
    ]
    # Same labels; scores equal to float rounding (a batch's shape changes the BLAS kernel).
    assert [results[i]["label"] for i in range(len(texts))] == [r["label"] for r in local]
    for i, record in enumerate(local):
        assert results[i]["score"] == pytest.approx(record["score"], abs=1e-6)
    batches = [
        int(line.rsplit("batch=", 1)[1])
        for line in server.log.read_text().splitlines()
        if "/v1/classify 200" in line and "batch=" in line and not line.endswith("batch=-")
    ]
    assert max(batches) > 1  # concurrent requests shared forward passes


@pytest.mark.parametrize(
    "command, extra",
    [
        ("classify", ["--all-scores"]),
        ("fill-mask", ["--top-k", "3"]),
        ("generate", ["--max-new-tokens", "5"]),
    ],
)
def test_the_server_path_equals_the_local_path(
    cli, server, command, extra, tiny_classifier_dir, tiny_bert_dir, chat_model_dir
):
    local_model = {"classify": tiny_classifier_dir, "fill-mask": tiny_bert_dir, "generate": chat_model_dir}[
        command
    ]
    name = {"classify": "rt", "fill-mask": "mlm", "generate": "gpt"}[command]
    text = "the [MASK] was great" if command == "fill-mask" else "the movie was great"
    data = (
        json.dumps({"id": 1, "text": text})
        + "\n\n"
        + json.dumps({"id": 3, "text": text + " again"})
        + "\n{bad\n"
    )
    local = cli([command, "-m", str(local_model), *extra], input=data)
    remote = cli([command, "-m", name, "--server", server.url, *extra], input=data)
    assert remote.code == local.code == 1
    assert remote.stdout == local.stdout
    assert "line 2:" in remote.stderr and "line 4:" in remote.stderr


def test_a_server_that_is_down_or_lacks_the_model_is_one_line(cli, server, tiny_classifier_dir):
    down = cli(["classify", "--server", f"http://127.0.0.1:{free_port()}", "-m", "rt", "a"])
    assert down.code == 2 and "no bgcli server answers" in down.stderr
    missing = cli(["classify", "--server", server.url, "-m", "nope", "a"])
    assert missing.code == 2 and "has no model 'nope'" in missing.stderr
    fallback = cli(
        ["classify", "--server", server.url, "--server-fallback", "-m", str(tiny_classifier_dir), "a"]
    )
    assert (
        fallback.code == 0
        and "loading the model here" in fallback.stderr
        and json.loads(fallback.stdout)["label"]
    )


def test_the_client_path_imports_no_torch(server):
    code = (
        "import sys\nfrom bertgpt_cli.cli.app import main\n"
        f"code = main(['classify', '--server', '{server.url}', '-m', 'rt', 'a fine film'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy), code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.splitlines()[-1] == "HEAVY= 0"


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/classify", {"model": "nope", "text": "a"}, 404, "no model 'nope'"),
        ("/v1/classify", {"model": "rt"}, 400, 'pass the input as "text"'),
        ("/v1/classify", {"model": "rt", "text": []}, 400, "non-empty list"),
        (
            "/v1/classify",
            {"model": "rt", "text": "a", "threshold": 2},
            400,
            "--threshold must be >= 0 and <= 1",
        ),
        ("/v1/classify", {"model": "rt", "text": "a", "top_k": 2}, 400, "unknown option(s) top_k"),
        ("/v1/classify", {"model": "mlm", "text": "a"}, 400, "no trained classification head"),
        ("/v1/chat/completions", {"model": "gpt", "messages": "hi"}, 400, '"messages" must be'),
        ("/v1/completions", {"model": "gpt", "prompt": "a", "temperature": -1}, 400, '"temperature" must be'),
        ("/v1/embeddings", {"model": "enc", "input": [""]}, 400, '"input" must be'),
        ("/v1/completions", {"model": "rt", "prompt": "a"}, 400, "is not a causal LM"),
    ],
)
def test_mistakes_are_4xx_in_the_openai_error_shape(server, path, body, status, message):
    import httpx

    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_bad_json_and_oversized_bodies(tmp_path, tiny_classifier_dir):
    import httpx

    small = RunningServer(
        ["-m", f"rt={tiny_classifier_dir}", "--max-body-mb", "0.001", "--api-key", "k"], tmp_path
    )
    try:
        auth = {"Authorization": "Bearer k"}
        assert httpx.post(small.url + "/v1/classify", json={"model": "rt", "text": "a"}).status_code == 401
        bad = httpx.post(small.url + "/v1/classify", content=b"{not json", headers=auth)
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
        big = httpx.post(small.url + "/v1/classify", json={"model": "rt", "text": "a" * 5000}, headers=auth)
        assert big.status_code == 413
    finally:
        assert small.stop() in CLEAN_EXITS


def test_overload_is_503_with_retry_after(tmp_path, tiny_classifier_dir):
    import httpx

    busy = RunningServer(
        ["-m", f"rt={tiny_classifier_dir}", "--max-queue", "2", "--batch-wait-ms", "300"], tmp_path
    )
    try:
        statuses: list[httpx.Response] = []

        def ask() -> None:
            statuses.append(
                httpx.post(busy.url + "/v1/classify", json={"model": "rt", "text": ["a", "b"]}, timeout=60)
            )

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = sorted(r.status_code for r in statuses)
        assert 200 in codes and 503 in codes
        refused = next(r for r in statuses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]["message"]
    finally:
        busy.stop()


def test_sigterm_finishes_the_request_in_flight(tmp_path, tiny_classifier_dir):
    import httpx

    running = RunningServer(
        ["-m", f"rt={tiny_classifier_dir}", "--batch-wait-ms", "500", "--preload"], tmp_path
    )
    answers: list[httpx.Response] = []
    body = {"model": "rt", "text": "the movie"}
    thread = threading.Thread(
        target=lambda: answers.append(httpx.post(running.url + "/v1/classify", json=body, timeout=60))
    )
    thread.start()
    time.sleep(0.2)  # the request waits in its batch window when SIGTERM arrives
    assert running.stop() in CLEAN_EXITS
    thread.join()
    assert answers and answers[0].status_code == 200 and answers[0].json()["data"][0]["label"]


def test_shutdown_timeout_cuts_off_a_request_that_runs_past_it(tmp_path, tiny_classifier_dir):
    """--shutdown-timeout bounds SIGTERM's wait: a request held longer (here in a 1 s batch
    window, with 0.2 s allowed) is cut off after it, and the server exits instead of waiting."""
    import httpx

    running = RunningServer(
        [
            "-m",
            f"rt={tiny_classifier_dir}",
            "--batch-wait-ms",
            "1000",
            "--shutdown-timeout",
            "0.2",
            "--preload",
        ],
        tmp_path,
    )
    outcome: list[object] = []
    body = {"model": "rt", "text": "the movie"}

    def ask() -> None:
        try:
            outcome.append(httpx.post(running.url + "/v1/classify", json=body, timeout=60).status_code)
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert running.stop() in CLEAN_EXITS
    stopped_after = time.monotonic() - started
    thread.join(timeout=30)
    assert stopped_after < 10, f"the server waited {stopped_after:.1f} s"
    assert outcome and outcome[0] != 200  # cut off: no answer, or an error status
    assert "Traceback" not in running.log.read_text()


def test_other_addresses_need_an_api_key(cli, tiny_classifier_dir):
    result = cli(["serve", "-m", f"rt={tiny_classifier_dir}", "--host", "0.0.0.0"])
    assert result.code == 2 and "--api-key" in result.stderr


def test_a_port_in_use_is_one_line_and_exit_2(cli):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = cli(["serve", "-m", "minilm", "--port", str(port)])
    finally:
        taken.close()
    assert result.code == 2
    assert (
        result.stderr.strip()
        == f"error: port {port} on 127.0.0.1 is in use by another program; pick another with --port"
    )


def test_health_tells_strangers_only_ready_and_never_paths(tmp_path, tiny_classifier_dir, monkeypatch):
    import httpx

    running = RunningServer(["-m", f"rt={tiny_classifier_dir}", "--api-key", "k3y"], tmp_path)
    try:
        anonymous = httpx.get(running.url + "/health").json()
        keyed = httpx.get(running.url + "/health", headers={"Authorization": "Bearer k3y"}).json()
        monkeypatch.delenv("BGCLI_API_KEY", raising=False)
        from bertgpt_cli.errors import UsageError
        from bertgpt_cli.serving.client import server_models

        with pytest.raises(UsageError, match="needs its API key: set \\$BGCLI_API_KEY"):
            server_models(running.url)
    finally:
        assert running.stop() in CLEAN_EXITS
    assert anonymous == {"status": "ok"}
    assert keyed == {"status": "ok", "models": {"rt": {"loaded": []}}}
    assert str(tiny_classifier_dir) in running.log.read_text()  # the paths stay in the server's log


def test_a_model_path_that_does_not_exist_stops_the_server_at_start(cli, tmp_path):
    result = cli(["serve", "-m", f"bad={tmp_path / 'nonexistent'}"])
    assert result.code == 2 and "model dir" in result.stderr and "not found" in result.stderr


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"n": "3"}, '"n" must be a whole number >= 1'),
        ({"n": 0}, '"n" must be a whole number >= 1'),
        ({"n": 2, "temperature": 0}, '"n" > 1 needs sampling'),
        ({"n": 5000, "temperature": 1}, "over the 32 sequences this server runs at once"),
    ],
)
def test_client_mistakes_in_completions_are_4xx_not_500(server, extra, message):
    import httpx

    body = {"model": "gpt", "prompt": "hello", "max_tokens": 2, **extra}
    response = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code in (400, 413), response.text
    assert message in response.json()["error"]["message"]
    assert "Traceback" not in server.log.read_text()


def test_a_client_sends_windows_a_small_queue_accepts(tmp_path, tiny_classifier_dir):
    import httpx

    running = RunningServer(["-m", f"rt={tiny_classifier_dir}", "--max-queue", "4"], tmp_path)
    try:
        texts = [f"text {i}" for i in range(20)]
        too_many = httpx.post(running.url + "/v1/classify", json={"model": "rt", "text": texts}, timeout=60)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        piped = subprocess.run(
            [sys.executable, "-m", "bertgpt_cli", "classify", "--server", running.url, "-m", "rt"],
            input="\n".join(texts) + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        assert running.stop() in CLEAN_EXITS
    assert too_many.status_code == 413 and "at most 4" in too_many.json()["error"]["message"]
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout.splitlines()) == 20


def test_a_chunked_body_is_held_to_the_size_limit(tmp_path, tiny_classifier_dir):
    import httpx

    running = RunningServer(["-m", f"rt={tiny_classifier_dir}", "--max-body-mb", "1"], tmp_path)

    def chunks():  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"model": "rt", "text": ["'
        for _ in range(64):
            yield b"a" * 65536
        yield b'"]}'

    try:
        response = httpx.post(running.url + "/v1/classify", content=chunks(), timeout=60)
    finally:
        assert running.stop() in CLEAN_EXITS
    assert response.status_code == 413 and "--max-body-mb" in response.json()["error"]["message"]
    assert "Traceback" not in running.log.read_text()
