"""`python -m tests.faults`: the faults run (default) or the soak (`--soak`), with a table and JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.faults.harness import Config, run
from tests.faults.report import show, write_json

RESULTS = Path(__file__).parent / "results"
"""Committed, as bench/results: docs/security.md quotes the last run's figures from these files."""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--seconds", type=float, help="How long the workload runs (default 60; soak 600).")
    parser.add_argument("--rate", type=float, default=10.0, help="Operations started per second.")
    parser.add_argument("--organizations", type=int, default=3)
    parser.add_argument("--soak", action="store_true", help="No faults; RSS must stay within --rss-bound.")
    parser.add_argument("--rss-bound", type=float, default=1.5, help="Soak: end RSS / RSS after warm-up.")
    parser.add_argument("--warmup", type=float, default=60.0, help="Soak: seconds before the RSS baseline.")
    parser.add_argument(
        "--json",
        type=Path,
        help="Where to write the numbers (default tests/faults/results/{faults,soak}.json).",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="splitstone-faults-"))
    config = Config(
        root=root,
        seconds=args.seconds or (600.0 if args.soak else 60.0),
        rate=args.rate,
        organizations=args.organizations,
        faults=not args.soak,
        rss_growth_bound=args.rss_bound if args.soak else None,
        warmup_seconds=args.warmup,
    )
    report = asyncio.run(run(config))
    target = args.json or RESULTS / ("soak.json" if args.soak else "faults.json")
    data = write_json(report, target)
    show(data)
    print(f"JSON: {target}; logs: {root}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
