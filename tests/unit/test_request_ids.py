"""request_ids carry their tenant (sluice/request_ids.py): ownership is decided from the id
alone, so any gateway refuses a rating of another tenant's request, also after a restart."""

from __future__ import annotations

import uuid

import pytest

from sluice.outcome import request_id_for
from sluice.request_ids import bind_to_tenant, owned_by


def test_a_request_id_is_a_deterministic_uuid5_owned_by_its_tenant_only() -> None:
    first = request_id_for("sluice.requests", 3, 41, 1_700_000_000_000, tenant="acme")
    again = request_id_for("sluice.requests", 3, 41, 1_700_000_000_000, tenant="acme")
    parsed = uuid.UUID(first)
    assert first == again == str(parsed)  # canonical, and the same for a redelivered record
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122
    assert owned_by(first, "acme")
    assert not owned_by(first, "globex")
    assert not owned_by(first, "")


def test_the_same_record_claimed_by_two_tenants_gets_two_ids() -> None:
    acme = request_id_for("sluice.requests", 0, 7, tenant="acme")
    globex = request_id_for("sluice.requests", 0, 7, tenant="globex")
    assert acme != globex
    assert acme[:20] == globex[:20]  # the record part; only the tenant tag differs


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "req-1",
        "chatcmpl-abc",
        str(uuid.uuid4()),  # a well-formed id no request had
        str(uuid.uuid5(uuid.NAMESPACE_URL, "x")),
    ],
)
def test_ids_the_pipeline_never_issued_are_owned_by_nobody(forged: str) -> None:
    assert not owned_by(forged, "acme")


def test_only_the_canonical_form_counts() -> None:
    """The warehouse joins ratings on the exact string: another spelling would rate nothing."""
    issued = request_id_for("sluice.requests", 1, 2, tenant="acme")
    spellings = [issued.upper(), issued.replace("-", ""), f"{{{issued}}}", f"urn:uuid:{issued}"]
    assert [owned_by(spelled, "acme") for spelled in spellings] == [False] * 4


def test_with_a_key_only_ids_issued_under_that_key_pass() -> None:
    base = uuid.uuid5(uuid.NAMESPACE_URL, "record")
    keyed = bind_to_tenant(base, "acme", b"secret-1")
    assert owned_by(keyed, "acme", b"secret-1")
    assert not owned_by(keyed, "acme", b"secret-2")
    assert not owned_by(keyed, "acme")  # unkeyed: a tenant cannot mint ids without the key
    assert not owned_by(bind_to_tenant(base, "acme"), "acme", b"secret-1")
