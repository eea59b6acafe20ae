"""Table Storage adapter for subscriptions, their event log and poll shards.

One partition per tenant holds three kinds of rows, so that a subscription,
its event and its shard can change together in one atomic transaction:

    sub|<userId>              the read model: current state and version
    evt|<version>|<userId>    the append-only event log (key comes from the
                              command, so a redelivery cannot append twice)
    shard|<number:05d>        the members of one poll shard (at most 650)
    tenant                    the tenant's shard count: one past the highest
                              shard number opened, written in the transaction
                              that opens a shard, so the count and the shards
                              never disagree; it exists only once the tenant
                              directory lists the tenant
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    TableClient,
    TableEntity,
    UpdateMode,
)

from shared.adapters import table_transactions
from shared.adapters.storage_errors import StorageError
from shared.domain.shards import SHARD_CAPACITY, Shard
from shared.domain.subscriptions import (
    EventType,
    PollProblem,
    Subscription,
    SubscriptionEvent,
    SubscriptionState,
)

logger = logging.getLogger(__name__)

SUB_PREFIX = "sub|"
EVENT_PREFIX = "evt|"
SHARD_PREFIX = "shard|"
TENANT_ROW = "tenant"
SHARD_COUNT = "shardCount"
# Azure Table Storage accepts at most 15 comparisons in one $filter.
_MAX_FILTER_COMPARISONS = 15
# The character after "|" sorts after every key that starts with the prefix.
_PREFIX_END = "}"


def sub_key(user_id: str) -> str:
    return f"{SUB_PREFIX}{user_id}"


def event_key(version: str, user_id: str) -> str:
    return f"{EVENT_PREFIX}{version}|{user_id}"


def shard_key(number: int) -> str:
    return f"{SHARD_PREFIX}{number:05d}"


@dataclass(frozen=True)
class StoredSubscription:
    subscription: Subscription
    etag: str


@dataclass
class ApplySnapshot:
    """What one apply attempt read: the rows it may change, with their ETags."""

    subscriptions: dict[str, StoredSubscription] = field(default_factory=dict)
    shards: dict[int, Shard] = field(default_factory=dict)
    tenant: TenantRow | None = None

    @property
    def shard_count(self) -> int:
        return self.tenant.shard_count if self.tenant else 0


@dataclass(frozen=True)
class TenantRow:
    """The tenant's own row in its partition, with the ETag that guards it."""

    shard_count: int
    etag: str


@dataclass
class ApplyWrite:
    """Everything one apply attempt writes, atomically."""

    subscriptions: list[tuple[Subscription, str | None]]
    events: list[SubscriptionEvent]
    shards: list[Shard]
    # The tenant row as it must be written when the attempt opens a shard
    # (its new shard count, and the ETag it was read with); None otherwise.
    tenant: tuple[int, str | None] | None = None

    @property
    def entity_count(self) -> int:
        return (
            len(self.subscriptions)
            + len(self.events)
            + len(self.shards)
            + (self.tenant is not None)
        )


@dataclass(frozen=True)
class SubscriptionPage:
    items: list[Subscription]
    continuation: dict[str, str] | None


