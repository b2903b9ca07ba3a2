"""Model FLOPs utilisation (MFU) of a training run: the useful model FLOPs per second over the
matmul peak measured on the same device, at the run's precision, when the run ends."""

from __future__ import annotations

import time
from typing import Any


def matmul_peak_gflops(
    dtype_name: str = "bfloat16", size: int = 2048, repeats: int = 10, device="cpu"
) -> float:
    """GFLOP/s of square matmuls with the threads this process has (torch's own peak here)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    torch.matmul(a, b)
    synchronize = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def model_flops_per_token(model, projected_share: float) -> float:
    """6 x the weights one real token goes through in training (2 forward + 4 backward FLOPs
    per weight; attention scores not counted). Embedding lookups are free; the output
    vocabulary projection counts for the share of positions it runs on (the masked 15% for
    bgcli's MLM, every token for a causal LM, none for a classifier)."""
    import torch

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    projection = output.weight if output is not None else None
    dense = sum(
        p.numel()
        for p in model.parameters()
        if id(p) not in lookups and (projection is None or p is not projection)
    )
    projected = projection.numel() * projected_share if projection is not None else 0.0
    return 6.0 * (dense + projected)


def training_mfu(model, projected_share: float, tokens_per_second: float | None, args: Any) -> dict[str, Any]:
    """MFU of the whole run: every process's tokens against every process's peak."""
    if not tokens_per_second:
        return {}
    dtype = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"
    peak = matmul_peak_gflops(dtype, device=args.device)
    per_token = model_flops_per_token(model, projected_share)
    return {
        "train_tokens_per_second": round(tokens_per_second, 1),
        "model_flops_per_token": round(per_token),
        "matmul_peak_gflops": round(peak, 1),
        "matmul_peak_dtype": dtype,
        "mfu": round(tokens_per_second * per_token / (peak * 1e9 * max(args.world_size, 1)), 4),
    }
