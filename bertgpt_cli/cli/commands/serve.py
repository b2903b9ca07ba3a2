"""`bgcli serve`: warm models behind an HTTP API (FastAPI + uvicorn), OpenAI-compatible for
generation and embeddings, plus the CLI's commands as task endpoints; the inference
commands' `--server URL` sends their records here instead of loading a model."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...errors import UsageError
from ...inference.loading import PRECISIONS
from ...io.console import info
from ...models.resolution import check_model_spec
from ...options import OutputOptions, option

NAME = "serve"
HELP = "Serve models over HTTP: OpenAI-compatible completions/chat/embeddings and the CLI's task endpoints."
PANEL = "Server"
EXAMPLES = (
    "bgcli serve -m rt=runs/rt -m minilm -m smollm2 --preload",
    "echo 'a gorgeous, witty movie' | bgcli classify --server http://127.0.0.1:8765 -m rt",
    'curl -s localhost:8765/v1/classify -d \'{"model": "rt", "text": "dull"}\'',
)


@dataclass
class ServeConfig(OutputOptions):
    models: list[str] = option(
        [],
        "A model to serve as NAME=MODEL (run dir, Hub id or alias), or just an alias; repeatable. "
        "Clients name it in their requests (and in `-m` with --server).",
        short="-m",
        flag="--model",
        metavar="NAME=MODEL",
        panel=PANEL,
    )
    host: str = option("127.0.0.1", "Address to bind (other than loopback needs --api-key).", panel=PANEL)
    port: int = option(8765, "Port to listen on.", panel=PANEL, ge=0, le=65535)
    preload: bool = option(False, "Load every model at start instead of on first use.", panel=PANEL)
    api_key: str | None = option(
        None, "Require `Authorization: Bearer KEY` (default: $BGCLI_API_KEY).", panel=PANEL, metavar="KEY"
    )
    batch_wait_ms: float = option(
        5.0, "How long a request waits for others to share its batch.", panel="Batching", ge=0, le=1000
    )
    max_batch: int = option(64, "Most records in one batch across requests.", panel="Batching", ge=1)
    max_queue: int = option(
        1024,
        "Most records (task endpoints) or sequences (generation) waiting per model; beyond it "
        "requests get 503 with Retry-After.",
        panel="Batching",
        ge=1,
    )
    max_concurrent_sequences: int = option(
        32,
        "Generation: most sequences decoded together; new requests join the running batch at the "
        "next step up to this, then wait in the queue.",
        panel="Batching",
        ge=1,
    )
    kv_cache_tokens: int = option(
        65536,
        "Generation: KV-cache budget in tokens; each running sequence reserves its prompt + max_tokens "
        "(SmolLM2-135M: 46 KB a token in fp32, so 65536 = 3 GB).",
        panel="Batching",
        ge=1,
    )
    max_body_mb: float = option(8.0, "Largest request body.", panel=PANEL, gt=0)
    request_timeout: float = option(300.0, "Seconds a request may wait and run.", panel=PANEL, gt=0)
    shutdown_timeout: float = option(
        30.0,
        "After SIGTERM / Ctrl-C: seconds the requests in flight get to finish before they are cut off.",
        panel=PANEL,
        ge=0,
    )
    batch_size: int = option(32, "Texts per forward pass.", panel="Speed", ge=1)
    device: str = option("auto", "auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps.", panel="Speed")
    precision: str = option(
        "auto", "Weights dtype (auto: fp32 on a CPU, bf16 on a GPU).", choices=PRECISIONS, panel="Speed"
    )
    offline: bool = option(False, "Never touch the network: local dirs and the HF cache only.", panel="Model")
    trust_remote_code: bool = option(False, "Allow running model code from the Hub.", panel="Model")


CONFIG = ServeConfig


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(config: ServeConfig) -> None:
    import os

    from ...serving.batcher import ServeSettings, parse_model_specs

    specs = parse_model_specs(config.models)
    for spec in specs.values():  # a typo is one line now, not a 404 for the first client
        check_model_spec(spec)
    api_key = config.api_key or os.environ.get("BGCLI_API_KEY")
    if not api_key and not is_loopback(config.host):
        raise UsageError(f"--host {config.host} is reachable from other machines: pass --api-key KEY")
    settings = ServeSettings(
        batch_size=config.batch_size,
        device=config.device,
        precision=config.precision,
        offline=config.offline,
        trust_remote_code=config.trust_remote_code,
        batch_wait_ms=config.batch_wait_ms,
        max_batch=config.max_batch,
        max_queue=config.max_queue,
        max_sequences=config.max_concurrent_sequences,
        kv_cache_tokens=config.kv_cache_tokens,
    )
    from ...serving.app import Server, listening_socket, run_app

    sock = listening_socket(config.host, config.port)  # a port in use is one line, before any load
    server = Server(
        specs, settings, api_key, int(config.max_body_mb * 2**20), config.request_timeout, config.quiet
    )
    if config.preload:
        server.preload()
    port = sock.getsockname()[1]
    info(f"serving {', '.join(f'{n}={s}' for n, s in specs.items())} on http://{config.host}:{port}")
    run_app(server, sock, config.shutdown_timeout)
