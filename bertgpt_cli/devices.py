"""What the CPU can do (read from /proc/cpuinfo; no torch import)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

BF16_UNITS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def _cpuinfo_field(prefix: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_bf16_units() -> list[str]:
    """Native bf16 instructions; without them bf16 is emulated and slower than fp32."""
    return sorted(set(_cpuinfo_field("flags").split()) & BF16_UNITS)
