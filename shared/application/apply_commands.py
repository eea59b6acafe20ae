"""Apply subscription commands to Table Storage, exactly once in effect.

Each attempt reads the rows it will change, decides with the domain rule, and
writes subscriptions, events and shard membership in one transaction guarded
by the ETags it read. A lost race (another instance applied something in
between) re-reads and decides again; a duplicate delivery finds its own
version stored and changes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.adapters.storage_errors import (
    MAX_TRANSACTION_ENTITIES,
    ConcurrencyConflictError,
)
from shared.adapters.subscription_table import (
    ApplySnapshot,
    ApplyWrite,
    StoredSubscription,
    SubscriptionTable,
)
from shared.adapters.tenant_directory import TenantDirectory
from shared.domain.commands import Change, SubscriptionCommand
from shared.domain.shards import ShardAllocator
from shared.domain.subscriptions import (
    SkipReason,
    Subscription,
    SubscriptionState,
    decide,
    evolve,
)

logger = logging.getLogger(__name__)

# Changes planned per transaction attempt: each costs two entities (row and
# event) plus the shards it touches, and a transaction holds at most 100.
CHANGES_PER_TRANSACTION = 45
# A batch for a tenant with at most this many subscription rows reads them all
# in one query rather than 14 ids per query.
SMALL_TENANT_ROWS = 1000


class ApplyConflictError(RuntimeError):
    """Conflicts persisted past the retry bound: the queue retries later."""


@dataclass
class ApplyResult:
    applied: int = 0
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    conflicts: int = 0


class CommandApplier:
    def __init__(
        self,
        table: SubscriptionTable,
        tenants: TenantDirectory | None = None,
        max_attempts: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._tenants = tenants
        self._max_attempts = max_attempts
        self._sleep = sleep

    def apply(self, command: SubscriptionCommand) -> ApplyResult:
        result = ApplyResult()
        changes = list(command.changes)
        known = None
        if len(changes) > CHANGES_PER_TRANSACTION:
            # Each user appears once per command, so rows read up front stay
            # valid for its later chunks unless another instance changes
            # them, which the ETag check catches.
            known = self._table.read_small_tenant(command.tenant_id, SMALL_TENANT_ROWS)
        for start in range(0, len(changes), CHANGES_PER_TRANSACTION):
            self._apply_chunk(
                command,
                changes[start : start + CHANGES_PER_TRANSACTION],
                result,
                known,
            )
        logger.info(
            "command %s (request %s) tenant %s version %s: %d applied, "
            "skipped %s, %d conflicts retried",
            command.command_id,
            command.request_id or "-",
            command.tenant_id,
            command.version,
            result.applied,
            dict(result.skipped) or "none",
            result.conflicts,
        )
        return result

    def _apply_chunk(
        self,
        command: SubscriptionCommand,
        changes: list[Change],
        result: ApplyResult,
        known: dict[str, StoredSubscription] | None = None,
    ) -> None:
        for attempt in range(1, self._max_attempts + 1):
            # Rows read up front serve the first attempt only: after a lost
            # race the rows are read afresh.
            snapshot = self._table.read_for_apply(
                command.tenant_id,
                [c.user_id for c in changes],
                known if attempt == 1 else None,
            )
            write, skipped = self._plan(command, changes, snapshot)
            if write.entity_count > MAX_TRANSACTION_ENTITIES:
                # Deregisters spread over many shards: halve and go again.
                middle = len(changes) // 2
                self._apply_chunk(command, changes[:middle], result, known)
                self._apply_chunk(command, changes[middle:], result, known)
                return
            if write.entity_count:
                if self._tenants and write.tenant and snapshot.tenant is None:
                    # The tenant's first shard: list the tenant before any
                    # shard exists, so the fan-out can never miss it. Harmless
                    # if the transaction then fails: a listed tenant without
                    # shards costs the fan-out one read.
                    self._tenants.ensure(command.tenant_id)
                try:
                    self._table.commit(command.tenant_id, write)
                except ConcurrencyConflictError as conflict:
                    result.conflicts += 1
                    logger.info(
                        "command %s attempt %d lost a race on %s; re-reading",
                        command.command_id,
                        attempt,
                        conflict.row_key,
                    )
                    # Exponential back-off with full jitter: many appliers
                    # racing for one tenant's open shard spread out instead
                    # of colliding in step again.
                    self._sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
                    continue
            result.applied += len(write.events)
            result.skipped.update(skipped)
            return
        raise ApplyConflictError(
            f"command {command.command_id} for tenant {command.tenant_id} still "
            f"conflicted after {self._max_attempts} attempts"
        )

    def _plan(
        self,
        command: SubscriptionCommand,
        changes: list[Change],
        snapshot: ApplySnapshot,
    ) -> tuple[ApplyWrite, list[SkipReason]]:
        allocator = ShardAllocator(
            list(snapshot.shards.values()), next_number=snapshot.shard_count
        )
        write = ApplyWrite(subscriptions=[], events=[], shards=[])
        skipped: list[SkipReason] = []
        for change in changes:
            stored = snapshot.subscriptions.get(change.user_id)
            current = stored.subscription if stored else None
            outcome = decide(current, change, command)
            if isinstance(outcome, SkipReason):
                skipped.append(outcome)
                continue
            shard = _move_between_shards(
                change.user_id, current, outcome.new_state, allocator
            )
            new = evolve(outcome, shard, current)
            write.subscriptions.append((new, stored.etag if stored else None))
            write.events.append(outcome)
        write.shards = allocator.changed_shards
        opened = [s.number for s in write.shards if s.etag is None]
        if opened:
            # The count goes up in the same transaction as the new shard, and
            # two attempts opening one concurrently collide on this row.
            write.tenant = (
                max(opened) + 1,
                snapshot.tenant.etag if snapshot.tenant else None,
            )
        return write, skipped


def _move_between_shards(
    user_id: str,
    current: Subscription | None,
    new_state: SubscriptionState,
    allocator: ShardAllocator,
) -> int | None:
    """The shard the agent is polled in after the change (None when removed)."""
    current_shard = (
        current.shard
        if current is not None and current.state is SubscriptionState.ACTIVE
        else None
    )
    if new_state is SubscriptionState.ACTIVE:
        if current_shard is not None:
            return current_shard
        return allocator.add(user_id)
    if current_shard is not None:
        allocator.remove(user_id, current_shard)
    return None
