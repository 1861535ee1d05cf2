"""Run benchmarks: `python -m bench [name ...] [--quick]`; prints a markdown table."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from bench._harness import REGISTRY, Row, format_table


def _load_all() -> None:
    import bench

    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.startswith("bench_"):
            importlib.import_module(f"bench.{mod.name}")


def main(argv: list[str] | None = None) -> int:
    _load_all()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(sorted(REGISTRY))}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}")
    rows: list[Row] = []
    for name in args.names or sorted(REGISTRY):
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        rows.extend(REGISTRY[name](args.quick))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
