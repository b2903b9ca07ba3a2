"""`python -m bench [NAME...]`: run benchmarks, print the table, update bench/results.json."""

from __future__ import annotations

import argparse
import importlib

from .runner import print_table, save

BENCHMARKS = ["startup", "inference"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=BENCHMARKS + [[]], help="benchmarks to run (default: all)"
    )
    names = parser.parse_args().names or BENCHMARKS
    results = []
    for name in names:
        results.extend(importlib.import_module(f"bench.{name}").run())
    print_table(results)
    save(results)


if __name__ == "__main__":
    main()
