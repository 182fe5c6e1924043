"""The one wire codec: pydantic models <-> JSON bytes through orjson, plugged into Faust.

Faust only knows its own Record classes; rather than keep a twin Record for every message,
topics carry a `WireSchema` that validates bytes into the pydantic model directly. A value
that cannot be decoded becomes a `Poison` value, so the stage can dead-letter it with its
reason instead of crashing the worker or dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust
import orjson
from faust.serializers import codecs
from faust.types import AppT
from faust.types.tuples import Message
from pydantic import BaseModel, SecretStr, ValidationError

CODEC_NAME = "sluice-json"

ModelT = TypeVar("ModelT", bound=BaseModel)


def encode(value: Any) -> bytes:
    """orjson bytes of a model (or plain data); api keys are SecretStr and never leak."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python", exclude_none=False)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_masked)


def _masked(value: Any) -> Any:
    """Secrets serialise as their mask, never their value; anything else unknown is an error."""
    if isinstance(value, SecretStr):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)


class OrjsonCodec(codecs.Codec):
    """Faust codec registered as `sluice-json`."""

    def _dumps(self, s: Any) -> bytes:
        return encode(s)

    def _loads(self, s: bytes) -> Any:
        return decode(s)


codecs.register(CODEC_NAME, OrjsonCodec())


@dataclass(frozen=True)
class Poison:
    """A record on a typed topic that is not a valid message of that topic's type."""

    raw: bytes
    reason: str


class WireSchema(faust.Schema, Generic[ModelT]):  # type: ignore[misc]
    """Keys are raw str/bytes (the correlation id); values are one pydantic model type."""

    def __init__(self, model: type[ModelT]) -> None:
        super().__init__(key_type=bytes, key_serializer="raw", value_serializer=CODEC_NAME)
        self.model = model

    def loads_value(
        self, app: AppT, message: Message, *, loads: Any = None, serializer: Any = None
    ) -> ModelT | Poison:
        raw = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        try:
            return self.model.model_validate(decode(raw))
        except orjson.JSONDecodeError as exc:
            return Poison(raw, f"not JSON: {exc}")
        except ValidationError as exc:
            return Poison(raw, f"not a valid {self.model.__name__}: {exc.errors()[0]['msg']}")

    def dumps_value(
        self, app: AppT, value: Any, *, serializer: Any = None, headers: Any = None
    ) -> tuple[bytes, Any]:
        return encode(value), headers
