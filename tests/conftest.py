"""Session-wide real infrastructure: one Apache Kafka broker and one PostgreSQL cluster.

Each test gets its own topic prefix and its own databases, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from shared.kafka import ensure_topics
from shared.kafka_local import LocalKafka
from shared.pg_local import LocalPostgres
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_ROOT = Path(os.environ.get("RELIEF_TEST_ROOT", Path(__file__).resolve().parent.parent / ".relief-test"))
TEST_SECRET = "test-identity-secret-0123456789abcdef"  # noqa: S105 - a test-only value

# Property tests judge results, never time: these machines are shared, and an example that runs
# slow (a first call importing numpy, a busy neighbour) must not fail a run.
settings.register_profile("relief", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("relief")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_service_ports(count: int, replicas: int = 4) -> list[int]:
    """`count` service ports whose replica ports (port + n × 100, as the stack gives them) are all
    different from each other and free now: two draws of port 0 can land 100 apart, and a second
    replica would then take another service's port."""
    from relief_cli.stack import REPLICA_PORT_STEP

    for _ in range(50):
        ports = [free_port() for _ in range(count)]
        taken = [port + n * REPLICA_PORT_STEP for port in ports for n in range(replicas)]
        if len(set(taken)) == len(taken) and all(_bindable(port) for port in taken):
            return ports
    raise RuntimeError("no free set of service ports")


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port_pair() -> int:
    """A port whose successor is free too (the local broker's controller listens on port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    """A real Apache Kafka broker for the whole test session (or the one named by the environment)."""
    port = free_port_pair()
    broker = LocalKafka(TEST_ROOT / f"kafka-{port}", port, port + 1)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    cluster = LocalPostgres(TEST_ROOT / "postgres", int(os.environ.get("RELIEF_TEST_PG_PORT", "55433")))
    already_running = cluster.is_running()  # another test session on this machine may share it
    cluster.start()
    try:
        yield cluster
    finally:
        if not already_running:
            cluster.stop()


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def make_settings(kafka: LocalKafka, tmp_path: Path, test_id: str) -> Callable[..., Settings]:
    """Settings for one test: its own topic prefix, data directory and service ports."""

    def build(
        database: str = "sqlite", postgres_cluster: LocalPostgres | None = None, **overrides: object
    ) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "kafka_bootstrap_servers": kafka.bootstrap_servers,
            "topic_prefix": f"t{test_id}.",
            "identity_secret": TEST_SECRET,
            **dict(
                zip(
                    ("intake_port", "eligibility_port", "disbursement_port", "reporting_port"),
                    free_service_ports(4),
                    strict=True,
                )
            ),
            "log_format": "json",
        }
        if database == "postgres":
            assert postgres_cluster is not None, "pass the postgres fixture"
            values["database_url"] = (
                f"postgresql+psycopg://relief@127.0.0.1:{postgres_cluster.port}/t{test_id}"
            )
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]
        ensure_topics(settings)
        return settings

    return build


class ServiceProcess:
    """One service run as a real process (`python -m services.<name>`), reached over real HTTP."""

    def __init__(self, name: str, settings: Settings, log_path: Path) -> None:
        self.name = name
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.settings.service_url(self.name)

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        env = {**os.environ, **self.settings.child_environment()}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start services as real processes; all are stopped with SIGTERM when the test ends."""
    started: list[ServiceProcess] = []

    def start(name: str, settings: Settings, replica: int = 0) -> ServiceProcess:
        service = ServiceProcess(name, settings, tmp_path / f"{name}-{replica}.log")
        started.append(service)
        return service.start()

    yield start
    for service in reversed(started):
        service.stop()
