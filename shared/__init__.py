"""The presence service's own package: domain, application services, adapters."""
