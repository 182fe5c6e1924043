"""request_ids that carry their tenant, so any process can tell who owns one without a lookup.

A request_id is still a version-5 UUID, derived from its Kafka record (a redelivered record gets
the same id), but its last 6 bytes are a tag of the tenant: SHA-256 - or HMAC-SHA256 with
`SLUICE_REQUEST_ID_KEY` - over the tenant and the id's first 10 bytes. A rating is then refused
for another tenant's request by whichever gateway receives it, after any restart, with nothing
to look up and no sink lag to wait for: the id names its owner. Without the key a tenant could
mint ids of its own that name no request (harmless: they rate nothing); with it, only ids the
pipeline issued pass."""

from __future__ import annotations

import hashlib
import hmac
import uuid

TAG_BYTES = 6  # 48 bits: a mistyped or guessed id passes for a tenant about once in 2.8e14 tries
_HEAD_BYTES = 16 - TAG_BYTES  # holds the UUID's version and variant bits, which stay as uuid5 set them


def _tag(tenant: str, head: bytes, key: bytes) -> bytes:
    message = tenant.encode() + b"\0" + head
    if key:
        return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]
    return hashlib.sha256(message).digest()[:TAG_BYTES]


def bind_to_tenant(base: uuid.UUID, tenant: str, key: bytes = b"") -> str:
    """`base` with its last bytes replaced by the tenant's tag, in canonical form."""
    head = base.bytes[:_HEAD_BYTES]
    return str(uuid.UUID(bytes=head + _tag(tenant, head, key)))


def owned_by(request_id: str, tenant: str, key: bytes = b"") -> bool:
    """Was `request_id` issued for `tenant`? False for anything else, malformed ids included
    (only the canonical form counts: the warehouse joins ratings on the exact string)."""
    try:
        parsed = uuid.UUID(request_id)
    except ValueError:
        return False
    if str(parsed) != request_id:
        return False
    head, tag = parsed.bytes[:_HEAD_BYTES], parsed.bytes[_HEAD_BYTES:]
    return hmac.compare_digest(tag, _tag(tenant, head, key))
