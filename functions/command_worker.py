"""Queue-triggered apply step for subscription commands."""

from __future__ import annotations

import logging

import azure.functions as func

from functions.queue_messages import parse_or_fail
from shared.domain.commands import CommandFormatError, SubscriptionCommand
from shared.services import get_services
from shared.settings import COMMAND_QUEUE, STORAGE_CONNECTION

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("apply_subscription_command")
@bp.queue_trigger(
    arg_name="message", queue_name=COMMAND_QUEUE, connection=STORAGE_CONNECTION
)
def apply_subscription_command(message: func.QueueMessage) -> None:
    """Apply one command. Raising leaves the message to the host, which makes
    it visible again after ``visibilityTimeout`` and moves it to
    ``<queue>-poison`` after ``maxDequeueCount`` attempts."""
    command = parse_or_fail(
        message, SubscriptionCommand.from_message, "a command", (CommandFormatError,)
    )
    get_services().applier.apply(command)
