"""Poll requests: the message the fan-out sends for one shard."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.domain.ids import InvalidIdError, parse_guid


class PollRequestFormatError(ValueError):
    """A poll message that cannot be read."""


@dataclass(frozen=True)
class PollRequest:
    tenant_id: str
    shard: int
    # The lease the fan-out took for this message; a worker holding a message
    # with another token knows a newer cycle has taken over the shard.
    lease_token: str

    def to_message(self) -> str:
        return json.dumps(
            {
                "tenantId": self.tenant_id,
                "shard": self.shard,
                "lease": self.lease_token,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_message(cls, text: str) -> PollRequest:
        try:
            body = json.loads(text)
            tenant_id = parse_guid(body["tenantId"], "tenantId")
            shard = body["shard"]
            token = body["lease"]
        except (ValueError, KeyError, TypeError, InvalidIdError) as error:
            raise PollRequestFormatError(f"not a poll request: {error}") from error
        if not isinstance(shard, int) or shard < 0 or not isinstance(token, str):
            raise PollRequestFormatError("shard must be a number, lease a string")
        return cls(tenant_id, shard, token)
