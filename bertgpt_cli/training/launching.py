"""Running one command as N processes: relaunch the same command line under torchrun.

Works on CPU (gloo) and GPUs (NCCL); multi-node, FSDP and DeepSpeed go through
`accelerate launch -m bertgpt_cli ...` instead, which sets the same environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ..io.console import info


def is_distributed_worker() -> bool:
    """Set by torchrun / accelerate launch in every worker process."""
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def without_option(argv: list[str], flag: str) -> list[str]:
    """argv minus `flag VALUE` / `flag=VALUE` (the workers must not relaunch again)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def relaunch(num_processes: int, extra_args: list[str], env: dict[str, str] | None = None) -> int:
    """Run this very command line in `num_processes` workers; returns their exit status."""
    argv = without_option(sys.argv[1:], "--num-processes") + extra_args
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(num_processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "bertgpt_cli",
        *argv,
    ]
    info(f"launching {num_processes} processes (torchrun)")
    return subprocess.run(
        command,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})},
    ).returncode
