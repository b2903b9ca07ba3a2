"""The squad-smollm2-lora recipe scored on 500 SQuAD dev questions, next to zero-shot smollm2
(bench/sft.py has the details), and rt-minilm-lora next to rt-minilm: `python -m bench
sft_quality`, ~60 min on 2 cores."""

from __future__ import annotations

from .runner import Result
from .sft import quality, rt_lora


def run() -> list[Result]:
    return [*quality(), rt_lora()]
