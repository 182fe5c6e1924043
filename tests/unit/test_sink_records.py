"""The sink's event check uses a validator derived from the Event schema that builds no objects;
it must be derived from the schema itself (same fields, same rules), and a schema it cannot
derive safely (validators written in Python) must leave the model's own validator in place."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import SchemaValidator, ValidationError

from schemas import Event
from sluice.warehouse import records
from sluice.warehouse.records import STRICT, check_event


class Checked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str

    @field_validator("name")
    @classmethod
    def no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("blank")
        return value


class Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = 0


def test_the_event_check_uses_the_derived_validator() -> None:
    assert records._STRICT_EVENT is not Event.__pydantic_validator__
    fields = records._STRICT_EVENT.validate_json(
        orjson.dumps(
            {
                "event_id": "r/validate",
                "request_id": "r",
                "correlation_id": "c",
                "tenant": "t",
                "stage": "validate",
                "status": "ok",
                "ts": "2026-12-03T10:00:00Z",
            }
        ),
        strict=True,
    )
    assert isinstance(fields, tuple) and fields[0]["summary"] is None and fields[0]["flags"] == []


def test_a_schema_with_python_validators_is_not_derived() -> None:
    with pytest.raises(ValueError, match="function"):
        records._fields_only(Checked.__pydantic_core_schema__)


def test_the_derived_validator_keeps_the_models_rules() -> None:
    derived = SchemaValidator(records._fields_only(Plain.__pydantic_core_schema__))
    assert derived.validate_json(b'{"name": "a"}', strict=True)[0] == {"name": "a", "size": 0}
    for bad in (b'{"name": "a", "extra": 1}', b'{"size": 1}', b'{"name": "a", "size": "1"}'):
        with pytest.raises(ValidationError):
            derived.validate_json(bad, strict=True)
        with pytest.raises(ValidationError):
            Plain.model_validate_json(bad, strict=True)


def test_an_unknown_field_in_the_summary_is_malformed() -> None:
    base = {
        "event_id": "r/validate",
        "request_id": "r",
        "correlation_id": "c",
        "tenant": "t",
        "stage": "validate_response",
        "status": "ok",
        "ts": "2026-12-03T10:00:00Z",
        "summary": {"received_at": "2026-12-03T10:00:00Z", "finished_at": "2026-12-03T10:00:01Z",
                    "status": "ok", "latency_ms": 1000.0},
    }  # fmt: skip
    assert check_event(orjson.dumps(base))[0] == STRICT
    verdict, ends, reason = check_event(orjson.dumps({**base, "summary": {**base["summary"], "x": 1}}))
    assert verdict == records.MALFORMED and not ends and "summary.x" in reason
