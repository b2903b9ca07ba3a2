"""`bgcli serve`'s engine, without HTTP: warm models and request batching.

All torch work of the server (every model's loads, batches and generation steps) runs in
one worker thread, one job at a time: torch uses every core for one batch, two at once would
only contend, and a second thread doing torch work gets a second OpenMP team whose idle
threads slowed the busy one by ~27% here (a bare matmul; SmolLM2 chat streams 67.7 -> 55.9
tokens/s once a classifier had run in a thread of its own). Requests that arrive
while a batch runs wait in a Batcher and go together into the next one: concurrent clients
share forward passes, and each gets exactly the records a lone request would get, because the
command's own processor (the same code as the CLI) handles the batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError, first_line
from ..inference import engine
from ..io.records import InputRecord, RecordError, error_output
from ..options import coerce_recipe_value, config_fields, validate_config
from .client import SERVER_SIDE_FIELDS


class Overloaded(Exception):
    """The queue is full: the client should come back later (HTTP 503)."""


class TooLarge(Exception):
    """One request holds more work than the queue ever takes: it must be split (HTTP 413)."""


class UnknownModel(UsageError):
    """HTTP 404."""


@dataclass
class ServeSettings:
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    offline: bool = False
    trust_remote_code: bool = False
    batch_wait_ms: float = 5.0
    max_batch: int = 64
    max_queue: int = 1024
    max_sequences: int = 32
    kv_cache_tokens: int = 65536


def parse_model_specs(values: list[str]) -> dict[str, str]:
    """["rt=runs/rt", "minilm"] -> {"rt": "runs/rt", "minilm": "minilm"}."""
    specs: dict[str, str] = {}
    for value in values:
        name, sep, spec = value.partition("=")
        name, spec = (name.strip(), spec.strip()) if sep else (value.strip(), value.strip())
        if not name or not spec:
            raise UsageError(f"--model '{value}' must be NAME=MODEL (a run dir, Hub id or alias) or an alias")
        if name in specs:
            raise UsageError(f"model name '{name}' is given twice; names must be unique")
        specs[name] = spec
    if not specs:
        raise UsageError("pass at least one model: bgcli serve -m NAME=MODEL (repeatable)")
    return specs


class ServedModel:
    """One model name: the (shared) torch worker thread, and what each command loaded from it."""

    def __init__(self, name: str, spec: str, settings: ServeSettings, worker: ThreadPoolExecutor) -> None:
        self.name, self.spec, self.settings = name, spec, settings
        self.worker = worker
        self.loaded: dict[str, Any] = {}
        self.lock = threading.Lock()

    def base_values(self) -> dict[str, Any]:
        s = self.settings
        return {
            "model": self.spec,
            "batch_size": s.batch_size,
            "device": s.device,
            "precision": s.precision,
            "offline": s.offline,
            "trust_remote_code": s.trust_remote_code,
            "quiet": True,
        }

    def load(self, key: str, make) -> Any:
        """`make()` once per key (e.g. "classify"), in the worker thread."""
        with self.lock:
            if key not in self.loaded:
                self.loaded[key] = make()
            return self.loaded[key]


def command_config(command: str, served: ServedModel, options: dict[str, Any]):
    """The command's typed config: the server's settings plus the request's options, each
    checked as a flag is (type, choices, bounds); unknown options are one line naming them."""
    module = engine(command)
    fields = {f.name: f for f in config_fields(module.CONFIG) if f.name not in SERVER_SIDE_FIELDS}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join(unknown)} for {command}; known: {', '.join(sorted(fields))}"
        )
    import typing

    hints = typing.get_type_hints(module.CONFIG)
    values = {
        name: coerce_recipe_value(fields[name], hints[name], value, f"'{name}'")
        for name, value in options.items()
    }
    config = module.CONFIG(**served.base_values(), **values)
    validate_config(config)
    return config


@dataclass
class _Waiting:
    records: list[InputRecord]
    future: asyncio.Future


@dataclass
class Batcher:
    """Requests with the same model and options, gathered for `wait_s` (or until `max_batch`
    records) and run as one batch in the model's worker thread."""

    run_batch: Any  # records -> one result per record (the command's processor)
    worker: ThreadPoolExecutor
    wait_s: float
    max_batch: int
    max_queue: int
    on_batch: Any = None  # metrics: called with each batch's size
    on_queue: Any = None  # metrics: called with the records waiting
    queued: int = 0
    waiting: list[_Waiting] = field(default_factory=list)
    flusher: asyncio.Task | None = None
    last_batch_size: int = 0

    async def submit(self, records: list[InputRecord]) -> tuple[list, int]:
        """Results for `records`, and the size of the batch they ran in."""
        cost = len(records)
        if cost > self.max_queue:  # would wait forever: say so instead of "busy, retry"
            raise TooLarge(
                f"this request holds {cost} records; the server queues at most "
                f"{self.max_queue} per model (--max-queue): send fewer at a time"
            )
        if self.queued + cost > self.max_queue:
            raise Overloaded(f"{self.queued} records are queued for this model")
        loop = asyncio.get_running_loop()
        item = _Waiting(records, loop.create_future())
        self.waiting.append(item)
        self._queued(cost)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush_loop())
        try:
            return await item.future
        finally:
            self._queued(-cost)

    def _queued(self, change: int) -> None:
        self.queued += change
        if self.on_queue is not None:
            self.on_queue(self.queued)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            await asyncio.sleep(self.wait_s)
            taken, size = [], 0
            while self.waiting and (not taken or size + len(self.waiting[0].records) <= self.max_batch):
                item = self.waiting.pop(0)
                taken.append(item)
                size += len(item.records)
            records = [r for item in taken for r in item.records]
            if self.on_batch is not None:
                self.on_batch(size)
            try:
                results = await loop.run_in_executor(self.worker, self.run_batch, records)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - a failed batch (even a Rust panic, which
                # is a BaseException) answers its requests with the error; the loop lives on
                exc = exc if isinstance(exc, Exception) else RuntimeError(first_line(exc))
                for item in taken:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            position = 0
            for item in taken:
                part = results[position : position + len(item.records)]
                position += len(item.records)
                if not item.future.done():
                    item.future.set_result((part, size))


def input_records(items: list, text_field: str) -> list[InputRecord]:
    """Request texts (strings, or objects with the text and other fields) as CLI records."""
    records = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            records.append(
                InputRecord(number, item) if item.strip() else InputRecord(number, None, error="empty text")
            )
        elif isinstance(item, dict):
            fields = {k: v for k, v in item.items() if k != text_field}
            text = item.get(text_field)
            if not isinstance(text, str) or not text.strip():
                records.append(InputRecord(number, None, fields, error=f"no text in '{text_field}'"))
            else:
                records.append(InputRecord(number, text, fields))
        else:
            raise UsageError(f"text item {number} must be a string or an object, not {type(item).__name__}")
    return records


def output_records(records: list[InputRecord], results: list) -> tuple[list[dict], list[int]]:
    """Flat records exactly as the CLI's JSONL writes them, and how many each input gave."""
    data, per_input = [], []
    for record, outcome in zip(records, results, strict=True):
        if isinstance(outcome, RecordError):
            record.error = str(outcome)
        if record.error is not None:
            data.append(error_output(record))
            per_input.append(1)
        else:
            data.extend({**record.fields, **out} for out in outcome)
            per_input.append(len(outcome))
    return data, per_input


def options_key(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def as_dict(config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
