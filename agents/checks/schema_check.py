"""Structured-output validity: does the answer parse as JSON and satisfy the requested JSON Schema?

A client that asked for JSON will feed the answer to a parser, so "almost JSON" is a failure. The
error text is written for the model as much as for people: it goes verbatim into the repair
re-ask, so it names the location and the rule that failed, briefly, without echoing huge values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import referencing.exceptions

log = logging.getLogger(__name__)

MAX_ERRORS = 5
MAX_SCHEMA_CHARS_IN_PROMPT = 4000
MAX_CONTENT_CHARS = 2_000_000
_STRUCTURED = frozenset({"json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class SchemaResult:
    """schema_valid is None when no structured format was asked for; errors are human-readable."""

    schema_valid: bool | None
    errors: tuple[str, ...] = ()
    value: Any = None
    schema_usable: bool = True

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None


def unwrap_schema(json_schema: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Accept both the bare schema and OpenAI's wrapper {"name": ..., "schema": {...}, "strict": ...}."""
    if not isinstance(json_schema, Mapping):
        return None
    inner = json_schema.get("schema")
    if isinstance(inner, Mapping) and (
        {"name", "strict", "description"} & set(json_schema) or len(json_schema) == 1
    ):
        return inner
    return json_schema


def check_schema(
    content: str, format_type: str | None, json_schema: Mapping[str, Any] | None = None
) -> SchemaResult:
    """Validate content for response_format type "json_object" or "json_schema"; other types pass as None."""
    if format_type not in _STRUCTURED:
        return SchemaResult(None)
    if not isinstance(content, str):
        return SchemaResult(False, ("the answer is not text",))
    if len(content) > MAX_CONTENT_CHARS:
        return SchemaResult(False, (f"the answer is longer than {MAX_CONTENT_CHARS} characters",))
    parsed, problem = _parse(content)
    if problem is not None:
        return SchemaResult(False, (problem,))
    if format_type == "json_object" or json_schema is None:
        if format_type == "json_object" and not isinstance(parsed, dict):
            return SchemaResult(
                False, (f"expected a JSON object at the top level, got {_json_type(parsed)}",), parsed
            )
        return SchemaResult(True, (), parsed)
    schema = unwrap_schema(json_schema)
    validator = _validator_for(_schema_key(schema)) if schema is not None else None
    if validator is None:
        # The request's schema itself is unusable: judge JSON syntax only rather than fail the answer.
        return SchemaResult(True, (), parsed, schema_usable=False)
    return _validate(validator, parsed)


def _parse(content: str) -> tuple[Any, str | None]:
    text = content.strip()
    if not text:
        return None, "the answer is empty; a JSON value was required"
    if text.startswith("```"):
        return None, "the answer is wrapped in a markdown code fence; send the bare JSON only"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except (RecursionError, ValueError) as exc:
        return None, f"not valid JSON: {type(exc).__name__}"


def _schema_key(schema: Mapping[str, Any]) -> str | None:
    try:
        return json.dumps(schema, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return None


@lru_cache(maxsize=512)
def _validator_for(key: str | None) -> Any:
    """Compiled validator per distinct schema (tenants reuse a handful); None if the schema is invalid."""
    if key is None:
        return None
    try:
        schema = json.loads(key)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        return cls(schema, format_checker=cls.FORMAT_CHECKER)
    except jsonschema.exceptions.SchemaError as exc:
        log.info("unusable json_schema in request: %s", exc.message)
        return None
    except (ValueError, TypeError, RecursionError, LookupError) as exc:
        log.info("unusable json_schema in request: %s", type(exc).__name__)
        return None
    except Exception:
        log.exception("compiling the request's json_schema failed unexpectedly")
        return None


def _validate(validator: Any, parsed: Any) -> SchemaResult:
    errors: list[str] = []
    try:
        found = sorted(
            validator.iter_errors(parsed), key=lambda e: (len(e.absolute_path), str(e.absolute_path))
        )
        for err in found[:MAX_ERRORS]:
            errors.append(f"at {_path(err.absolute_path)}: {_shorten(err.message)}")
        if len(found) > MAX_ERRORS:
            errors.append(f"and {len(found) - MAX_ERRORS} more problem(s)")
    except (referencing.exceptions.Unresolvable, RecursionError, ValueError, TypeError, LookupError) as exc:
        # An unresolvable $ref or a schema the validator chokes on is the request's fault, not the
        # answer's: judge JSON syntax only.
        log.info("json_schema validation could not run: %s", type(exc).__name__)
        return SchemaResult(True, (), parsed, schema_usable=False)
    except Exception:
        log.exception("json_schema validation failed unexpectedly")
        return SchemaResult(True, (), parsed, schema_usable=False)
    return SchemaResult(not errors, tuple(errors), parsed)


def _path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def build_repair_prompt(
    result: SchemaResult, format_type: str | None, json_schema: Mapping[str, Any] | None = None
) -> str:
    """The user-turn text for a repair re-ask: what was wrong, and what to send instead."""
    problems = "\n".join(f"- {e}" for e in result.errors) or "- the answer was not valid JSON"
    lines = [
        "Your previous answer could not be accepted because it is not valid for the required output format.",
        "Problems found:",
        problems,
    ]
    schema = unwrap_schema(json_schema) if format_type == "json_schema" else None
    if schema is not None:
        text = _schema_key(schema) or "{}"
        if len(text) > MAX_SCHEMA_CHARS_IN_PROMPT:
            text = text[:MAX_SCHEMA_CHARS_IN_PROMPT] + " …(truncated)"
        lines += ["Answer again with a single JSON value that satisfies this JSON Schema:", text]
    else:
        lines.append("Answer again with a single JSON object.")
    lines.append("Send only the JSON: no markdown code fences, no comments and no text before or after it.")
    return "\n".join(lines)
