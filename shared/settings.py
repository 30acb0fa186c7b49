"""One settings object for every service and the CLI, read from `RELIEF_*` environment variables.

Settings are built once at an entry point (a service's app, the CLI) and passed down; nothing
below an entry point reads the environment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("intake", "eligibility", "disbursement", "reporting")

# Values people paste from examples; a real deployment must never run with one of them.
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "relief", "test", "example"}


class SettingsError(ValueError):
    """A setting has a value the system cannot run with; the message names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELIEF_", extra="ignore", validate_default=True)

    data_dir: Path = Path("./.relief")
    kafka_bootstrap_servers: str | None = None
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int | None = Field(None, ge=1, le=65535)
    kafka_heap: str = "768m"
    topic_prefix: str = ""
    database_url: str | None = None
    identity_secret: str | None = None
    cycle: str = Field("C1", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    policy_version: str = "v1"
    policy_file: Path | None = None
    budget_ceilings: dict[str, int] = Field(default_factory=dict)
    approval_required: bool = False
    fsp_transient_failure_rate: float = Field(0.0, ge=0.0, lt=1.0)
    fsp_latency_ms: int = Field(0, ge=0)
    host: str = "127.0.0.1"
    intake_port: int = Field(8001, ge=1, le=65535)
    eligibility_port: int = Field(8002, ge=1, le=65535)
    disbursement_port: int = Field(8003, ge=1, le=65535)
    reporting_port: int = Field(8004, ge=1, le=65535)
    # Where the other services are reached, when not on `host` (e.g. `http://intake:8001` in Docker).
    intake_url: str | None = None
    eligibility_url: str | None = None
    disbursement_url: str | None = None
    reporting_url: str | None = None
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_rows: int = Field(50_000, ge=1)
    consumer_batch_size: int = Field(1000, ge=1, le=10_000)
    # How long the group waits for a consumer that stopped answering (a killed replica's partitions
    # wait this long); within the broker's default group.min/max.session.timeout.ms.
    kafka_session_timeout_ms: int = Field(30_000, ge=6_000, le=300_000)
    # How often each service copies SQLite's write-ahead log into its database and starts it afresh.
    sqlite_checkpoint_seconds: float = Field(10.0, gt=0, le=3600)
    log_level: str = "INFO"
    log_format: str = "json"

    @field_validator("identity_secret")
    @classmethod
    def refuse_placeholder_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < 16:
            raise ValueError("RELIEF_IDENTITY_SECRET must be at least 16 characters and not a placeholder")
        return value

    @field_validator("budget_ceilings")
    @classmethod
    def check_budget_ceilings(cls, value: dict[str, int]) -> dict[str, int]:
        for country, ceiling in value.items():
            if len(country) != 2 or not country.isupper() or ceiling < 0:
                raise ValueError(
                    "RELIEF_BUDGET_CEILINGS must map programme country codes to non-negative "
                    f"amounts in minor units, got {country!r}: {ceiling!r}"
                )
        return value

    @model_validator(mode="after")
    def distinct_ports(self) -> Settings:
        ports = [self.intake_port, self.eligibility_port, self.disbursement_port, self.reporting_port]
        if len(set(ports)) != len(ports):
            raise ValueError("RELIEF_*_PORT: the four service ports must differ")
        return self

    # ---- derived values -------------------------------------------------------------------

    @property
    def local_kafka(self) -> bool:
        """No bootstrap servers configured means: the project starts its own broker."""
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def controller_port(self) -> int:
        return self.kafka_controller_port or self.kafka_port + 1

    def service_port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def service_url(self, service: str) -> str:
        configured: str | None = getattr(self, f"{service}_url")
        if configured:
            return configured.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104 - a listen address
        return f"http://{host}:{self.service_port(service)}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group_id(self, service: str) -> str:
        return f"{self.topic_prefix}relief-{service}"

    def database_url_for(self, service: str) -> str:
        """Each service owns its database: `<name>_<service>` on PostgreSQL, a file on SQLite."""
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"
        base, _, query = self.database_url.partition("?")
        head, _, name = base.rpartition("/")
        url = f"{head}/{name or 'relief'}_{service}"
        return f"{url}?{query}" if query else url

    def resolved_identity_secret(self) -> str:
        """The configured secret, or one generated once and kept in the data directory.

        Keyed hashes must stay stable across restarts, so a generated secret is written with
        mode 0600 and reused; every process of one stack shares the same data directory.
        """
        if self.identity_secret:
            return self.identity_secret
        path = self.data_dir / "identity.secret"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: the first process to write wins, the others read its value
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()

    def child_environment(self) -> dict[str, str]:
        """The environment a child process needs to see the same settings."""
        env: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, dict):
                import json

                env[f"RELIEF_{name.upper()}"] = json.dumps(value)
            else:
                env[f"RELIEF_{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; a bad value raises SettingsError naming the setting."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "settings"
            problems.append(f"RELIEF_{field.upper()}: {item['msg']}")
        raise SettingsError("; ".join(problems)) from None
