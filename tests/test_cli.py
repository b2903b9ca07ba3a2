"""The CLI shell: version, fast --help (no heavy imports), one-line usage errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bertgpt_cli import __version__
from bertgpt_cli.cli.app import COMMANDS as COMMAND_TABLE
from bertgpt_cli.cli.app import command_module

from .conftest import BGCLI, ROOT, interrupt_and_wait, start_interruptible

HEAVY = ("torch", "transformers", "datasets", "evaluate", "accelerate")
GROUPS = sorted(c.name for c in COMMAND_TABLE if hasattr(command_module(c), "APP"))
COMMANDS = sorted(c.name for c in COMMAND_TABLE if c.name not in GROUPS)
HELP_ARGS = (
    [["--help"], ["--version"]]
    + [[c, "--help"] for c in COMMANDS]
    + [[g, "--help"] for g in GROUPS]
    + [["recipes", sub, "--help"] for sub in ("list", "show", "cp")]
    + [["data", "check", "--help"], ["tokenizer", "train", "--help"]]
)


def heavy_modules_after(args: list[str]) -> list[str]:
    """Run `bgcli ARGS` in a fresh interpreter and list the heavy modules it imported."""
    code = (
        "import sys\n"
        "from bertgpt_cli.cli.app import main\n"
        f"main({args!r})\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("LOADED=")][-1]
    return [m for m in line.removeprefix("LOADED=").split(",") if m]


def test_every_command_is_registered():
    expected = {
        "env",
        "models",
        "tokenize",
        "fill-mask",
        "generate",
        "classify",
        "ner",
        "qa",
        "finetune",
        "embed",
        "search",
        "eval",
        "serve",
        "export",
        "pretrain",
    }
    assert expected <= set(COMMANDS)
    assert GROUPS == ["data", "recipes", "tokenizer"]


def test_the_command_table_says_what_each_module_says():
    """`bgcli --help` lists commands from a static table (no module imported): it must agree
    with the modules' own NAME and HELP."""
    for command in COMMAND_TABLE:
        module = command_module(command)
        assert (module.NAME, module.HELP) == (command.name, command.help)


def test_top_level_help_imports_no_command_module():
    code = (
        "import sys\n"
        "from bertgpt_cli.cli.app import main\n"
        "main(['--help'])\n"
        "print('LOADED=' + ','.join(m for m in sys.modules if m.startswith('bertgpt_cli.cli.commands.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "Commands" in out.stdout and "classify" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED="


@pytest.mark.parametrize("args", HELP_ARGS)
def test_help_does_not_import_heavy_libraries(args):
    assert heavy_modules_after(args) == []


def test_the_import_check_can_fail():
    """`env` really imports torch: the check above would notice a heavy import."""
    assert "torch" in heavy_modules_after(["env", "--format", "json"])


def test_version(cli):
    result = cli(["--version"])
    assert result.code == 0
    assert result.stdout.strip() == f"bgcli {__version__}"


def test_python_dash_m_works():
    out = subprocess.run(BGCLI + ["--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and __version__ in out.stdout


def test_no_arguments_prints_help_and_exits_2(cli):
    result = cli([])
    assert result.code == 2
    assert "Usage" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["tokenize", "--format", "xml", "hi"], "'xml' is not one of"),
        (["tokenize", "--no-such-flag", "hi"], "No such option: --no-such-flag"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli, args, expected):
    result = cli(args)
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "--help" in lines[0]  # names the way to the fix
    assert result.stdout == ""


def test_runtime_error_is_one_line_exit_1_and_debug_shows_traceback(tmp_path):
    missing = str(tmp_path / "no-such-file.txt")
    plain = subprocess.run(BGCLI + ["tokenize", "-i", missing], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2  # a missing input file is a usage error
    assert plain.stderr.strip().count("\n") == 0 and "not found" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(
        BGCLI + ["tokenize", "--debug", "-i", missing], capture_output=True, text=True, cwd=ROOT
    )
    assert "Traceback" in debug.stderr


def test_broken_pipe_exits_quietly(tiny_bert_dir, tmp_path):
    """`bgcli ... | head -1`: no traceback, and the status a closed pipe gives (128+SIGPIPE)."""
    source = tmp_path / "many.txt"
    source.write_text("".join(f"line number {i}\n" for i in range(20000)))
    proc = subprocess.Popen(
        BGCLI + ["tokenize", "-m", str(tiny_bert_dir), "--batch-size", "8", "-i", str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    proc.wait(timeout=120)
    stderr = proc.stderr.read().decode()
    assert json.loads(first)["num_tokens"] > 0
    assert proc.returncode == 141
    assert "Traceback" not in stderr and "Error" not in stderr


def test_inference_commands_skip_teardown_but_flush_and_clean_up(tiny_classifier_dir, tmp_path):
    """classify ends with os._exit (no interpreter teardown): every record is still written,
    atexit handlers (temp-folder cleanup) still run, and the exit status is kept."""
    source = tmp_path / "reviews.txt"
    texts = [f"review number {i} was fine" for i in range(3000)]
    source.write_text("\n".join(texts[:10] + [""] + texts[10:]) + "\n")  # line 11 is empty: exit 1
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "from bertgpt_cli.cli.app import entry\n"
        "entry()\n"
    )
    args = ["classify", "-m", str(tiny_classifier_dir), "-i", str(source), "-f", "jsonl"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "line 11" in done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == len(texts) + 1  # the bad line's error record too
    assert sum("label" in r for r in records) == len(texts)
    assert marker.read_text() == "yes"


def test_ctrl_c_exits_130_without_traceback(tiny_bert_dir):
    proc = start_interruptible(
        BGCLI + ["tokenize", "-m", str(tiny_bert_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write(b"first line\n")
    proc.stdin.flush()
    time.sleep(4)  # the command now waits for more stdin
    stderr = interrupt_and_wait(proc, timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr.decode()


def test_no_color_is_respected(tmp_path):
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    out = subprocess.run(
        BGCLI + ["tokenize", "-i", str(tmp_path / "x")], capture_output=True, env=env, cwd=ROOT
    )
    assert b"\x1b[" not in out.stderr
    env.pop("NO_COLOR")
    colored = subprocess.run(
        BGCLI + ["tokenize", "-i", str(tmp_path / "x")], capture_output=True, env=env, cwd=ROOT
    )
    assert b"\x1b[" in colored.stderr  # the check can fail: colour is on without NO_COLOR
