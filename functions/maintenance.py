"""Housekeeping timers: jobs that keep storage from growing without end."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.services import get_services

logger = logging.getLogger(__name__)

bp = func.Blueprint()

# Daily at 03:20 UTC: a fixed time keeps the deployment free of one more
# setting, and the host runs a timer on one instance at a time.
IDEMPOTENCY_PURGE_SCHEDULE = "0 20 3 * * *"


@bp.function_name("purge_idempotency_records")
@bp.timer_trigger(
    arg_name="timer",
    schedule=IDEMPOTENCY_PURGE_SCHEDULE,
    run_on_startup=False,
    use_monitor=True,
)
def purge_idempotency_records(timer: func.TimerRequest) -> None:
    """Deletes Idempotency-Key records past IDEMPOTENCY_RETENTION_HOURS; a
    failure leaves the rest for the next day's run."""
    get_services().idempotency.purge_expired()
