"""Write docs/reference.md from the commands' typed configs (the single source of truth).

    python scripts/gen_reference.py          # rewrite docs/reference.md
    python scripts/gen_reference.py --check  # exit 1 if the committed file is out of date

tests/test_docs.py runs the check, so a flag added without regenerating fails CI.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertgpt_cli.cli.app import command_modules  # noqa: E402
from bertgpt_cli.cli.commands import data as data_command  # noqa: E402
from bertgpt_cli.cli.commands import recipes as recipes_command  # noqa: E402
from bertgpt_cli.cli.commands import tokenizer as tokenizer_command  # noqa: E402
from bertgpt_cli.options import base_type, config_fields, describe_bounds, flag_name  # noqa: E402
from bertgpt_cli.training.recipes import NON_RECIPE_KEYS  # noqa: E402

REFERENCE = ROOT / "docs" / "reference.md"
REGENERATE = "python scripts/gen_reference.py"
# The single commands, in `bgcli --help` order (the groups get sections of their own below).
COMMAND_MODULES = [m for m in command_modules() if not hasattr(m, "APP")]


def type_name(field: dataclasses.Field, annotation) -> str:
    if field.metadata.get("choices"):
        return " \\| ".join(f"`{c}`" for c in field.metadata["choices"])
    kind = base_type(annotation)
    if typing.get_origin(kind) is list:
        item = field.metadata.get("metavar") or typing.get_args(kind)[0].__name__
        return f"{cell(item)}, repeatable"
    name = field.metadata.get("metavar") or getattr(kind, "__name__", str(kind))
    bounds = field.metadata.get("bounds")
    return cell(f"{name} ({describe_bounds(bounds)})" if bounds else name)


def default_text(field: dataclasses.Field) -> str:
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def flag_text(field: dataclasses.Field, annotation) -> str:
    meta = field.metadata
    if meta["kind"] == "argument":
        return f"`{meta.get('metavar') or field.name.upper()}...` (arguments)"
    name = flag_name(field)
    if base_type(annotation) is bool and field.default is not False:  # True, or None = auto
        name = f"{name}/--no-{name[2:]}"
    return f"`{name}`" + (f", `{meta['short']}`" if meta.get("short") else "")


def command_section(module, name: str | None = None) -> list[str]:
    config_cls = module.CONFIG
    hints = typing.get_type_hints(config_cls)
    fields = config_fields(config_cls)
    lines = [f"## bgcli {name or module.NAME}", "", module.HELP, ""]
    lines += ["| flag | type | default | panel | help |", "|---|---|---|---|---|"]
    for field in sorted(fields, key=lambda f: (f.metadata.get("panel") or "", 0)):
        meta = field.metadata
        lines.append(
            f"| {flag_text(field, hints[field.name])} | {type_name(field, hints[field.name])} "
            f"| {default_text(field)} | {cell(meta.get('panel') or '')} | {cell(meta['help'])} |"
        )
    if getattr(config_cls, "from_command_line", None):
        keys = [f.name for f in fields if f.name not in NON_RECIPE_KEYS]
        lines += [
            "",
            "Recipe keys (the flags above with `-` → `_`): " + ", ".join(f"`{k}`" for k in keys) + ".",
        ]
    lines += ["", "Examples:", "", "```bash", *module.EXAMPLES, "```", ""]
    return lines


def recipes_section() -> list[str]:
    return [
        f"## bgcli {recipes_command.NAME}",
        "",
        recipes_command.HELP,
        "",
        "| subcommand | what it does |",
        "|---|---|",
        "| `bgcli recipes list` | name, task, model, data and measured result of every recipe (`--format`) |",
        "| `bgcli recipes show NAME` | print a recipe: its header says how to run it and what it measured |",
        "| `bgcli recipes cp NAME DEST [--overwrite]` | copy a recipe to customise it; "
        "run it with `--recipe DEST` |",
        "",
        "Examples:",
        "",
        "```bash",
        *recipes_command.EXAMPLES,
        "```",
        "",
    ]


def render() -> str:
    lines = [
        "# Command reference",
        "",
        f"Generated from the commands' typed configs by `{REGENERATE}`; do not edit by hand.",
        "Every flag of `bgcli finetune` and `bgcli pretrain` is also a recipe key (long name, `-` → `_`).",
        "Numbers are checked against the bounds shown before anything is loaded (exit 2).",
        "",
    ]
    lines += [f"- [bgcli {m.NAME}](#bgcli-{m.NAME})" for m in COMMAND_MODULES] + [
        f"- [bgcli {recipes_command.NAME}](#bgcli-{recipes_command.NAME})",
        "- [bgcli data check](#bgcli-data-check)",
        "- [bgcli tokenizer train](#bgcli-tokenizer-train)",
        "",
    ]
    for module in COMMAND_MODULES:
        lines += command_section(module)
    lines += command_section(data_command, "data check")
    lines += command_section(tokenizer_command, "tokenizer train")
    lines += recipes_section()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not REFERENCE.is_file() or REFERENCE.read_text() != text:
            print(f"docs/reference.md is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
