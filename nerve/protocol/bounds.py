"""Bounds pre-scan of a request body, driven by the message schemas, before kio decodes it.

kio's native decoder trusts length prefixes: a compact array that claims 0xFFFFFFFE elements
makes it reserve ~32 GiB and abort the whole process. `check_request(api, version, frame,
offset)` walks the body first and refuses any length or count (arrays, strings, bytes,
records, tagged fields; compact and classic) that claims more than the bytes left in the
frame (or in the enclosing tagged field), any null where the schema has no null (Kafka's
"non-nullable field ... was serialized as null"), and any body that ends early. It allocates
nothing proportional to a claim, so after it passes, kio allocates at most what the frame
could hold.

Speed: the walk for each (API, version) is compiled once into plain Python functions (one
per schema struct, generated source run through `exec`), fixed-size fields are skipped as one
addition, and byte fields (Produce's `records`) are checked by their length only.
"""

from __future__ import annotations

import dataclasses
import struct
from functools import cache
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from kio.index import load_request_schema
from kio.serial._introspect import EntityField, EntityTupleField, classify_field, get_field_tag

__all__ = ["MalformedRequest", "check_request", "scanner"]


class MalformedRequest(ValueError):
    """The body cannot be what the schema says; the reason names the field."""


_FIXED = {
    "bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "float64": 8, "uuid": 16, "error_code": 2,
    "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8,
}
_VARIABLE = ("string", "bytes", "records")

_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from


def _uvarint(b: Any, p: int, end: int, what: str) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if p >= end:
            raise MalformedRequest(f"{what}: truncated varint")
        c = b[p]
        p += 1
        value |= (c & 0x7F) << shift
        if not c & 0x80:
            return value, p
        shift += 7
        if shift > 28:
            raise MalformedRequest(f"{what}: varint longer than 5 bytes")


def _short(what: str, need: int, left: int) -> MalformedRequest:
    return MalformedRequest(f"{what} claims {need} bytes, {left} left")


def _many(what: str, count: int, left: int) -> MalformedRequest:
    return MalformedRequest(f"{what} claims {count} elements, {left} bytes left")


def _null(what: str) -> MalformedRequest:
    return MalformedRequest(f"non-nullable field {what} was serialized as null")


def _negative(what: str, n: int) -> MalformedRequest:
    return MalformedRequest(f"{what} has negative length {n}")


_RUNTIME = {
    "_uvarint": _uvarint, "_short": _short, "_many": _many, "_null": _null, "_negative": _negative,
    "_i16": _i16, "_i32": _i32, "MalformedRequest": MalformedRequest,
}


def _nullable(field: dataclasses.Field[Any]) -> bool:
    t = field.type
    return get_origin(t) in (UnionType, Union) and NoneType in get_args(t)


