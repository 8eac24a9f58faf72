"""The seed frames of the fuzz suite: recorded from real clients, plus kio-built ones.

corpus.jsonl holds frames recorded by `python -m tests.fuzz.record` (confluent-kafka,
kafka-python, Kafka's Java tools). Every API version nerve serves that no client sent gets a
frame built from its kio schema with one element in every array, so every API is covered at
its classic and flexible versions.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from kio.serial import entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

from nerve.handlers import load_handlers
from nerve.protocol import records as rb
from nerve.protocol.messages import build, is_flexible, request_class

CORPUS = Path(__file__).with_name("corpus.jsonl")
FUZZ_TOPIC = "fuzz-a"
FUZZ_GROUP = "fuzz-group"


@dataclasses.dataclass(frozen=True)
class Seed:
    source: str  # the client that sent it, or "kio"
    api: int
    version: int
    frame: bytes  # without the size prefix


def served_versions() -> list[tuple[int, int]]:
    return [(key, v) for key, spec in sorted(load_handlers().items())
            for v in range(spec.min_version, spec.max_version + 1)]


def _sample_value(f: dataclasses.Field[Any]) -> Any:
    kind = classify_field(f)
    kafka_type = f.metadata.get("kafka_type")
    if isinstance(kind, EntityTupleField):
        return [sample(kind.type_)]
    if isinstance(kind, EntityField):
        return sample(kind.type_)
    name = f.name
    if kafka_type == "string":
        value = FUZZ_GROUP if "group" in name or "member" in name else FUZZ_TOPIC
        return [value] if kind.is_array else value
    if kind.is_array:
        return [0, 1]
    if kafka_type == "records":
        return rb.build_batch([(b"k", b"fuzz")])
    if kafka_type == "bytes":
        return b"\x00\x01fuzz"
    if kafka_type == "uuid":
        return uuid.UUID(int=0)
    if kafka_type == "bool":
        return False
    if kafka_type and kafka_type.startswith("timedelta"):
        return 1000
    if name == "acks":
        return 1
    if name in ("replica_id", "broker_id", "leader_epoch", "current_leader_epoch"):
        return -1
    return 0


def sample(cls: type) -> Any:
    return build(cls, {f.name: _sample_value(f) for f in dataclasses.fields(cls)})


def frame_of(api: int, version: int, body: Any, correlation_id: int = 1) -> bytes:
    header = struct.pack(">hhih", api, version, correlation_id, 4) + b"fuzz"
    if is_flexible(api, version):
        header += b"\x00"
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    return header + out.getvalue()


def recorded() -> list[Seed]:
    if not CORPUS.exists():
        return []
    seeds = []
    for line in CORPUS.read_text().splitlines():
        row = json.loads(line)
        seeds.append(Seed(row["client"], row["api"], row["version"],
                          base64.b64decode(row["frame"])))
    return seeds


@cache
def seeds() -> tuple[Seed, ...]:
    """Recorded frames of served versions, then a kio-built frame for every version missed."""
    served = set(served_versions())
    out = [s for s in recorded() if (s.api, s.version) in served]
    covered = {(s.api, s.version) for s in out}
    for api, version in served_versions():
        if (api, version) not in covered:
            out.append(Seed("kio", api, version,
                            frame_of(api, version, sample(request_class(api, version)))))
    return tuple(out)
