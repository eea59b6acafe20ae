"""Queue triggers: poll a storage queue and run the function per message.

Semantics follow the Functions host's queue extension (host.json
``extensions.queues``):

* a batch of ``batchSize`` messages is fetched whenever the number of
  messages in flight drops to ``newBatchThreshold`` or below;
* an empty poll doubles the wait, from 100 ms up to ``maxPollingInterval``;
* a message is deleted only after the function returned without error;
* a failed message is made visible again after ``visibilityTimeout``; when it
  has failed ``maxDequeueCount`` times it is copied, body unchanged, to
  ``<queue>-poison`` and deleted.

While a message is processed it stays invisible for ``lease_seconds`` (a
devhost option). Unlike the real host, devhost does not renew that lease: a
handler that runs longer lets the message be received again.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StoredMessage

from devhost.functions import QueueFunction, invoke
from devhost.host_config import QueueOptions
from devhost.storage import MessageCodec, QueueClients

logger = logging.getLogger(__name__)

MIN_POLLING_INTERVAL = 0.1
POISON_SUFFIX = "-poison"


class QueueListener:
    """Runs one queue-triggered function."""

    def __init__(
        self,
        function: QueueFunction,
        clients: QueueClients,
        options: QueueOptions,
        lease_seconds: float,
    ) -> None:
        self._function = function
        self._clients = clients
        self._options = options
        self._codec = MessageCodec(options.message_encoding)
        self._lease_seconds = max(1, round(lease_seconds))
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._in_flight: dict[str, StoredMessage] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold,
            thread_name_prefix=f"queue-{function.info.name}",
        )
        self._poller = threading.Thread(
            target=self._poll_loop, name=f"poll-{function.info.name}", daemon=True
        )
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None

    @property
    def name(self) -> str:
        return self._function.info.name

    def start(self) -> None:
        self._queue = self._clients.get(
            self._function.connection, self._function.queue_name
        )
        self._poison = self._clients.get(
            self._function.connection, self._function.queue_name + POISON_SUFFIX
        )
        self._poller.start()
        logger.info(
            "Queue function %s listening on queue %s",
            self.name,
            self._function.queue_name,
        )

    def stop_receiving(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no message is in flight; False if the timeout passed."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._in_flight, timeout)

    def release_in_flight(self) -> int:
        """Make messages still being processed visible again right away,
        for a shutdown that cannot wait for them any longer."""
        with self._changed:
            cut_off = list(self._in_flight.values())
        for message in cut_off:
            try:
                assert self._queue is not None
                self._queue.update_message(message, visibility_timeout=0)
                logger.warning(
                    "Message %s of %s was cut off by shutdown; it is visible again",
                    message.id,
                    self.name,
                )
            except AzureError as error:
                logger.warning(
                    "Could not release message %s: %s (visible after its lease)",
                    message.id,
                    error,
                )
        self._executor.shutdown(wait=False, cancel_futures=True)
        return len(cut_off)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _poll_loop(self) -> None:
        idle_wait = MIN_POLLING_INTERVAL
        while not self._stopping.is_set():
            with self._changed:
                # Fetch only when in-flight work has drained to the threshold.
                self._changed.wait_for(
                    lambda: (
                        self._stopping.is_set()
                        or len(self._in_flight) <= self._options.new_batch_threshold
                    )
                )
            if self._stopping.is_set():
                return
            try:
                messages = self._receive_batch()
            except AzureError as error:
                logger.warning("Polling queue %s failed: %s", self.name, error)
                messages = []
            if messages:
                idle_wait = MIN_POLLING_INTERVAL
                self._dispatch(messages)
                continue
            self._stopping.wait(idle_wait)
            idle_wait = min(idle_wait * 2, self._options.max_polling_interval)

    def _receive_batch(self) -> list[StoredMessage]:
        assert self._queue is not None
        size = self._options.batch_size
        # messages_per_page makes it one request for the whole batch; we
        # take only the first page so an almost empty queue costs one call.
        pages = self._queue.receive_messages(
            messages_per_page=size,
            max_messages=size,
            visibility_timeout=self._lease_seconds,
        ).by_page()
        for page in pages:
            return list(page)
        return []

    def _dispatch(self, messages: list[StoredMessage]) -> None:
        with self._changed:
            for message in messages:
                self._in_flight[message.id] = message
        for message in messages:
            try:
                self._executor.submit(self._process, message)
            except RuntimeError:
                # Executor shut down during a hurried stop: the message
                # becomes visible again when its lease ends.
                self._finish(message)

    def _process(self, message: StoredMessage) -> None:
        try:
            if self._stopping.is_set():
                # Received but not started before shutdown: hand it back.
                self._release(message)
                return
            if (message.dequeue_count or 0) > self._options.max_dequeue_count:
                # Dequeued too often without completing (the host crashed
                # mid-run): the real host poisons these before running them.
                self._move_to_poison(message)
                return
            self._run(message)
        except Exception:
            logger.exception("Handling message %s of %s failed", message.id, self.name)
        finally:
            self._finish(message)

    def _run(self, message: StoredMessage) -> None:
        assert self._queue is not None
        try:
            trigger = TriggerMessage(
                id=message.id,
                body=self._codec.decode(message.content),
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            invocation = invoke(self._function.info, trigger)
            self._clients.send_outputs(invocation.outputs, self._codec)
        except Exception:
            logger.exception(
                "Function %s failed on message %s (dequeue count %d)",
                self.name,
                message.id,
                message.dequeue_count,
            )
            self._after_failure(message)
            return
        try:
            self._queue.delete_message(message)
        except ResourceNotFoundError:
            # Our pop receipt is stale: the lease ran out and someone else
            # received the message, so it will run again.
            logger.warning(
                "Message %s of %s outlived its %ss lease; it may run again",
                message.id,
                self.name,
                self._lease_seconds,
            )

    def _after_failure(self, message: StoredMessage) -> None:
        assert self._queue is not None
        if (message.dequeue_count or 0) >= self._options.max_dequeue_count:
            self._move_to_poison(message)
            return
        self._queue.update_message(
            message, visibility_timeout=round(self._options.visibility_timeout)
        )

    def _move_to_poison(self, message: StoredMessage) -> None:
        assert self._queue is not None and self._poison is not None
        # Content is sent exactly as stored, so the body stays intact.
        self._poison.send_message(message.content)
        self._queue.delete_message(message)
        logger.error(
            "Message %s of %s moved to %s after %d dequeues",
            message.id,
            self.name,
            self._function.queue_name + POISON_SUFFIX,
            message.dequeue_count,
        )

    def _release(self, message: StoredMessage) -> None:
        assert self._queue is not None
        try:
            self._queue.update_message(message, visibility_timeout=0)
        except AzureError as error:
            logger.warning("Could not release message %s: %s", message.id, error)

    def _finish(self, message: StoredMessage) -> None:
        with self._changed:
            self._in_flight.pop(message.id, None)
            self._changed.notify_all()
