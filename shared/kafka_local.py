"""A single-node Apache Kafka broker (KRaft, combined broker and controller) run by the project.

The jars come from Maven Central through `deploy/kafka/pom.xml`; storage is formatted on the first
start and lives under the data directory, so a stop and a restart keep every committed message.
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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LIB_DIR = REPO_ROOT / "deploy" / "kafka" / "target" / "lib"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"


class KafkaStartError(RuntimeError):
    pass


def ensure_jars(quiet: bool = True) -> Path:
    """Resolve the broker's jars with Maven once; later calls find them cached."""
    if LIB_DIR.exists() and any(LIB_DIR.glob("kafka_2.13-*.jar")):
        return LIB_DIR
    if shutil.which("mvn") is None:
        raise KafkaStartError("mvn is not installed: run `make install` (it installs Maven and Java 17)")
    print("relief: resolving Apache Kafka from Maven Central (first run only)…", file=sys.stderr)
    command = ["mvn", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    if quiet:
        command.insert(1, "-q")
    subprocess.run(command, check=True)
    return LIB_DIR


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalKafka:
    """Start, wait for and stop one local broker whose files live in `data_dir/kafka`."""

    def __init__(self, data_dir: Path, port: int, controller_port: int, heap: str = "768m") -> None:
        self.root = Path(data_dir).resolve() / "kafka"
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.root / "data"

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "6",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "-1",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        self.config_path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaStartError("java is not installed: run `make install` (it installs Java 17)")
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
            "-cp",
            f"{ensure_jars()}/*",
        ]

    def format_storage(self) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = self.root / "cluster.id"
        if not cluster_id.exists() or cluster_id.read_text().startswith("-"):
            cluster_id.write_text(new_cluster_id())
        result = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id.read_text().strip(),
                "-c",
                str(self.config_path),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaStartError(
                f"formatting Kafka storage failed: {result.stderr.strip() or result.stdout}"
            )

    def start(self, timeout: float = 90.0) -> None:
        if port_open("127.0.0.1", self.port):
            raise KafkaStartError(
                f"port {self.port} is already in use: set RELIEF_KAFKA_PORT to a free port "
                "or RELIEF_KAFKA_BOOTSTRAP_SERVERS to use that broker"
            )
        self._write_config()
        self.format_storage()
        (self.root / "logs").mkdir(exist_ok=True)
        stdout = open(self.root / "logs" / "broker.out", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [*self._java(), "kafka.Kafka", str(self.config_path)],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stdout.close()
        (self.root / "broker.pid").write_text(str(self.process.pid))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Ready means it answers a metadata request, not merely that its port is open."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaStartError(
                    f"the Kafka broker exited with code {self.process.returncode}; "
                    f"see {self.root / 'logs' / 'broker.out'}"
                )
            if port_open("127.0.0.1", self.port):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
                    )
                    try:
                        admin.describe_cluster()
                        return
                    finally:
                        admin.close()
                except (KafkaError, OSError) as error:
                    last_error = error
            time.sleep(0.3)
        raise KafkaStartError(f"the Kafka broker did not serve metadata within {timeout:.0f}s: {last_error}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM lets the broker flush and close its logs cleanly; SIGKILL only as a last resort."""
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        self.process = None
        (self.root / "broker.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """An unclean crash, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def new_cluster_id() -> str:
    """A base64 UUID of 22 characters, as Kafka wants. Like Kafka's own Uuid.randomUuid, never one
    that starts with "-": the storage tool would read it as an option and refuse to format."""
    import base64

    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate
