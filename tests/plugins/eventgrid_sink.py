"""Fixtures for the Event Grid sink (owned by the Event Grid work).

``eventgrid_sink``      a running sink on a free loopback port, stopped after
                        the test
``eventgrid_settings``  EventGridSettings pointing at that sink; also sets
                        EVENTGRID_TOPIC_ENDPOINT / EVENTGRID_TOPIC_KEY in the
                        environment and clears the cached app settings
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from shared import settings as settings_module
from shared.settings import EventGridSettings
from simulators.eventgrid_sink import EventGridSink


@pytest.fixture
def eventgrid_sink() -> Iterator[EventGridSink]:
    # A fresh random key per test: a test can only pass with the key it was
    # actually given.
    with EventGridSink(secrets.token_urlsafe(24)) as sink:
        yield sink


@pytest.fixture
def eventgrid_key(eventgrid_sink: EventGridSink) -> str:
    return eventgrid_sink.key


@pytest.fixture
def eventgrid_settings(
    eventgrid_sink: EventGridSink,
    eventgrid_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[EventGridSettings]:
    monkeypatch.setenv("EVENTGRID_TOPIC_ENDPOINT", eventgrid_sink.topic_endpoint)
    monkeypatch.setenv("EVENTGRID_TOPIC_KEY", eventgrid_key)
    settings_module.get_settings.cache_clear()
    yield EventGridSettings(
        topic_endpoint=eventgrid_sink.topic_endpoint, topic_key=eventgrid_key
    )
    settings_module.get_settings.cache_clear()
