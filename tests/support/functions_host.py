"""The tests' way of calling the app's functions (see devtools.indexed_functions)."""

from devtools.indexed_functions import (
    http,
    receive,
    response_json,
    run_queue_function,
    user_functions,
)

__all__ = ["http", "receive", "response_json", "run_queue_function", "user_functions"]
