"""Development-only tooling: starting Azurite, composing the local stack."""
