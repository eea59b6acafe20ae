"""Fixtures for the Graph simulator (owned by the Graph work)."""
