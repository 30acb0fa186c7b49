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
    after_batch: int  # strikes once this batch has been accepted, while its rows are in flight
    delay: float  # seconds after that acceptance


@dataclass
class FaultPlan:
    seed: int
    faults: list[Fault]

    @classmethod
    def from_seed(
        cls,
        seed: int,
        *,
        batches: int,
        count: int = 4,
        kinds: tuple[str, ...] = SERVICE_FAULTS + INFRA_FAULTS,
    ) -> FaultPlan:
        rng = random.Random(seed)
        chosen = sorted(rng.sample(range(batches), min(count, batches)))
        return cls(
            seed, [Fault(rng.choice(kinds), batch, round(rng.uniform(0.0, 1.0), 2)) for batch in chosen]
        )


@dataclass
class Injector:
    """Strikes as the plan says, each fault a moment after its batch was accepted; the stack's
    supervisor restarts killed services, and infrastructure faults restart the broker or the
    database in place."""

    stack: Stack
    plan: FaultPlan
    kafka: LocalKafka | None = None
    postgres: LocalPostgres | None = None
    injected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _strikes: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        supervisor.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.stack.supervise_once()
            time.sleep(0.3)

    def batch_submitted(self, index: int, _: object = None) -> None:
        """Called once a batch is accepted: its faults strike from another thread while it drains."""
        due = [fault for fault in self.plan.faults if fault.after_batch == index]
        if due:
            strike = threading.Thread(target=self._strike, args=(due,), name=f"fault-{index}", daemon=True)
            strike.start()
            self._strikes.append(strike)

    def _strike(self, faults: list[Fault]) -> None:
        for fault in faults:
            if self._stop.wait(fault.delay):
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

    def finish(self, timeout: float = 120.0) -> None:
        """Wait for every strike under way; the supervisor keeps restarting what they killed."""
        for strike in self._strikes:
            strike.join(timeout=timeout)

    def stop(self) -> None:
        self.finish()
        self._stop.set()
