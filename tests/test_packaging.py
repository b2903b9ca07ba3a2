"""A plain `pip install` (a wheel, not this checkout) must carry every module, the shipped
metric modules and the recipes: `bgcli recipes list` and `--recipe rt-minilm` work there too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy, so the checkout gets no build/ or egg-info litter
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("bertgpt_cli", "recipes"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("bertgpt_cli-*.whl")
    return built


def test_wheel_carries_every_module_and_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "bertgpt_cli").rglob("*.py")}
    recipes = {f"bertgpt_cli/builtin_recipes/{p.name}" for p in (REPO / "recipes").glob("*.yaml")}
    assert len(recipes) >= 5
    assert modules - names == set()  # e.g. a new subpackage missing from pyproject's list
    assert recipes - names == set()


def test_installed_wheel_finds_its_recipes(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    # run from elsewhere with the installed copy first on the path, not this checkout
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import bertgpt_cli.training.recipes as r; print(r.PACKAGE_RECIPES); "
        "print(','.join(r.recipe_names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    folder, names = out.stdout.splitlines()
    assert Path(folder) == target / "bertgpt_cli" / "builtin_recipes"
    assert names.split(",") == sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    shown = subprocess.run(
        [sys.executable, "-m", "bertgpt_cli", "recipes", "show", "rt-minilm"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (REPO / "recipes" / "rt-minilm.yaml").read_text()
