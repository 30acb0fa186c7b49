"""Reporting lets go of what it keeps between health refreshes when it stops."""

from __future__ import annotations

from services.reporting.app import create_app


async def test_reporting_closes_its_kept_lag_reader_when_it_stops(make_settings):
    app = create_app(make_settings())
    state = app.state.reporting
    async with app.router.lifespan_context(app):
        await state.refresh_health()  # the first refresh connects the reader, and it stays open
        assert state.health.kafka_error is None
        assert state.lag_reader.is_open
    assert not state.lag_reader.is_open
