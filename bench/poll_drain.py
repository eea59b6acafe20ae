"""The poll queue drained as the Functions host drains it: a pool of worker
threads, messages fetched only when few are in flight, a failed poll made
visible again after host.json's visibilityTimeout. Used by the poll-cycle
benchmark in its own process and in each worker process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as QueueMessageSdk

from devtools.indexed_functions import receive
from shared.application.poll_shard import PollResult
from shared.domain.polling import PollRequest
from shared.services import Services

logger = logging.getLogger(__name__)

# host.json visibilityTimeout: how soon a failed message is seen again.
RETRY_S = 10
# How long a received message stays invisible (the host's default: 10 min).
VISIBILITY_S = 600
# Empty receives (0.2 s apart) before the drain gives up waiting.
MAX_IDLE_RECEIVES = 300


def drain(
    services: Services,
    queue: QueueClient,
    expected: Callable[[], int | None],
    workers: int,
    on_result: Callable[[PollResult], None] | None = None,
) -> tuple[list[PollResult], int]:
    """Polls every message; returns the results and how many polls failed.
    A failed poll is treated as the host treats it: the message is not
    deleted but made visible again after host.json's visibilityTimeout, and
    polled again when it comes back.

    ``expected`` gives the number of messages to poll once the fan-out has
    finished (None before): workers start on the first messages while the
    fan-out is still enqueueing the rest, as the host's workers do."""
    results: list[PollResult] = []
    failures = 0
    lock = threading.Lock()

    def poll(body: bytes, raw: QueueMessageSdk) -> None:
        nonlocal failures
        try:
            result = services.poller.poll(
                PollRequest.from_message(body.decode("utf-8"))
            )
        except Exception as error:
            logger.warning("poll failed, redelivered in %d s: %s", RETRY_S, error)
            with lock:
                failures += 1
            queue.update_message(raw, visibility_timeout=RETRY_S)
            return
        queue.delete_message(raw)
        with lock:
            results.append(result)
        if on_result is not None:
            on_result(result)

    idle = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="poll-worker") as pool:
        pending: list[Future[None]] = []
        while idle < MAX_IDLE_RECEIVES:
            target = expected()
            with lock:
                if target is not None and len(results) >= target:
                    break
            # Like the host: fetch more only when few are in flight, so no
            # message waits in a local backlog while its visibility runs out.
            in_flight = sum(not f.done() for f in pending)
            if in_flight > workers // 2:
                time.sleep(0.02)
                continue
            batch = receive(queue, workers - in_flight, VISIBILITY_S)
            if not batch:
                idle += 1
                time.sleep(0.2)  # as the host backs off polling an empty queue
                continue
            idle = 0
            pending += [pool.submit(poll, m.get_body(), raw) for m, raw in batch]
        for future in pending:
            future.result()
    return results, failures
