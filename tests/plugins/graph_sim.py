"""Fixtures for the Graph simulator: one https simulator per test session,
cleaned before each test, and settings pointing the app at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import settings as settings_module
from shared.settings import GraphSettings
from simulators.graph import GraphSimulator


@pytest.fixture(scope="session")
def graph_simulator_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GraphSimulator]:
    with GraphSimulator(tmp_path_factory.mktemp("graph-sim-ca"), seed=7) as simulator:
        yield simulator


@pytest.fixture
def graph_simulator(graph_simulator_session: GraphSimulator) -> GraphSimulator:
    """The session's simulator with no faults, no presence changes and zeroed
    counters (and rate-limit window). Tenants of earlier tests stay; each test
    adds its own."""
    simulator = graph_simulator_session
    simulator.clear_faults()
    simulator.set_missing_users("omit")
    simulator.set_change_rate(0.0)
    simulator.reset_counters()
    return simulator


@pytest.fixture
def graph_tenant(graph_simulator: GraphSimulator) -> str:
    """A fresh tenant with 650 users."""
    return graph_simulator.add_tenant(user_count=650)


@pytest.fixture
def graph_settings(
    graph_simulator: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GraphSettings]:
    """Sets GRAPH_BASE_URL, GRAPH_AUTHORITY_HOST, GRAPH_CLIENT_ID,
    GRAPH_CLIENT_SECRET and GRAPH_CA_BUNDLE to the simulator (removing
    GRAPH_CLIENT_CERTIFICATE_PATH), clears the settings cache, and returns the
    matching GraphSettings (storage settings are not needed for it)."""
    urls = graph_simulator.urls
    monkeypatch.setenv("GRAPH_BASE_URL", urls.base_url)
    monkeypatch.setenv("GRAPH_AUTHORITY_HOST", urls.authority_host)
    monkeypatch.setenv("GRAPH_CLIENT_ID", graph_simulator.client_id)
    monkeypatch.setenv("GRAPH_CLIENT_SECRET", graph_simulator.client_secret)
    monkeypatch.setenv("GRAPH_CA_BUNDLE", urls.ca_bundle)
    monkeypatch.delenv("GRAPH_CLIENT_CERTIFICATE_PATH", raising=False)
    settings_module.get_settings.cache_clear()
    yield GraphSettings(
        base_url=urls.base_url,
        authority_host=urls.authority_host,
        client_id=graph_simulator.client_id,
        client_secret=graph_simulator.client_secret,
        client_certificate_path=None,
        ca_bundle=urls.ca_bundle,
    )
    settings_module.get_settings.cache_clear()
