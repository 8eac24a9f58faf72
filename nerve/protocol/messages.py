"""Kafka request/response bodies, via `kio` (types generated from Kafka's JSON schemas).

kio has one frozen dataclass per (API, version). Handlers are written once for every version:
they read requests with `getattr` for version-specific fields, and build responses from plain
dicts with `build(ResponseClass, {...})`, which keeps only the fields that version has, converts
ints to kio's timedelta/ErrorCode/datetime types, and fills Kafka's zero defaults for fields the
handler did not set. The hot paths (Produce response, Fetch response) are written by hand in
`fastcodec.py`.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

__all__ = [
    "ErrorCode",
    "build",
    "decode_request",
    "encode_response",
    "is_flexible",
    "request_class",
    "response_class",
]

ZERO_UUID = uuid.UUID(int=0)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@cache
def request_class(api_key: int, version: int) -> type:
    return load_request_schema(api_key, version)


@cache
def response_class(api_key: int, version: int) -> type:
    return load_response_schema(api_key, version)


@cache
def is_flexible(api_key: int, version: int) -> bool:
    return bool(request_class(api_key, version).__flexible__)


@cache
def _reader(cls: type) -> Callable[[Any, int], Any]:
    return entity_reader(cls)


@cache
def _writer(cls: type) -> Callable[[io.BytesIO, Any], None]:
    return entity_writer(cls)


def decode_request(api_key: int, version: int, buf: bytes | memoryview, offset: int) -> Any:
    """Parse a request body starting at `offset`. Raises on malformed input."""
    cls = request_class(api_key, version)
    value, _size = _reader(cls)(buf, offset)
    return value


def encode_response(obj: Any) -> bytes:
    out = io.BytesIO()
    _writer(type(obj))(out, obj)
    return out.getvalue()


# ---------------------------------------------------------------- building responses


def _zero(kafka_type: str, optional: bool) -> Any:
    if optional:
        return None
    if kafka_type in ("string",):
        return ""
    if kafka_type in ("bytes", "records"):
        return b""
    if kafka_type == "bool":
        return False
    if kafka_type == "uuid":
        return ZERO_UUID
    if kafka_type == "error_code":
        return ErrorCode.none
    if kafka_type.startswith("timedelta"):
        return datetime.timedelta(0)
    if kafka_type.startswith("datetime"):
        return _EPOCH
    if kafka_type == "float64":
        return 0.0
    return 0


def _convert(kafka_type: str, value: Any, optional: bool = True) -> Any:
    if value is None:
        return None
    if kafka_type == "error_code":
        return value if isinstance(value, ErrorCode) else ErrorCode(int(value))
    if kafka_type.startswith("timedelta") and isinstance(value, int):
        return datetime.timedelta(milliseconds=value)
    if kafka_type.startswith("datetime") and isinstance(value, int):
        if value < 0 and optional:  # Kafka's -1 "no timestamp" is kio's None
            return None
        return _EPOCH + datetime.timedelta(milliseconds=value)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    kafka_type: str | None
    nested: type | None
    is_array: bool
    optional: bool
    has_default: bool


@cache
def _plan(cls: type) -> tuple[_FieldPlan, ...]:
    plans = []
    for f in dataclasses.fields(cls):
        kind = classify_field(f)
        nested = kind.type_ if isinstance(kind, EntityField | EntityTupleField) else None
        kafka_type = f.metadata.get("kafka_type")
        optional = "None" in str(f.type) if not kind.is_array else False
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        plans.append(_FieldPlan(f.name, kafka_type, nested, kind.is_array, optional, has_default))
    return tuple(plans)


def build(cls: type, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
    """Make a kio entity of `cls` from a dict, keeping only the fields `cls` has."""
    if data is None:
        data = kwargs
    elif kwargs:
        data = {**data, **kwargs}
    values: dict[str, Any] = {}
    for p in _plan(cls):
        if p.name in data:
            raw = data[p.name]
            if p.nested is not None:
                if raw is None:
                    values[p.name] = None
                elif p.is_array:
                    values[p.name] = tuple(
                        x if dataclasses.is_dataclass(x) else build(p.nested, x) for x in raw
                    )
                elif raw is None or dataclasses.is_dataclass(raw):
                    values[p.name] = raw
                else:
                    values[p.name] = build(p.nested, raw)
            elif p.is_array:
                values[p.name] = tuple(raw) if raw is not None else None
            else:
                # A non-nullable timestamp keeps -1 as a datetime (kio cannot write None).
                values[p.name] = _convert(p.kafka_type or "", raw, p.optional)
        elif not p.has_default:
            if p.is_array:
                values[p.name] = ()
            elif p.nested is not None:
                values[p.name] = build(p.nested, {}) if not p.optional else None
            else:
                values[p.name] = _zero(p.kafka_type or "", p.optional)
    return cls(**values)


def ms(value: datetime.timedelta | datetime.datetime | int | None) -> int:
    """kio's timedelta/datetime fields back to Kafka's integer milliseconds."""
    if value is None:
        return -1
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // datetime.timedelta(milliseconds=1)
    return int(value)
