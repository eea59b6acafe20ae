"""Poll shards: groups of at most 650 active agents of one tenant.

650 is the most ids one Graph ``getPresencesByUserId`` call takes, so one
shard costs exactly one Graph call per poll. Registers fill the lowest-numbered
shard with room, which keeps shards packed: a tenant with ``n`` agents and no
deregistrations has ``ceil(n / 650)`` shards, the minimum number of calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHARD_CAPACITY = 650


@dataclass
class Shard:
    number: int
    members: list[str]
    # Opaque concurrency token of the stored row; None for a shard not yet stored.
    etag: str | None = None
    changed: bool = field(default=False, compare=False)

    @property
    def has_room(self) -> bool:
        return len(self.members) < SHARD_CAPACITY


class ShardAllocator:
    """Decides shard membership for the changes of one apply attempt.

    It works on the shard rows read for that attempt; the store writes the
    changed ones guarded by their ETags, so two attempts racing for the same
    slot cannot both succeed.
    """

    def __init__(self, shards: list[Shard], next_number: int) -> None:
        self._shards = {shard.number: shard for shard in shards}
        # The number a new shard gets when every loaded shard is full: one
        # past the highest the tenant ever opened.
        self._next_number = next_number

    def add(self, user_id: str) -> int:
        open_shards = sorted(n for n, s in self._shards.items() if s.has_room)
        if open_shards:
            shard = self._shards[open_shards[0]]
        else:
            shard = Shard(self._next_number, [])
            self._shards[shard.number] = shard
            self._next_number += 1
        shard.members.append(user_id)
        shard.changed = True
        return shard.number

    def remove(self, user_id: str, number: int) -> None:
        shard = self._shards.get(number)
        if shard is None:
            raise KeyError(f"shard {number} was not loaded")
        if user_id in shard.members:
            shard.members.remove(user_id)
            shard.changed = True

    @property
    def changed_shards(self) -> list[Shard]:
        return [s for s in self._shards.values() if s.changed]
