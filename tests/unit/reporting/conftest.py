"""A reporting database on a SQLite file for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.unit.reporting.reporting_builders import reporting_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = reporting_engine(tmp_path / "reporting.db")
    yield engine
    engine.dispose()
