"""The HTTP API's contract, free of any web framework: request parsing and
validation, and RFC 9457 problem details."""
