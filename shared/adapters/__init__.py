"""Adapters: each translates between the domain and one external service."""
