"""Seeded fault injection against a running stack: which fault, against what, and when.

A seed fixes the whole plan, so a failing run is replayed exactly with the same seed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from relief_cli.stack import Stack
from shared.kafka_local import LocalKafka
from shared.pg_local import LocalPostgres


def fault_seeds(default: range) -> list[int]:
    """The seeds to run: `RELIEF_FAULT_SEEDS=3,7` replays those, otherwise `default`."""
    chosen = os.environ.get("RELIEF_FAULT_SEEDS")
    return [int(s) for s in chosen.split(",")] if chosen else list(default)


SERVICE_FAULTS = ("kill_intake", "kill_eligibility", "kill_disbursement", "kill_reporting")
INFRA_FAULTS = ("restart_kafka", "restart_postgres")


@dataclass(frozen=True)
class Fault:
    kind: str
    after_seconds: float


@dataclass
class FaultPlan:
    seed: int
    faults: list[Fault]

    @classmethod
    def from_seed(
        cls,
        seed: int,
        *,
        count: int = 4,
        window: float = 20.0,
        kinds: tuple[str, ...] = SERVICE_FAULTS + INFRA_FAULTS,
    ) -> FaultPlan:
        rng = random.Random(seed)
        times = sorted(rng.uniform(1.0, window) for _ in range(count))
        return cls(seed, [Fault(rng.choice(kinds), at) for at in times])


@dataclass
class Injector:
    """Runs a plan in a thread while the programme is submitted; the stack's supervisor restarts
    killed services, and infrastructure faults restart the broker or the database in place."""

    stack: Stack
    plan: FaultPlan
    kafka: LocalKafka | None = None
    postgres: LocalPostgres | None = None
    injected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)
        self._thread.start()
        supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        supervisor.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.stack.supervise_once()
            time.sleep(0.3)

    def _run(self) -> None:
        began = time.monotonic()
        for fault in self.plan.faults:
            delay = began + fault.after_seconds - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self.inject(fault.kind)
                self.injected.append(fault.kind)
            except Exception as error:  # a fault that could not be injected is reported, not hidden
                self.errors.append(f"{fault.kind}: {type(error).__name__}: {error}")

    def inject(self, kind: str) -> None:
        if kind.startswith("kill_"):
            service = kind.removeprefix("kill_")
            victims = [
                m
                for m in self.stack.managed
                if m.service == service and m.process and m.process.poll() is None
            ]
            if victims:
                victims[0].process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        elif kind == "restart_kafka" and self.kafka is not None:
            self.kafka.kill()
            time.sleep(1.0)
            self.kafka.start()
        elif kind == "restart_postgres" and self.postgres is not None:
            self.postgres.kill()
            time.sleep(1.0)
            self.postgres.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
