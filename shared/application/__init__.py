"""Application services: use cases that tie the domain to its adapters."""
