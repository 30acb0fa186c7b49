"""A disbursement database on a SQLite file for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.unit.disbursement.disbursement_builders import disbursement_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = disbursement_engine(tmp_path / "disbursement.db")
    yield engine
    engine.dispose()
