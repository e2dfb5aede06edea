"""The run's numbers as a table on the terminal and as JSON (the figures docs/security.md quotes)."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.faults.harness import Report


def as_dict(report: Report) -> dict[str, Any]:
    client = report.client
    tally = client.tally if client is not None else None
    run_seconds = report.phases.get("run") or 1.0
    config = asdict(report.config)
    config["root"] = str(config["root"])
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "config": config,
        "ok": report.ok,
        "phases_seconds": report.phases,
        "operations_started": report.started_operations,
        "requests": tally.requests if tally else 0,
        "throughput_per_second": round((tally.requests if tally else 0) / run_seconds, 1),
        "outcomes": dict(sorted(tally.outcomes.items())) if tally else {},
        "by_operation": {k: dict(v) for k, v in sorted(tally.by_operation.items())} if tally else {},
        "retries": tally.retries if tally else 0,
        "slowest_request_seconds": round(tally.slowest_seconds, 2) if tally else 0,
        "faults": [f.as_dict() for f in report.faults],
        "effects": asdict(report.effects),
        "rss_kib": [{"at_seconds": at, **sample} for at, sample in report.rss],
        "rss_after_warmup_kib": report.rss_baseline,
        "jetstream_bytes_at_end": report.jetstream_bytes,
        "checks": [c.as_dict() for c in report.checks],
    }


def write_json(report: Report, path: Path) -> dict[str, Any]:
    data = as_dict(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def show(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=140)
    summary = Table(title="Requests", title_justify="left")
    for column in ("requests", "per s", "2xx", "4xx", "5xx", "timeouts", "connection errors", "retries"):
        summary.add_column(column, justify="right")
    outcomes: dict[str, int] = data["outcomes"]
    fours = {k: v for k, v in outcomes.items() if k.isdigit() and k.startswith("4")}
    fives = {k.split(":")[1]: v for k, v in outcomes.items() if k.startswith("5xx")}
    summary.add_row(
        str(data["requests"]),
        str(data["throughput_per_second"]),
        str(outcomes.get("2xx", 0)),
        _by_status(fours),
        _by_status(fives),
        str(outcomes.get("timeout", 0)),
        str(outcomes.get("connection", 0)),
        str(data["retries"]),
    )
    console.print(summary)
    if data["faults"]:
        faults = Table(title="Faults", title_justify="left")
        for column in ("fault", "at s", "down s", "writes back after s", "events back after s", "detail"):
            faults.add_column(column)
        for f in data["faults"]:
            faults.add_row(
                f["name"],
                str(f["at_seconds"]),
                str(f["down_seconds"]),
                str(f["write_recovery_seconds"]),
                str(f["event_recovery_seconds"]),
                f["detail"],
            )
        console.print(faults)
    effects = data["effects"]
    console.print(
        f"events handled: {effects['verification_emails']} verification emails "
        f"({effects['email_redeliveries']} redelivered copies), {effects['webhook_deliveries']} webhooks "
        f"({effects['webhook_redeliveries']} redelivered copies, counted once)"
    )
    if data["rss_kib"]:
        first, last = data["rss_kib"][0], data["rss_kib"][-1]
        names = [k for k in first if k != "at_seconds"]
        console.print(
            "RSS MiB start -> end: "
            + ", ".join(f"{n} {first[n] / 1024:.0f} -> {last.get(n, 0) / 1024:.0f}" for n in names)
        )
    checks = Table(title="Invariants", title_justify="left")
    for column in ("", "check", "detail"):
        checks.add_column(column)
    for c in data["checks"]:
        checks.add_row("ok" if c["ok"] else "FAIL", c["name"], c["detail"])
    console.print(checks)
    console.print(f"phases (s): {data['phases_seconds']}")


def _by_status(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not counts:
        return "0"
    return f"{total} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
