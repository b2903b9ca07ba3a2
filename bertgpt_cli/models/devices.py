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


# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREE_BYTES = 1 << 30


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed memory in the process for reuse instead of handing it back to the OS.

    glibc serves every allocation over 32 MB with a fresh mmap and unmaps it on free, so a
    CPU training step that allocates the same big buffers every time (logits, embedding
    gradients) page-faults them all back in, step after step. Serving them from the heap
    and keeping up to KEEP_FREE_BYTES of freed memory made minilm MLM training 16% faster
    here (peak RSS +13%) and smollm2 CLM 6% (README, Training speed); batched generate got
    slower, so inference does not call it. Returns False off glibc (no-op)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
    except (OSError, AttributeError):
        return False