class SubscriptionTable:
    def __init__(self, client: TableClient, reader_threads: int = 4) -> None:
        self._client = client
        self._name = client.table_name
        self._readers = ThreadPoolExecutor(
            max_workers=reader_threads, thread_name_prefix="subscription-read"
        )

    # ---- apply step -----------------------------------------------------

    def read_for_apply(
        self,
        tenant_id: str,
        user_ids: list[str],
        known: dict[str, StoredSubscription] | None = None,
    ) -> ApplySnapshot:
        """The subscriptions of ``user_ids``, the tenant's shards with room,
        the tenant row, and the shards the active ones among them are polled
        in.

        The first query carries the open-shard and tenant-row clauses, so a
        single command costs one read, even one that opens a shard. With
        ``known`` (every subscription row of the tenant, read moments ago) the
        subscriptions are taken from it instead; a row changed since then
        fails the write's ETag check, which re-reads.
        """
        snapshot = ApplySnapshot()
        if known is not None:
            snapshot.subscriptions = {u: known[u] for u in user_ids if u in known}
            user_ids = []
        # The SDK substitutes @names only between spaces: keep them space-bound.
        open_clause = (
            "( RowKey ge @s0 and RowKey lt @s1 and memberCount lt @cap ) "
            "or RowKey eq @tenant"
        )
        open_params = {
            "s0": SHARD_PREFIX,
            "s1": SHARD_PREFIX[:-1] + _PREFIX_END,
            "cap": SHARD_CAPACITY,
            "tenant": TENANT_ROW,
        }
        first_size = _MAX_FILTER_COMPARISONS - 1 - 4
        later_size = _MAX_FILTER_COMPARISONS - 1
        groups = [user_ids[:first_size]] + [
            user_ids[i : i + later_size]
            for i in range(first_size, len(user_ids), later_size)
        ]
        queries = [
            self._key_query(tenant_id, [sub_key(u) for u in group], extra)
            for group, extra in zip(
                groups,
                [(open_clause, open_params)] + [None] * (len(groups) - 1),
                strict=True,
            )
            if group or extra
        ]
        for entity in self._run_queries(queries):
            self._collect(entity, snapshot)
        missing_shards = {
            stored.subscription.shard
            for stored in snapshot.subscriptions.values()
            if stored.subscription.shard is not None
        } - set(snapshot.shards)
        self.load_shards(tenant_id, missing_shards, snapshot)
        return snapshot

    def read_small_tenant(
        self, tenant_id: str, limit: int
    ) -> dict[str, StoredSubscription] | None:
        """Every subscription row of the tenant, in one query page, if it has
        at most ``limit``; None otherwise.

        A large batch for a new or small tenant (the usual onboarding) then
        costs one read instead of one query per 14 ids: a filter holds at most
        15 comparisons.
        """

        def fetch() -> dict[str, StoredSubscription] | None:
            pages = self._client.query_entities(
                "PartitionKey eq @pk and RowKey ge @r0 and RowKey lt @r1",
                parameters={
                    "pk": tenant_id,
                    "r0": SUB_PREFIX,
                    "r1": SUB_PREFIX[:-1] + _PREFIX_END,
                },
                results_per_page=limit,
            ).by_page()
            rows = list(next(pages, []))
            if pages.continuation_token:  # type: ignore[attr-defined]
                return None
            snapshot = ApplySnapshot()
            for entity in rows:
                self._collect(entity, snapshot)
            return snapshot.subscriptions

        result: dict[str, StoredSubscription] | None = self._guard(fetch)
        return result

    def load_shards(
        self, tenant_id: str, numbers: Iterable[int], snapshot: ApplySnapshot
    ) -> None:
        keys = [shard_key(n) for n in sorted(set(numbers))]
        size = _MAX_FILTER_COMPARISONS - 1
        queries = [
            self._key_query(tenant_id, keys[i : i + size], None)
            for i in range(0, len(keys), size)
        ]
        for entity in self._run_queries(queries):
            self._collect(entity, snapshot)

    def commit(self, tenant_id: str, write: ApplyWrite) -> None:
        """Write subscriptions, events and shards in one transaction, each
        guarded by the ETag it was read with (or inserted when it was absent).

        Raises ConcurrencyConflictError, with nothing written, if any of them
        changed since it was read.
        """
        operations: list[Any] = []
        for subscription, etag in write.subscriptions:
            entity = _subscription_entity(subscription)
            operations.append(
                table_transactions.guarded_write(entity, etag, UpdateMode.REPLACE)
            )
        for event in write.events:
            operations.append(("create", _event_entity(event)))
        for shard in write.shards:
            entity = _shard_entity(tenant_id, shard)
            # MERGE keeps the lease columns the poll fan-out owns.
            operations.append(
                table_transactions.guarded_write(entity, shard.etag, UpdateMode.MERGE)
            )
        if write.tenant is not None:
            shard_count, etag = write.tenant
            entity = {
                "PartitionKey": tenant_id,
                "RowKey": TENANT_ROW,
                SHARD_COUNT: shard_count,
            }
            operations.append(
                table_transactions.guarded_write(entity, etag, UpdateMode.REPLACE)
            )
        table_transactions.submit(self._client, operations)

    # ---- queries --------------------------------------------------------

    def get(self, tenant_id: str, user_id: str) -> Subscription | None:
        entity = self._read_row(tenant_id, user_id)
        return None if entity is None else _subscription_from(entity)

    def list_page(
        self,
        tenant_id: str,
        state: SubscriptionState | None,
        limit: int,
        continuation: dict[str, str] | None,
    ) -> SubscriptionPage:
        query = "PartitionKey eq @pk and RowKey ge @r0 and RowKey lt @r1"
        params: dict[str, Any] = {
            "pk": tenant_id,
            "r0": SUB_PREFIX,
            "r1": SUB_PREFIX[:-1] + _PREFIX_END,
        }
        if state is not None:
            query += " and state eq @state"
            params["state"] = state.value

        def fetch() -> SubscriptionPage:
            pages = self._client.query_entities(
                query, parameters=params, results_per_page=limit
            ).by_page(
                # The Tables SDK's tokens are dicts, though typed as str.
                continuation_token=continuation  # type: ignore[arg-type]
            )
            items = [_subscription_from(e) for e in next(pages, [])]
            return SubscriptionPage(items, pages.continuation_token)  # type: ignore[attr-defined]

        return self._guard(fetch)

    def events(self, tenant_id: str) -> Iterator[SubscriptionEvent]:
        """The tenant's event log in version order."""
        entities = self._client.query_entities(
            "PartitionKey eq @pk and RowKey ge @e0 and RowKey lt @e1",
            parameters={
                "pk": tenant_id,
                "e0": EVENT_PREFIX,
                "e1": EVENT_PREFIX[:-1] + _PREFIX_END,
            },
        )
        try:
            for entity in entities:
                yield SubscriptionEvent(
                    event_type=EventType(entity["eventType"]),
                    tenant_id=entity["PartitionKey"],
                    user_id=entity["userId"],
                    version=entity["version"],
                    command_id=entity["commandId"],
                    occurred_at=entity["occurredAt"],
                )
        except AzureError as error:
            raise StorageError(f"event log of {tenant_id} not read: {error}") from error

    def record_poll_problem(
        self, tenant_id: str, user_id: str, shard: int, problem: str
    ) -> None:
        """Notes on the subscription why its presence cannot be read, if it
        is still the active one in ``shard``. Guarded by the ETag read: a
        register or deregister applied meanwhile wins, and the note is not
        put on a row it no longer concerns. The next change clears it."""
        entity = self._read_row(tenant_id, user_id)
        if entity is None or entity.get("shard") != shard:
            return
        if entity.get("state") != SubscriptionState.ACTIVE.value:
            return
        entity["pollProblem"] = problem
        entity["pollProblemAt"] = datetime.now(UTC)
        self._write_poll_problem(entity)

    def clear_poll_problem(self, tenant_id: str, user_id: str) -> None:
        """Removes the note once Graph answers for the user again."""
        entity = self._read_row(tenant_id, user_id)
        if entity is None or "pollProblem" not in entity:
            return
        del entity["pollProblem"]
        entity.pop("pollProblemAt", None)
        self._write_poll_problem(entity)

    def _read_row(self, tenant_id: str, user_id: str) -> TableEntity | None:
        """The subscription row by key (a point read), with its ETag."""

        def read() -> TableEntity | None:
            try:
                return self._client.get_entity(tenant_id, sub_key(user_id))
            except ResourceNotFoundError:
                return None

        row: TableEntity | None = self._guard(read)
        return row

    def _write_poll_problem(self, entity: TableEntity) -> None:
        try:
            # REPLACE, so a cleared note's columns go; the ETag keeps it from
            # overwriting a change applied since the read.
            self._client.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            logger.info(
                "subscription %s/%s changed meanwhile; poll note left to the next poll",
                entity["PartitionKey"],
                entity["RowKey"],
            )
        except AzureError as error:
            raise StorageError(f"table {self._name}: {error}") from error

    def ping(self) -> None:
        """Raises StorageError unless the table answers."""
        self._guard(
            lambda: next(iter(self._client.list_entities(results_per_page=1)), None)
        )

    # ---- helpers --------------------------------------------------------

    def _key_query(
        self,
        tenant_id: str,
        row_keys: list[str],
        extra: tuple[str, dict[str, Any]] | None,
    ) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"pk": tenant_id}
        clauses = []
        for index, key in enumerate(row_keys):
            params[f"k{index}"] = key
            clauses.append(f"RowKey eq @k{index}")
        if extra is not None:
            clauses.append(extra[0])
            params.update(extra[1])
        return f"PartitionKey eq @pk and ( {' or '.join(clauses)} )", params

    def _run_queries(
        self, queries: list[tuple[str, dict[str, Any]]]
    ) -> Iterator[TableEntity]:
        def run(query: tuple[str, dict[str, Any]]) -> list[TableEntity]:
            return list(self._client.query_entities(query[0], parameters=query[1]))

        if len(queries) == 1:
            results = [self._guard(lambda: run(queries[0]))]
        else:
            results = self._guard(lambda: list(self._readers.map(run, queries)))
        for entities in results:
            yield from entities

    def _collect(self, entity: TableEntity, snapshot: ApplySnapshot) -> None:
        row_key: str = entity["RowKey"]
        if row_key.startswith(SUB_PREFIX):
            subscription = _subscription_from(entity)
            snapshot.subscriptions[subscription.user_id] = StoredSubscription(
                subscription, str(entity.metadata["etag"])
            )
        elif row_key == TENANT_ROW:
            snapshot.tenant = TenantRow(
                shard_count=int(entity.get(SHARD_COUNT) or 0),
                etag=str(entity.metadata["etag"]),
            )
        elif row_key.startswith(SHARD_PREFIX):
            members = entity.get("members") or ""
            number = int(row_key[len(SHARD_PREFIX) :])
            snapshot.shards[number] = Shard(
                number=number,
                members=members.split(",") if members else [],
                etag=entity.metadata["etag"],
            )

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except HttpResponseError as error:
            raise StorageError(
                f"table {self._name}: {error.status_code} {error.reason}"
            ) from error
        except AzureError as error:
            raise StorageError(f"table {self._name}: {error}") from error


