from __future__ import annotations

import json
import uuid

import pytest

from shared.domain.commands import (
    MAX_BATCH_IDS,
    Action,
    Change,
    CommandFormatError,
    SubscriptionCommand,
)
from shared.domain.versions import VersionClock

TENANT = str(uuid.uuid4())


def command(changes: tuple[Change, ...], expected: str | None = None):
    return SubscriptionCommand(
        command_id=str(uuid.uuid4()),
        tenant_id=TENANT,
        version=VersionClock().mint()[0],
        changes=changes,
        expected_version=expected,
    )


def test_a_command_survives_the_queue_message_round_trip() -> None:
    original = command(
        (Change(str(uuid.uuid4()), Action.REGISTER),
         Change(str(uuid.uuid4()), Action.DEREGISTER)),
        expected="",
    )  # fmt: skip

    assert SubscriptionCommand.from_message(original.to_message()) == original


def test_a_full_batch_fits_one_queue_message() -> None:
    changes = tuple(
        Change(str(uuid.uuid4()), Action.REGISTER) for _ in range(MAX_BATCH_IDS)
    )

    message = command(changes).to_message()

    # 64 KiB per message, base64 by the host's default encoding: 4/3 growth.
    assert len(message.encode()) * 4 / 3 < 64 * 1024


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"schema": 99}), "schema"),
        (json.dumps({"schema": 1, "tenantId": "x"}), "tenantId"),
    ],
)
def test_unreadable_messages_raise_a_format_error(body: str, complaint: str) -> None:
    with pytest.raises(CommandFormatError, match=complaint):
        SubscriptionCommand.from_message(body)


def test_a_message_naming_one_user_twice_is_rejected() -> None:
    user = str(uuid.uuid4())
    text = command((Change(user, Action.REGISTER),)).to_message()
    body = json.loads(text)
    body["deregister"] = [user]

    with pytest.raises(CommandFormatError, match="twice"):
        SubscriptionCommand.from_message(json.dumps(body))
