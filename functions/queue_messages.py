"""What queue-triggered handlers share: decoding a message, and dealing with
one that can never be read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import azure.functions as func

logger = logging.getLogger(__name__)

Parsed = TypeVar("Parsed")


def parse_or_fail(
    message: func.QueueMessage,
    parse: Callable[[str], Parsed],
    kind: str,
    errors: tuple[type[Exception], ...],
) -> Parsed:
    """The parsed message. An unreadable one raises, so it is never silently
    dropped: the host retries it up to ``maxDequeueCount`` times and then
    parks it, body intact, in ``<queue>-poison``. It is logged once, on its
    first delivery, not on every retry."""
    try:
        return parse(message.get_body().decode("utf-8"))
    except Exception as error:
        if not isinstance(error, (UnicodeDecodeError, *errors)):
            raise
        if (message.dequeue_count or 1) <= 1:
            logger.error(
                "message %s is not %s; it goes to the poison queue after the "
                "host's retries: %s",
                message.id,
                kind,
                error,
            )
        raise
