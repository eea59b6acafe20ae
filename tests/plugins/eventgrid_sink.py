"""Fixtures for the Event Grid sink (owned by the Event Grid work)."""
