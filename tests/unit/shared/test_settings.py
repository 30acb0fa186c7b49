"""Settings: every value checked at start-up, with errors that name the setting."""

from pathlib import Path

import pytest

from relief_cli.stack import parse_replicas
from shared.settings import Settings, SettingsError, load_settings


def test_placeholder_identity_secrets_are_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("RELIEF_IDENTITY_SECRET", "changeme")
    with pytest.raises(SettingsError, match="RELIEF_IDENTITY_SECRET"):
        load_settings()


def test_a_bad_port_names_the_setting(monkeypatch):
    monkeypatch.setenv("RELIEF_INTAKE_PORT", "http")
    with pytest.raises(SettingsError, match="RELIEF_INTAKE_PORT"):
        load_settings()


@pytest.mark.parametrize("value", ["5999", "300001", "soon"])
def test_a_session_timeout_the_broker_would_refuse_names_the_setting(monkeypatch, value):
    monkeypatch.setenv("RELIEF_KAFKA_SESSION_TIMEOUT_MS", value)
    with pytest.raises(SettingsError, match="RELIEF_KAFKA_SESSION_TIMEOUT_MS"):
        load_settings()


def test_no_bootstrap_servers_means_the_local_broker():
    settings = Settings(kafka_port=19092)
    assert settings.local_kafka and settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.controller_port == 19093


def test_each_service_owns_its_database():
    sqlite = Settings(data_dir=Path("/srv/relief"))
    assert sqlite.database_url_for("intake") == "sqlite:////srv/relief/intake.db"
    postgres = Settings(database_url="postgresql+psycopg://u@db:5432/relief?sslmode=require")
    assert (
        postgres.database_url_for("reporting")
        == "postgresql+psycopg://u@db:5432/relief_reporting?sslmode=require"
    )


def test_a_generated_identity_secret_is_kept_and_reused(tmp_path):
    first = Settings(data_dir=tmp_path).resolved_identity_secret()
    assert Settings(data_dir=tmp_path).resolved_identity_secret() == first
    assert (tmp_path / "identity.secret").stat().st_mode & 0o077 == 0


def test_child_processes_receive_the_same_settings():
    settings = Settings(topic_prefix="x.", budget_ceilings={"MY": 100})
    env = settings.child_environment()
    assert env["RELIEF_TOPIC_PREFIX"] == "x." and env["RELIEF_BUDGET_CEILINGS"] == '{"MY": 100}'


def test_replica_counts_are_parsed_and_checked():
    assert parse_replicas("eligibility=2,disbursement=3") == {"eligibility": 2, "disbursement": 3}
    with pytest.raises(ValueError, match="--replicas"):
        parse_replicas("payments=2")


def test_kafka_cluster_ids_never_start_with_a_dash():
    from shared.kafka_local import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # about 1 in 64 random ids would start with "-"
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
