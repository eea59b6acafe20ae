"""Presence polling: the timer fan-out, the shard poll worker, and the
outbox sweep."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from functions.queue_messages import parse_or_fail
from shared.domain.polling import PollRequest, PollRequestFormatError
from shared.services import get_services
from shared.settings import (
    DEFAULT_OUTBOX_SWEEP_SCHEDULE,
    DEFAULT_POLL_SCHEDULE,
    POLL_QUEUE,
    STORAGE_CONNECTION,
)

logger = logging.getLogger(__name__)

bp = func.Blueprint()


def timer_schedule(setting: str, default: str) -> str:
    """A timer's schedule: a reference to the app setting when it is set, for
    the host to resolve; the default otherwise, since the host refuses to
    index a timer whose %setting% is missing. Decided when the app is
    indexed, which the host does with the app settings in the environment."""
    return f"%{setting}%" if os.environ.get(setting, "").strip() else default


# POLL_SCHEDULE (6-field NCRONTAB) is resolved by the host from app settings;
# without it, every 30 seconds. The host runs a timer on one instance at a
# time. run_on_startup stays off: it would fire on every scale-out.
@bp.function_name("poll_fan_out")
@bp.timer_trigger(
    arg_name="timer",
    schedule=timer_schedule("POLL_SCHEDULE", DEFAULT_POLL_SCHEDULE),
    run_on_startup=False,
    use_monitor=True,
)
def poll_fan_out(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logger.info("fan-out tick is past due; running it now")
    get_services().fan_out.run()


@bp.function_name("poll_shard")
@bp.queue_trigger(
    arg_name="message", queue_name=POLL_QUEUE, connection=STORAGE_CONNECTION
)
def poll_shard(message: func.QueueMessage) -> None:
    """Raising hands the message back to the host for a retry after the
    visibility timeout (Graph down, storage failing); the shard's lease is
    handed back with it."""
    request = parse_or_fail(
        message, PollRequest.from_message, "a poll request", (PollRequestFormatError,)
    )
    get_services().poller.poll(request)


@bp.function_name("outbox_sweep")
@bp.timer_trigger(
    arg_name="timer",
    schedule=timer_schedule("OUTBOX_SWEEP_SCHEDULE", DEFAULT_OUTBOX_SWEEP_SCHEDULE),
    run_on_startup=False,
    use_monitor=True,
)
def outbox_sweep(timer: func.TimerRequest) -> None:
    get_services().outbox_sweep.run()