@dataclasses.dataclass
class _Compiler:
    flexible: bool
    lines: list[str] = dataclasses.field(default_factory=list)
    names: dict[type, str] = dataclasses.field(default_factory=dict)
    min_sizes: dict[type, int] = dataclasses.field(default_factory=dict)
    counter: int = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def min_size(self, cls: type) -> int:
        if cls not in self.min_sizes:
            total = 1 if self.flexible else 0  # the tagged-field count
            for f in dataclasses.fields(cls):
                if get_field_tag(f) is not None:
                    continue
                kind = classify_field(f)
                kafka_type = f.metadata.get("kafka_type")
                if kind.is_array or kafka_type in _VARIABLE:
                    total += 1 if self.flexible else (2 if kafka_type == "string" and
                                                       not kind.is_array else 4)
                elif isinstance(kind, EntityField):
                    total += 1 if _nullable(f) else self.min_size(kind.type_)
                else:
                    total += _FIXED[kafka_type]
            self.min_sizes[cls] = total
        return self.min_sizes[cls]

    def entity(self, cls: type) -> str:
        """Emit `def <name>(b, p, end) -> p` for `cls` (once) and return its name."""
        if cls in self.names:
            return self.names[cls]
        name = self.fresh(f"_scan_{cls.__name__}_")
        self.names[cls] = name
        body: list[str] = []
        fixed = 0
        tagged: list[tuple[int, dataclasses.Field[Any]]] = []
        for f in dataclasses.fields(cls):
            tag = get_field_tag(f)
            if tag is not None:
                tagged.append((int(tag), f))
                continue
            kind = classify_field(f)
            kafka_type = f.metadata.get("kafka_type")
            if not kind.is_array and kafka_type in _FIXED:
                fixed += _FIXED[kafka_type]
                continue
            if fixed:
                body.append(f"p += {fixed}")
                fixed = 0
            body.extend(self.field(f, f"{cls.__name__}.{f.name}"))
        if fixed:
            body.append(f"p += {fixed}")
        if self.flexible:
            body.extend(self.tagged_fields(cls, tagged))
        body.append(f"if p > end: raise _short({cls.__name__!r}, p - end, 0)")
        body.append("return p")
        self.lines.append(f"def {name}(b, p, end):")
        self.lines.extend("    " + line for line in body)
        return name

    def length(self, what: str, var: str, nullable: bool, classic_fmt: str) -> list[str]:
        """Read a length into `var` (None for null); classic_fmt is _i16 or _i32."""
        w = repr(what)
        if self.flexible:
            # One-byte varints (lengths below 127) are read inline: the common case.
            out = [
                f"if p >= end: raise _short({w}, 1, 0)",
                f"{var} = b[p] - 1",
                f"if {var} < 0x7F: p += 1",
                f"else: {var}, p = _uvarint(b, p, end, {w}); {var} -= 1",
            ]
        else:
            width = 2 if classic_fmt == "_i16" else 4
            out = [
                f"if p + {width} > end: raise _short({w}, {width}, end - p)",
                f"{var} = {classic_fmt}(b, p)[0]",
                f"p += {width}",
                f"if {var} < -1: raise _negative({w}, {var})",
            ]
        out.append(f"if {var} == -1:")
        out.append(f"    {var} = None" if nullable else f"    raise _null({w})")
        return out

    def field(self, f: dataclasses.Field[Any], what: str, *, tag: bool = False) -> list[str]:
        kind = classify_field(f)
        kafka_type = f.metadata.get("kafka_type")
        nullable = _nullable(f) or tag
        w = repr(what)
        n = self.fresh("n")
        if kind.is_array:
            out = self.length(what, n, nullable, "_i32")
            if isinstance(kind, EntityTupleField):
                elem = self.entity(kind.type_)
                size = max(self.min_size(kind.type_), 1)
                loop = [f"for _ in range({n}):", f"    p = {elem}(b, p, end)"]
            elif kafka_type in _FIXED:
                size = _FIXED[kafka_type]
                loop = [f"p += {n} * {size}"]
            else:  # an array of strings
                size = 1 if self.flexible else 2
                m = self.fresh("m")
                inner = self.length(f"{what}[]", m, False, "_i16")
                loop = [f"for _ in range({n}):", *("    " + x for x in inner),
                        f"    if {m} > end - p: raise _short({w}, {m}, end - p)",
                        f"    p += {m}"]
            return [
                *out,
                f"if {n} is not None:",
                f"    if {n} * {size} > end - p: raise _many({w}, {n}, end - p)",
                *("    " + x for x in loop),
            ]
        if isinstance(kind, EntityField):
            elem = self.entity(kind.type_)
            if tag or not _nullable(f):  # a tagged struct has no null marker
                return [f"p = {elem}(b, p, end)"]
            return [
                f"if p >= end: raise _short({w}, 1, 0)",
                f"{n} = b[p]",
                "p += 1",
                f"if {n} == 1: p = {elem}(b, p, end)",
                f"elif {n} != 0xFF: raise MalformedRequest({what!r} + ' has a bad null marker')",
            ]
        if kafka_type in _FIXED:
            return [f"p += {_FIXED[kafka_type]}"]
        out = self.length(what, n, nullable, "_i16" if kafka_type == "string" else "_i32")
        return [
            *out,
            f"if {n} is not None:",
            f"    if {n} > end - p: raise _short({w}, {n}, end - p)",
            f"    p += {n}",
        ]

    def tagged_fields(
        self, cls: type, tagged: list[tuple[int, dataclasses.Field[Any]]]
    ) -> list[str]:
        what = f"{cls.__name__} tagged fields"
        w = repr(what)
        out = [
            "if p < end and b[p] == 0:",  # no tagged fields: the common case
            "    return p + 1",
            f"count, p = _uvarint(b, p, end, {w})",
            f"if count * 2 > end - p: raise _many({w}, count, end - p)",
            "for _ in range(count):",
            f"    tag, p = _uvarint(b, p, end, {w})",
            f"    size, p = _uvarint(b, p, end, {w})",
            f"    if size > end - p: raise _short({w}, size, end - p)",
        ]
        for i, (tag, f) in enumerate(tagged):
            # A known tag's value is scanned within its own size (kio decodes it).
            inner = self.fresh(f"_tag_{cls.__name__}_{tag}_")
            lines = self.field(f, f"{cls.__name__}.{f.name}", tag=True)
            self.lines.append(f"def {inner}(b, p, end):")
            self.lines.extend("    " + line for line in lines)
            self.lines.append("    if p > end: raise _short('tagged field', p - end, 0)")
            self.lines.append("    return p")
            kw = "if" if i == 0 else "elif"
            out.append(f"    {kw} tag == {tag}: {inner}(b, p, p + size)")
        out.append("    p += size")
        return out


@cache
def scanner(api_key: int, version: int) -> Any:
    """The compiled `scan(frame, offset) -> end offset` for one request (API, version)."""
    cls = load_request_schema(api_key, version)
    compiler = _Compiler(flexible=bool(cls.__flexible__))
    root = compiler.entity(cls)
    namespace = dict(_RUNTIME)
    exec("\n".join(compiler.lines), namespace)
    scan = namespace[root]

    def check(frame: Any, offset: int) -> int:
        return scan(frame, offset, len(frame))

    check.__doc__ = f"bounds scan of {cls.__name__} v{version}"
    return check


def check_request(api_key: int, version: int, frame: Any, offset: int) -> int:
    """Raise MalformedRequest unless the body at `offset` fits its schema; return its end."""
    return scanner(api_key, version)(frame, offset)