def _subscription_entity(subscription: Subscription) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": subscription.tenant_id,
        "RowKey": sub_key(subscription.user_id),
        "userId": subscription.user_id,
        "state": subscription.state.value,
        "version": subscription.version,
        "updatedAt": subscription.updated_at,
        "commandId": subscription.command_id,
    }
    if subscription.shard is not None:
        entity["shard"] = subscription.shard
    if subscription.poll_problem is not None:
        entity["pollProblem"] = subscription.poll_problem.detail
        entity["pollProblemAt"] = subscription.poll_problem.noted_at
    return entity


def _subscription_from(entity: dict[str, Any]) -> Subscription:
    updated_at: datetime = entity["updatedAt"]
    problem, noted_at = entity.get("pollProblem"), entity.get("pollProblemAt")
    return Subscription(
        poll_problem=(
            PollProblem(problem, noted_at)
            if isinstance(problem, str) and isinstance(noted_at, datetime)
            else None
        ),
        tenant_id=entity["PartitionKey"],
        user_id=entity["userId"],
        state=SubscriptionState(entity["state"]),
        version=entity["version"],
        updated_at=updated_at,
        command_id=entity["commandId"],
        shard=entity.get("shard"),
    )


def _event_entity(event: SubscriptionEvent) -> dict[str, Any]:
    return {
        "PartitionKey": event.tenant_id,
        "RowKey": event_key(event.version, event.user_id),
        "eventType": event.event_type.value,
        "userId": event.user_id,
        "version": event.version,
        "commandId": event.command_id,
        "occurredAt": event.occurred_at,
    }


def _shard_entity(tenant_id: str, shard: Shard) -> dict[str, Any]:
    return {
        "PartitionKey": tenant_id,
        "RowKey": shard_key(shard.number),
        "members": ",".join(shard.members),
        "memberCount": len(shard.members),
    }
