"""`bgcli recipes list|show|cp`: the ready-made run configs in recipes/."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import typer

from ...errors import UsageError
from ...io.output import RecordWriter
from ...options import OutputOptions
from ...training.recipes import find_recipe, read_recipe, recipe_command, recipe_dirs, recipe_names
from ..typer_options import PlainHelpCommand, command_group, typer_command

NAME = "recipes"
HELP = "List, show and copy the ready-made fine-tuning recipes."
EXAMPLES = (
    "bgcli recipes list",
    "bgcli recipes show rt-minilm",
    "bgcli recipes cp rt-minilm my.yaml && bgcli finetune --recipe my.yaml",
)


def header_field(path: Path, field: str) -> str:
    """A `# Field: value` entry of the recipe's header comment, with its indented
    continuation lines (`#           more...`)."""
    parts: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if parts and line.startswith("#  "):
            parts.append(text)
        elif parts:
            break
        elif text.lower().startswith(field.lower() + ":"):
            parts.append(text.split(":", 1)[1].strip())
    return " ".join(parts)


def recipe_record(name: str) -> dict:
    path = find_recipe(name)
    data = read_recipe(path)
    pretrain = recipe_command(data) == "pretrain"
    return {
        "name": name,
        "task": f"pretrain {data.get('objective', '')}".strip()
        if pretrain
        else data.get("task", "classification"),
        "model": f"{data.get('arch')} {data.get('size', '')} from scratch"
        if pretrain
        else data.get("model", ""),
        "data": data.get("train_data", ""),
        "measured": header_field(path, "Measured"),
        "path": str(path),
    }


@dataclass
class ListConfig(OutputOptions):
    pass


def list_recipes(config: ListConfig) -> None:
    writer = RecordWriter(
        config.format,
        columns=("name", "task", "model", "data", "measured"),
        text_key="name",
        title=f"recipes ({', '.join(str(d) for d in recipe_dirs())})",
    )
    for name in recipe_names():
        writer.write(recipe_record(name))
    writer.close()


def show_recipe(name: str) -> None:
    print(find_recipe(name).read_text(), end="")


def copy_recipe(name: str, dest: str, overwrite: bool) -> None:
    source = find_recipe(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite or choose another destination")
    shutil.copyfile(source, target)
    print(target)


APP = command_group(HELP, EXAMPLES)
APP.command(
    "list", help="Recipes with task, model, data and the result measured with them.", cls=PlainHelpCommand
)(typer_command(ListConfig, list_recipes))


@APP.command("show", help="Print a recipe (its header says how to run it).", cls=PlainHelpCommand)
def _show(name: str = typer.Argument(..., help="Recipe name or path.", metavar="NAME")) -> None:
    show_recipe(name)


@APP.command("cp", help="Copy a recipe to customise it; run it with --recipe PATH.", cls=PlainHelpCommand)
def _cp(
    name: str = typer.Argument(..., help="Recipe name.", metavar="NAME"),
    dest: str = typer.Argument(..., help="Destination file or directory.", metavar="DEST"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    copy_recipe(name, dest, overwrite)
