"""`bgcli env`: versions, devices, caches, offline state and built-in assets, for bug reports."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import first_line
from ...io.assets import (
    BUILTIN_MODELS,
    CONLL2003,
    MOVIE_REVIEWS,
    SHAREGPT,
    SQUAD,
    cache_dirs,
    hf_home,
    package_version,
    smollm2_cache_dir,
)
from ...io.console import make_console
from ...io.hub import hub_endpoint, offline_state
from ...io.output import flatten, resolve_format, to_json
from ...models.devices import cpu_bf16_units, cpu_model
from ...options import OutputOptions

NAME = "env"
HELP = "Show versions, devices, caches and offline state (paste it into bug reports)."
EXAMPLES = (
    "bgcli env",
    "bgcli env --format json | jq .versions",
)

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "evaluate",
    "accelerate",
    "huggingface_hub",
    "safetensors",
    "typer",
    "rich",
    "onnxruntime",  # optional (`bgcli export`, ONNX model dirs): None when not installed
    "fastapi",
    "uvicorn",
)


@dataclass
class EnvConfig(OutputOptions):
    pass


CONFIG = EnvConfig


def run(config: EnvConfig) -> None:
    report = collect_environment()
    fmt = resolve_format(config.format)
    if fmt == "json":
        print(json.dumps(report, indent=2, default=str))
    elif fmt == "jsonl":
        print(to_json(report))
    elif fmt in ("tsv", "text"):
        for key, value in flatten(report).items():
            print(f"{key}\t{value}")
    else:
        _print_tables(report)


def collect_environment() -> dict[str, Any]:
    return {
        "versions": _versions(),
        "devices": _devices(),
        "accelerate_config": _accelerate_config(),
        "hub": {"state": offline_state(), "endpoint": hub_endpoint()},
        "caches": cache_dirs(),
        "assets": _assets(),
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"bgcli": __version__, "python": platform.python_version()}
    versions.update({name: package_version(name) for name in LIBRARIES})
    return versions


def _devices() -> dict[str, Any]:
    import torch

    bf16_units = cpu_bf16_units()
    devices: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": bool(bf16_units),
        "cpu_bf16_units": ", ".join(bf16_units) or "none (bf16 is emulated: slower than fp32)",
        "cuda": [],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices["cuda"].append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "bf16": torch.cuda.is_bf16_supported(),
                }
            )
    return devices


def _accelerate_config() -> dict[str, Any] | None:
    path = Path(os.environ.get("ACCELERATE_CONFIG_FILE") or hf_home() / "accelerate" / "default_config.yaml")
    if not path.is_file():
        return None
    import yaml

    try:
        return {"path": str(path), **(yaml.safe_load(path.read_text()) or {})}
    except yaml.YAMLError as exc:
        return {"path": str(path), "error": first_line(exc)}


def _assets() -> dict[str, Any]:
    assets: dict[str, Any] = {
        asset.name: {
            "package": asset.distribution,
            "version": package_version(asset.distribution),
            "installed": asset.installed(),
        }
        for asset in (*BUILTIN_MODELS.values(), MOVIE_REVIEWS, CONLL2003, SQUAD, SHAREGPT)
    }
    assets["smollm2"]["converted"] = (smollm2_cache_dir() / "config.json").is_file()
    return assets


def _print_tables(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console(stderr=False)
    for section, values in report.items():
        table = Table(title=section, title_justify="left", show_header=False, min_width=60)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        if not isinstance(values, dict):
            values = {"": "none" if values is None else values}
        for key, value in flatten(values).items():
            table.add_row(key, str(value))
        console.print(table)
    sys.stdout.flush()
