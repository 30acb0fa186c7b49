"""Runs the whole stack on one machine: the local broker when none is configured, then the four
services as separate processes, supervised (a crashed service is restarted) and stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.kafka import ensure_topics
from shared.kafka_local import LocalKafka, port_open
from shared.logging import get_logger
from shared.settings import SERVICES, Settings

log = get_logger("relief.stack")

REPLICA_PORT_STEP = 100  # replica n of a service listens on its port + n × 100


@dataclass
class Managed:
    service: str
    replica: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0


@dataclass
class Stack:
    settings: Settings
    replicas: dict[str, int] = field(default_factory=dict)
    kafka: LocalKafka | None = None
    managed: list[Managed] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self, *, wait: bool = True) -> None:
        """Start everything; if any part fails to come up, stop what did and raise."""
        try:
            self._start(wait=wait)
        except BaseException:
            self.stop()
            raise

    def _start(self, *, wait: bool) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            if port_open(self.settings.host, self.settings.service_port(service)):
                raise RuntimeError(
                    f"port {self.settings.service_port(service)} for {service} is in use: another stack is "
                    f"running, or set RELIEF_{service.upper()}_PORT"
                )
        if self.settings.local_kafka:
            self.kafka = LocalKafka(
                self.settings.data_dir,
                self.settings.kafka_port,
                self.settings.controller_port,
                self.settings.kafka_heap,
            )
            print(f"relief: starting Apache Kafka on 127.0.0.1:{self.settings.kafka_port}", file=sys.stderr)
            self.kafka.start()
            self.settings = self.settings.model_copy(
                update={"kafka_bootstrap_servers": self.kafka.bootstrap_servers}
            )
        ensure_topics(self.settings)
        self.settings.resolved_identity_secret()  # generated once, before the services race for it
        for service in SERVICES:
            for replica in range(max(1, self.replicas.get(service, 1))):
                port = self.settings.service_port(service) + replica * REPLICA_PORT_STEP
                managed = Managed(service, replica, port, self.log_dir / f"{service}-{replica}.log")
                self.managed.append(managed)
                self._spawn(managed)
        if wait:
            self.wait_healthy()

    def _environment(self, managed: Managed) -> dict[str, str]:
        env = {**os.environ, **self.settings.child_environment()}
        env[f"RELIEF_{managed.service.upper()}_PORT"] = str(managed.port)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, managed: Managed) -> None:
        with open(managed.log_path, "ab") as log_file:
            managed.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{managed.service}"],
                env=self._environment(managed),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        managed.started_at = time.monotonic()

    def wait_healthy(self, timeout: float = 120.0, *, restarting: bool = False) -> None:
        """Every replica answers `/healthz`. A replica that exited fails the wait, unless
        `restarting` (the supervisor is starting again what a fault killed)."""
        deadline = time.monotonic() + timeout
        pending = list(self.managed)
        while pending:
            if time.monotonic() > deadline:
                names = ", ".join(f"{m.service}#{m.replica}" for m in pending)
                raise RuntimeError(f"not healthy after {timeout:.0f}s: {names} (logs in {self.log_dir})")
            for managed in list(pending):
                if not restarting and managed.process is not None and managed.process.poll() is not None:
                    tail = managed.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{managed.service} exited during start-up:\n{tail}")
                try:
                    response = httpx.get(f"http://{self.settings.host}:{managed.port}/healthz", timeout=1.0)
                    if response.status_code == 200:
                        pending.remove(managed)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)

    def supervise_once(self) -> None:
        """Restart any service that died on its own, with a pause that grows if it keeps dying."""
        for managed in self.managed:
            process = managed.process
            if process is None or process.poll() is None or self._stopping.is_set():
                continue
            managed.restarts += 1
            pause = (
                min(30.0, 0.5 * 2 ** min(managed.restarts, 6))
                if time.monotonic() - managed.started_at < 30
                else 0.5
            )
            log.warning(
                "service_exited",
                service=managed.service,
                replica=managed.replica,
                code=process.returncode,
                restart=managed.restarts,
                pause_seconds=pause,
            )
            print(
                f"relief: {managed.service}#{managed.replica} exited with {process.returncode}; restarting",
                file=sys.stderr,
            )
            time.sleep(pause)
            self._spawn(managed)

    def run_forever(self) -> None:
        while not self._stopping.is_set():
            self.supervise_once()
            self._stopping.wait(0.5)

    def request_stop(self, *_: object) -> None:
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        for managed in self.managed:
            if managed.process is not None and managed.process.poll() is None:
                managed.process.send_signal(signal.SIGTERM)
        for managed in self.managed:
            if managed.process is None:
                continue
            try:
                managed.process.wait(30)
            except subprocess.TimeoutExpired:
                managed.process.kill()
                managed.process.wait(10)
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None


def parse_replicas(spec: str | None) -> dict[str, int]:
    """`eligibility=2,disbursement=2` → {"eligibility": 2, "disbursement": 2}."""
    replicas: dict[str, int] = {}
    if not spec:
        return replicas
    for part in spec.split(","):
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in SERVICES or not count.strip().isdigit() or not 1 <= int(count) <= 8:
            raise ValueError(
                f"--replicas: expected SERVICE=N with a service of {', '.join(SERVICES)} and N in 1–8, got {part!r}"
            )
        replicas[name] = int(count)
    return replicas
