"""A small local development host for the Azure Functions app.

It serves HTTP, queue and timer triggers of an ``azure.functions.FunctionApp``
with the Azure Functions host's documented semantics, closely enough for local
runs and end-to-end tests. It is a development tool, not a production host:
see ``docs/local-host.md`` for how it differs from the real one.
"""
