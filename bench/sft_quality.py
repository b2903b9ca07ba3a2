"""The squad-smollm2-lora recipe scored on 500 SQuAD dev questions, next to zero-shot smollm2
(bench/sft.py has the details): `python -m bench sft_quality`, ~45 min on 2 cores."""

from __future__ import annotations

from .runner import Result
from .sft import quality


def run() -> list[Result]:
    return quality()
