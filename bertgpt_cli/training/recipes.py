"""Recipes: YAML files whose keys are a command config's field names (long flags with
`-` -> `_`). Flags typed on the command line override them; unknown keys are rejected."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError, first_line
from ..options import check_bounds, coerce_recipe_value, config_fields


def _package_recipes() -> Path:
    """The recipes that ship with bgcli: a wheel carries the repository's top-level recipes/
    as bertgpt_cli/builtin_recipes/ (see pyproject.toml); a source checkout or editable
    install reads recipes/ beside the package."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "builtin_recipes"
    return installed if installed.is_dir() else package.parent / "recipes"


PACKAGE_RECIPES = _package_recipes()  # BGCLI_RECIPES names one more folder, searched first


def recipe_dirs() -> list[Path]:
    extra = os.environ.get("BGCLI_RECIPES")
    return ([Path(extra)] if extra else []) + [PACKAGE_RECIPES]


def recipe_names() -> list[str]:
    names: dict[str, None] = {}
    for folder in recipe_dirs():
        names.update(dict.fromkeys(sorted(p.stem for p in folder.glob("*.yaml"))))
    return list(names)


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for folder in recipe_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    close = difflib.get_close_matches(name_or_path, recipe_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(recipe_names())}"
    raise UsageError(
        f"recipe '{name_or_path}' not found (a name from `bgcli recipes list` or a .yaml path){hint}"
    )


def read_recipe(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"recipe {path} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"recipe {path} must be a mapping of keys to values")
    return data


def recipe_command(data: dict[str, Any]) -> str:
    """The command a recipe is for: `bgcli pretrain` recipes name an architecture."""
    return "pretrain" if "arch" in data else "finetune"


def validate_keys(data: dict[str, Any], config_cls: type, source: str) -> None:
    """Reject misspelt keys, naming the closest valid one, and another command's recipe."""
    valid = [f.name for f in config_fields(config_cls) if f.name not in NON_RECIPE_KEYS]
    command = recipe_command(data)
    if (
        command == "pretrain"
        and "arch" not in valid
        or command == "finetune"
        and "task" not in valid
        and ("task" in data or "model" in data)
    ):
        raise UsageError(f"{source} is a `bgcli {command}` recipe; run: bgcli {command} --recipe {source}")
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            raise UsageError(f"unknown key '{key}' in {source}; {hint}")


# Keys that describe how to run, not what to run: never read from or written to a recipe.
NON_RECIPE_KEYS = {"recipe", "quiet", "debug", "format", "overwrite", "resume", "texts"}


class RecipeConfig:
    """A command config that takes `--recipe FILE`: the recipe's values under the flags given."""

    @classmethod
    def from_command_line(cls, values: dict[str, Any], explicit: set[str]):
        return merge(cls, values, explicit, values.get("recipe"))


def merge(config_cls: type, values: dict[str, Any], explicit: set[str], recipe: str | None):
    """defaults < recipe < flags typed on the command line."""
    merged = dict(values)
    if recipe:
        path = find_recipe(recipe)
        data = read_recipe(path)
        validate_keys(data, config_cls, str(path))
        for key, value in checked_values(data, config_cls, path).items():
            if key not in explicit:
                merged[key] = value
    return config_cls(**merged)


def checked_values(data: dict[str, Any], config_cls: type, path: Path) -> dict[str, Any]:
    """Recipe values as their fields' types and within their bounds, each failure one line
    naming the key and the file (`epochs: three` fails here, not deep in the Trainer)."""
    import typing

    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in config_fields(config_cls)}
    checked = {}
    for key, value in data.items():
        where = f"'{key}' in recipe {path}"
        checked[key] = coerce_recipe_value(fields[key], hints[key], value, where)
        check_bounds(fields[key], checked[key], where)
    return checked


def recipe_values(config: Any) -> dict[str, Any]:
    """A config as recipe keys (what `bgcli_config.yaml` holds)."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if "kind" in f.metadata and f.name not in NON_RECIPE_KEYS
    }
