"""Faster few-row matmuls for decoding on a CPU, bit-identical to `F.linear` or not used.

Each decoding step multiplies a handful of rows (one per sequence in the batch) by every
weight matrix of the model. For such skinny inputs MKL computes `W @ x.T` 20-25% faster than
`F.linear(x, W)` (= `x @ W.T`): then W is the streamed operand, and only the few input
rows are packed (measured on SmolLM2-135M at 16 rows: +20-40% decode tokens/s in-process;
see README, Performance). Whether both forms give the same bits depends on the row count
and the BLAS build (here: the same for 1 and 12-32 rows on every shape tried, never for
2-11), so each distinct (rows, shape, dtype, bias) is checked once on the real input, and
the fast form is used only where the two agree bit for bit: logits and text never change.

Being exact is not enough: on another CPU the fast form may lose (round 2 measured 0.92x of
a hand-written `model.generate` on a Sapphire Rapids with AMX). So each exact shape is also
timed once against `F.linear` on the real input, and used only if it is faster. The verdicts
are kept per CPU model, thread count and torch version in `$BGCLI_HOME/skinny_linear.json`,
so the check runs once per machine, not once per process.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

# The gain fades with more rows (decode A/B: +9% at 32 rows, +6% at 48); prefill stays stock.
MAX_ROWS = 32
TIMING_ROUNDS = 5  # alternating runs of each form; the faster minimum wins
MIN_GAIN = 0.03  # the fast form must beat F.linear by this much: timing noise is no gain

# "rows,out,in,dtype,bias,contiguous,threads" -> "fast" (exact and faster), "slower" or "differs"
_verdicts: dict[str, str] | None = None


@functools.cache
def skinny_linear_class():
    """Built on first use so that importing this module does not import torch."""
    import torch
    import torch.nn.functional as F

    class SkinnyLinear(torch.nn.Linear):
        """An nn.Linear (same parameters, same state dict) whose few-row products use `W @ x.T`."""

        def forward(self, x):
            rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
            if not 0 < rows <= MAX_ROWS or x.device.type != "cpu":
                return F.linear(x, self.weight, self.bias)
            # everything the BLAS kernel choice could depend on (threads: how the work is split)
            layout = (str(x.dtype), self.bias is not None, x.is_contiguous(), torch.get_num_threads())
            key = ",".join(str(v) for v in (rows, *self.weight.shape, *layout))
            verdicts = known_verdicts()
            verdict = verdicts.get(key)
            if verdict is None:  # first time for this shape on this machine
                verdict = self._judge(x, rows)
                record_verdict(key, verdict)
            if verdict != "fast":
                return F.linear(x, self.weight, self.bias)
            return self._weight_times_input(x, rows)

        def _judge(self, x, rows: int) -> str:
            fast = self._weight_times_input(x, rows)
            if not torch.equal(fast, F.linear(x, self.weight, self.bias)):
                return "differs"
            return "fast" if measured_faster(self, x, rows) else "slower"

        def _weight_times_input(self, x, rows: int):
            columns = x.reshape(rows, x.shape[-1]).t()
            if self.bias is None:
                product = self.weight @ columns
            else:  # bias added inside the GEMM, as F.linear does (a separate add rounds differently)
                product = torch.addmm(self.bias.unsqueeze(1), self.weight, columns)
            # contiguous: the next ops then see the same memory layout as after F.linear
            return product.t().contiguous().reshape(*x.shape[:-1], self.weight.shape[0])

    return SkinnyLinear


def measured_faster(layer, x, rows: int) -> bool:
    """Whether `W @ x.T` beats `F.linear` on this input, timed alternately."""
    import torch.nn.functional as F

    fast_times, stock_times = [], []
    for _ in range(TIMING_ROUNDS):
        start = time.perf_counter()
        layer._weight_times_input(x, rows)
        fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        F.linear(x, layer.weight, layer.bias)
        stock_times.append(time.perf_counter() - start)
    return min(fast_times) < (1 - MIN_GAIN) * min(stock_times)


def machine_key() -> str:
    import torch

    from .devices import cpu_model

    return f"{cpu_model()} | torch {torch.__version__}"


def cache_path():
    from ..io.assets import bgcli_home

    return bgcli_home() / "skinny_linear.json"


def known_verdicts() -> dict[str, str]:
    """This machine's verdicts, read once per process from the cache file."""
    global _verdicts
    if _verdicts is None:
        try:
            saved = json.loads(cache_path().read_text())
        except (OSError, ValueError):
            saved = {}
        _verdicts = dict(saved.get(machine_key(), {})) if isinstance(saved, dict) else {}
    return _verdicts


def record_verdict(key: str, verdict: str) -> None:
    """Keep a verdict for this process and for later ones (a failed write only loses the cache)."""
    from ..io.atomic import write_text_atomically

    known_verdicts()[key] = verdict
    path = cache_path()
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved = saved if isinstance(saved, dict) else {}
        saved[machine_key()] = dict(_verdicts or {})
        write_text_atomically(path, json.dumps(saved, indent=1, sort_keys=True) + "\n")
    except (OSError, ValueError):
        pass


def use_skinny_linears(model: Any) -> int:
    """Switch the plain `nn.Linear` layers of a CPU model to `SkinnyLinear` in place.

    Only exact `nn.Linear` instances change (not subclasses such as quantized layers): the
    parameters, state dict and results stay the same. Returns how many layers changed."""
    import torch

    if next(model.parameters()).device.type != "cpu":
        return 0  # GPU BLAS handles skinny products well; nothing to gain there
    skinny = skinny_linear_class()
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = skinny
            changed += 1
    return changed
