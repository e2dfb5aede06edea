"""The three faults, each with the time the service took to recover from it.

- `kill_worker`: SIGKILL to the worker process (relays, event handlers, jobs); `splitstone up`'s
  supervisor starts a new one. Recovered: an event committed after the kill reached the webhook receiver.
- `restart_nats`: SIGKILL to nats-server, `down` seconds without it, then started again on the same port
  and store. Recovered: an event committed after the restart reached the receiver.
- `postgres_outage`: PostgreSQL refuses connections and every open one is cut, for `down` seconds.
  Recovered: a write (a task) answered 2xx, and then its event reached the receiver.

Recovery is measured from the end of the fault (the restart, the reopening, the kill) and is bounded by
`within`: a service that does not recover on its own fails the run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import asdict, dataclass

from tests.faults.deployment import Deployment
from tests.faults.invariants import delivered_task_ids
from tests.faults.workload import Workload


@dataclass
class FaultResult:
    name: str
    at_seconds: float
    down_seconds: float
    write_recovery_seconds: float | None
    event_recovery_seconds: float | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Faults:
    def __init__(self, deployment: Deployment, workload: Workload, *, within: float = 45.0) -> None:
        self.deployment = deployment
        self.workload = workload
        self.within = within
        self.results: list[FaultResult] = []
        self.began = time.monotonic()

    async def kill_worker(self) -> FaultResult:
        at = self._now()
        pid = self.deployment.children()["worker"]
        os.kill(pid, signal.SIGKILL)
        ended = time.monotonic()
        new_pid, waited = await self.deployment.wait_for_worker(pid, self.within)
        write, event = await self._recovery(ended)
        detail = f"worker pid {pid} killed; the supervisor started pid {new_pid} after {waited:.1f} s"
        return self._add(FaultResult("SIGKILL worker", at, 0.0, write, event, detail))

    async def restart_nats(self, down: float) -> FaultResult:
        nats = self.deployment.nats
        assert nats is not None
        at = self._now()
        await nats.stop(kill=True)
        await asyncio.sleep(down)
        await nats.start()
        ended = time.monotonic()
        write, event = await self._recovery(ended)
        detail = f"nats-server killed, started again after {down:g} s (same port and store)"
        return self._add(FaultResult("restart NATS", at, down, write, event, detail))

    async def postgres_outage(self, down: float) -> FaultResult:
        gate = self.deployment.gate
        assert gate is not None
        at = self._now()
        cut_before = gate.connections_cut
        await gate.outage(down)
        ended = time.monotonic()
        write, event = await self._recovery(ended)
        detail = f"PostgreSQL refused connections for {down:g} s; {gate.connections_cut - cut_before} cut"
        return self._add(FaultResult("PostgreSQL refuses connections", at, down, write, event, detail))

    async def _recovery(self, since: float) -> tuple[float, float]:
        """Seconds from `since` until a task is created (2xx), and until its event reached the receiver."""
        deadline = since + self.within
        org = self.workload.orgs[0]
        task_id = None
        while task_id is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no write succeeded within {self.within} s of the fault's end")
            task_id = await self.workload.create_task(org)
            if task_id is None:
                await asyncio.sleep(0.1)
        written = time.monotonic() - since
        while task_id not in delivered_task_ids(self.workload.receiver):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"task {task_id}, created {written:.1f} s after the fault ended, was not delivered "
                    f"within {self.within} s\n{self.deployment.tail()}"
                )
            await asyncio.sleep(0.05)
        return round(written, 2), round(time.monotonic() - since, 2)

    def _now(self) -> float:
        return round(time.monotonic() - self.began, 2)

    def _add(self, result: FaultResult) -> FaultResult:
        self.results.append(result)
        return result
