"""Structured-output validation and the repair re-ask text."""

from __future__ import annotations

import json
from typing import Any

from agents.checks.schema_check import build_repair_prompt, check_schema, unwrap_schema

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^SW[0-9]{6}$"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}},
        "total": {"type": "number", "minimum": 0},
    },
    "required": ["order_id", "total"],
    "additionalProperties": False,
}
WRAPPED = {"name": "order", "schema": ORDER, "strict": True}


def test_text_format_is_not_judged() -> None:
    assert check_schema("anything at all", "text", None).schema_valid is None
    assert check_schema("anything at all", None, None).schema_valid is None


def test_json_object_accepts_an_object_only() -> None:
    ok = check_schema(' {"a": 1} \n', "json_object")
    assert ok.schema_valid is True and ok.value == {"a": 1}
    arr = check_schema("[1, 2]", "json_object")
    assert arr.schema_valid is False and "JSON object" in (arr.error or "")


def test_broken_json_explains_where() -> None:
    result = check_schema('{"a": 1', "json_object")
    assert result.schema_valid is False
    assert result.error is not None and "line 1 column" in result.error


def test_code_fences_and_empty_answers_are_rejected() -> None:
    fenced = check_schema('```json\n{"a": 1}\n```', "json_object")
    assert fenced.schema_valid is False and "code fence" in (fenced.error or "")
    assert check_schema("   ", "json_object").schema_valid is False


def test_schema_valid_answer() -> None:
    answer = json.dumps({"order_id": "SW123456", "items": [{"qty": 2}], "total": 19.5})
    assert check_schema(answer, "json_schema", WRAPPED).schema_valid is True
    assert check_schema(answer, "json_schema", ORDER).schema_valid is True


def test_schema_errors_name_the_location() -> None:
    answer = json.dumps({"order_id": "X1", "items": [{"qty": "two"}], "total": -3, "note": "hi"})
    result = check_schema(answer, "json_schema", WRAPPED)
    assert result.schema_valid is False
    text = " | ".join(result.errors)
    assert "$.items[0].qty" in text and "$.total" in text and "$.order_id" in text
    assert "'note' was unexpected" in text


def test_unwrap_only_unwraps_the_openai_wrapper() -> None:
    assert unwrap_schema(WRAPPED) == ORDER
    assert unwrap_schema(ORDER) == ORDER
    a_property_called_schema = {"type": "object", "properties": {"schema": {"type": "string"}}}
    assert unwrap_schema(a_property_called_schema) == a_property_called_schema
    assert unwrap_schema(None) is None


def test_an_unusable_schema_falls_back_to_syntax_only() -> None:
    broken = check_schema('{"a": 1}', "json_schema", {"type": "not-a-type"})
    assert broken.schema_valid is True and broken.schema_usable is False
    remote = check_schema('{"a": 1}', "json_schema", {"$ref": "https://example.com/order.json"})
    assert remote.schema_valid is True and remote.schema_usable is False


def test_pathological_json_does_not_raise() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert check_schema(deep, "json_object").schema_valid is False


def test_repair_prompt_lists_problems_and_the_schema() -> None:
    result = check_schema(json.dumps({"order_id": 7}), "json_schema", WRAPPED)
    prompt = build_repair_prompt(result, "json_schema", WRAPPED)
    assert "$.order_id" in prompt and "'total' is a required property" in prompt
    assert '"required": ["order_id", "total"]' in prompt
    assert "no markdown code fences" in prompt


def test_repair_prompt_for_json_object() -> None:
    result = check_schema("not json", "json_object")
    prompt = build_repair_prompt(result, "json_object")
    assert "single JSON object" in prompt and "not valid JSON" in prompt
