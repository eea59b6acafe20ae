"""The domain: commands, events, versions and rules. Imports no Azure SDK."""
