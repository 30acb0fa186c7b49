"""A PostgreSQL cluster of the project's own, for the tests and the benchmark.

Installs Debian's `postgresql` package when the server binaries are missing, then runs a cluster
under the given directory as the `postgres` user, listening on 127.0.0.1 only. Never depends on a
system service being up. It runs with `fsync=off`: quick to start and to write to, and not for
data anyone keeps (an operating-system crash can corrupt it). A deployment brings its own
PostgreSQL (docker-compose.yml, or any server named by RELIEF_DATABASE_URL).

    python -m shared.pg_local start [DIR] [PORT]     prints the database URL
    python -m shared.pg_local stop [DIR]
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 55432


class PostgresError(RuntimeError):
    pass


def _bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def ensure_installed() -> Path:
    found = _bin_dir()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresError("PostgreSQL server binaries are missing: install Debian's `postgresql` package")
    print("relief: installing PostgreSQL from Debian's packages…", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"], check=True, env=env
    )
    found = _bin_dir()
    if not found:
        raise PostgresError("installing postgresql did not provide initdb")
    return found


class LocalPostgres:
    def __init__(
        self, root: Path, port: int = DEFAULT_PORT, server_settings: dict[str, str] | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.port = port
        # Further `-c name=value` settings the server starts with (the benchmark's statement
        # statistics); a cluster already running keeps the settings it was started with.
        self.server_settings = dict(server_settings or {})
        self.data = self.root / "data"
        self.bin = ensure_installed()
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://relief@127.0.0.1:{self.port}/relief"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd="/")

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.root, self.user, self.user)
            # the postgres user must be able to reach the directory
            parent = self.root.parent
            while parent != parent.parent:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
                parent = parent.parent

    def is_running(self) -> bool:
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def start(self) -> str:
        self._prepare_dirs()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "relief",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--lc-collate=C",  # see shared.db.ensure_postgres_database
                "--no-sync",
            )
        if not self.is_running():
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c shared_buffers=256MB"
            options += "".join(f" -c {name}={value}" for name, value in self.server_settings.items())
            result = self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                check=False,
            )
            if result.returncode != 0:
                log_tail = (
                    (self.root / "server.log").read_text()[-2000:]
                    if (self.root / "server.log").exists()
                    else ""
                )
                raise PostgresError(f"PostgreSQL did not start: {result.stderr.strip()} {log_tail}")
        self.wait_ready()
        return self.url

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._run(
                str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False
            )
            if result.returncode == 0:
                return
            time.sleep(0.3)
        raise PostgresError(f"PostgreSQL on port {self.port} not ready after {timeout:.0f}s")

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists() and self.is_running():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """An unclean crash of the postmaster, for fault tests."""
        self.stop(mode="immediate")


def main(argv: list[str]) -> int:
    action = argv[1] if len(argv) > 1 else "start"
    root = Path(argv[2]) if len(argv) > 2 else Path(".relief/postgres")
    port = int(argv[3]) if len(argv) > 3 else DEFAULT_PORT
    cluster = LocalPostgres(root, port)
    if action == "start":
        print(cluster.start())
    elif action == "stop":
        cluster.stop()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
