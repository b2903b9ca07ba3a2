"""Side-by-side timing: alternate ours and the baseline, take medians, report the ratio."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_offline(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """A bench side in a fresh process, offline; its output captured. A failure raises with the
    tail of its stderr (what a bench needs to tell why a side failed)."""
    done = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return done


def bgcli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """`bgcli ARGS` through run_offline."""
    return run_offline([sys.executable, "-m", "bertgpt_cli", *args], f"bgcli {' '.join(args[:3])}", **kwargs)


@dataclass
class Result:
    name: str
    ours: float
    baseline: float
    unit: str
    ratio: float  # > 1 means ours is better
    identical: bool | None
    baseline_name: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    output = fn()
    return time.perf_counter() - start, output


def alternate_runs(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[list[float], Any]]:
    """Run every contender once per round, round after round, so drift hits all of them.

    Returns, per contender, its wall times and its last output."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds, outputs[name] = time_once(fn)
            times[name].append(seconds)
    return {name: (times[name], outputs[name]) for name in runs}


def compare_times(
    name: str,
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    baseline_name: str,
    repeats: int = 5,
    warmup: int = 1,
) -> Result:
    """Wall seconds per run (lower is better); runs alternate so drift hits both sides."""
    for _ in range(warmup):
        ours()
        baseline()
    measured = alternate_runs({"ours": ours, "baseline": baseline}, repeats)
    (ours_times, ours_out), (base_times, base_out) = measured["ours"], measured["baseline"]
    ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
    identical = None if ours_out is None and base_out is None else ours_out == base_out
    return Result(
        name=name,
        ours=round(ours_median, 4),
        baseline=round(base_median, 4),
        unit="s",
        ratio=round(base_median / ours_median, 2),
        identical=identical,
        baseline_name=baseline_name,
        details={
            "repeats": repeats,
            "ours_all": [round(t, 4) for t in ours_times],
            "baseline_all": [round(t, 4) for t in base_times],
        },
    )


def print_table(results: list[Result]) -> None:
    header = (
        f"{'benchmark':<38} {'ours':>10} {'baseline':>10} {'unit':>6} {'ratio':>7}  identical"
        f"  {'agree':>6}  {'RSS MB':>11}  baseline"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        same = "-" if r.identical is None else ("yes" if r.identical else "NO")
        agree = next((v for k, v in r.details.items() if "agreement" in k or "fraction" in k), "")
        rss = r.details.get("ours_peak_rss_mb")
        rss_text = f"{rss}/{r.details['baseline_peak_rss_mb']}" if rss else ""
        print(
            f"{r.name:<38} {r.ours:>10} {r.baseline:>10} {r.unit:>6} {r.ratio:>6}x  {same:<9}"
            f"  {agree!s:>6}  {rss_text:>11}  {r.baseline_name}"
        )


def machine() -> dict[str, Any]:
    """Which CPU a ratio comes from: ratios move between CPUs (bf16/AMX units, cache sizes)."""
    import torch

    from bertgpt_cli.models.devices import cpu_bf16_units, cpu_model

    return {
        "cpu": cpu_model(),
        "bf16_units": cpu_bf16_units(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
    }


def save(results: list[Result]) -> None:
    """Merge by name into bench/results.json, so running one benchmark keeps the others;
    each new row records the machine it was measured on."""
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    merged = {r["name"]: r for r in existing}
    here = machine()
    for r in results:
        r.details.setdefault("machine", here)
    merged.update({r.name: asdict(r) for r in results})
    RESULTS.write_text(json.dumps(list(merged.values()), indent=2) + "\n")
