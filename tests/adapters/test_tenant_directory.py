"""The tenant directory against Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.services import Services


def test_a_shorter_cool_down_never_cuts_a_longer_one(services: Services) -> None:
    tenant = str(uuid.uuid4())
    now = datetime.now(UTC).replace(microsecond=0)

    services.tenants.cool_down(tenant, now + timedelta(seconds=300))
    services.tenants.cool_down(tenant, now + timedelta(seconds=12))

    assert services.tenants.cool_down_until(tenant) == now + timedelta(seconds=300)


def test_a_longer_cool_down_extends_a_shorter_one(services: Services) -> None:
    tenant = str(uuid.uuid4())
    now = datetime.now(UTC).replace(microsecond=0)
    services.tenants.ensure(tenant)

    services.tenants.cool_down(tenant, now + timedelta(seconds=12))
    services.tenants.cool_down(tenant, now + timedelta(seconds=300))

    assert services.tenants.cool_down_until(tenant) == now + timedelta(seconds=300)
    assert tenant in set(services.tenants.tenant_ids())
