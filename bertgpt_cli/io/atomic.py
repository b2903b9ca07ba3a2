"""Atomic writes: a reader (or a crash) never sees a half-written file or model dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def umask_mode(directory: bool = False) -> int:
    """The mode a plain open() / mkdir() would give under the user's umask (mkstemp and
    mkdtemp use 0600 / 0700, which would hide a shared model from colleagues)."""
    current = os.umask(0)
    os.umask(current)
    return (0o777 if directory else 0o666) & ~current


def apply_umask(folder: Path) -> None:
    """Give every file and folder under `folder` the mode the user's umask says. Writers that
    create files 0600 (the safetensors writer, mkstemp) would otherwise leave a model that a
    colleague on a shared machine cannot load."""
    os.chmod(folder, umask_mode(directory=True))
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), umask_mode(directory=True))
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, umask_mode())


def temp_prefix(target: Path) -> str:
    """Hidden temp files and dirs beside `target` carry the writer's pid, so a later writer can
    tell the leftovers of a killed one (`remove_dead_writers_temps`) from a live one's."""
    return f".{target.name}.tmp-{os.getpid()}-"


def remove_dead_writers_temps(target: Path) -> None:
    """Temp files / dirs beside `target` whose writer process no longer exists (kill -9)."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid = stale.name.removeprefix(f".{target.name}.tmp-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def save_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a temp dir beside `target`, then rename it into place.

    A crash or kill before the rename leaves only a hidden temp dir (see
    `remove_stale_temp_dirs`), never a partial `target`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temps(target)
    temp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    try:
        write(temp)
        apply_umask(temp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def remove_stale_temp_dirs(target: Path) -> None:
    """Temp dirs left by killed writers of `target`; call while holding the writer's lock."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temps(path)
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, umask_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
