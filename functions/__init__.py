"""Azure Functions blueprints, one per concern. Handlers parse input, call the
application services and map results to responses or retries; no business
rule lives here."""
