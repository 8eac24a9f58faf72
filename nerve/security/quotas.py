"""Client quotas as Kafka configures them: entities of `user` and/or `client-id` (a name, or the
default entity: name None) carrying `producer_byte_rate`, `consumer_byte_rate`,
`request_percentage` (and `controller_mutation_rate`, stored only); `ip` entities carry
`connection_creation_rate` (stored only).

Durable in `<data dir>/quotas.json`, rewritten atomically before AlterClientQuotas is answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nerve.security.acl_store import AclStoreError, write_atomic

USER, CLIENT_ID, IP = "user", "client-id", "ip"
CLIENT_KEYS = frozenset({"producer_byte_rate", "consumer_byte_rate", "request_percentage",
                         "controller_mutation_rate"})
IP_KEYS = frozenset({"connection_creation_rate"})
WHOLE_NUMBER_KEYS = frozenset({"producer_byte_rate", "consumer_byte_rate",
                               "connection_creation_rate"})
MATCH_EXACT, MATCH_DEFAULT, MATCH_ANY = 0, 1, 2

# An entity: sorted ((entity type, name or None for the default), ...)
Entity = tuple[tuple[str, str | None], ...]


def check_entity(entity: Entity) -> str | None:
    """Why Kafka refuses this entity, or None."""
    types = [t for t, _ in entity]
    if not types:
        return "Invalid empty client quota entity"
    if len(set(types)) != len(types):
        return f"Invalid quota entity: duplicate entity type in {types}"
    for t in types:
        if t not in (USER, CLIENT_ID, IP):
            return f"Unknown client quota entity type {t}"
    if IP in types and len(types) > 1:
        return "Invalid quota entity combination: ip cannot be combined with other types"
    return None


def check_op(entity: Entity, key: str, value: float, remove: bool) -> str | None:
    allowed = IP_KEYS if entity[0][0] == IP else CLIENT_KEYS
    if key not in allowed:
        return f"Invalid configuration key {key}"
    if not remove and key in WHOLE_NUMBER_KEYS and value != int(value):
        return f"Configuration {key} must be a Long value"
    return None


def _matches(names: dict[str, str | None], etype: str, match_type: int,
             match: str | None) -> bool:
    if etype not in names:
        return False
    if match_type == MATCH_EXACT:
        return names[etype] == match
    if match_type == MATCH_DEFAULT:
        return names[etype] is None
    return True


class QuotaStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "quotas.json"
        self.quotas: dict[Entity, dict[str, float]] = {}
        try:
            raw = json.loads(self.path.read_bytes())
            for item in raw["quotas"]:
                entity = tuple(sorted((t, n) for t, n in item["entity"]))
                self.quotas[entity] = {k: float(v) for k, v in item["values"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AclStoreError(f"cannot read {self.path}: {e}") from None
        self.version = 0  # bumped on every change (the enforcement side caches on it)

    def alter(self, changes: list[tuple[Entity, list[tuple[str, float, bool]]]]) -> None:
        for entity, ops in changes:
            values = dict(self.quotas.get(entity, {}))
            for key, value, remove in ops:
                if remove:
                    values.pop(key, None)
                else:
                    values[key] = value
            if values:
                self.quotas[entity] = values
            else:
                self.quotas.pop(entity, None)
        body = {"version": 1, "quotas": [
            {"entity": [list(e) for e in entity], "values": values}
            for entity, values in self.quotas.items()]}
        write_atomic(self.path, json.dumps(body, indent=1).encode())
        self.version += 1

    def describe(self, components: list[tuple[str, int, str | None]],
                 strict: bool) -> list[tuple[Entity, dict[str, float]]]:
        out = []
        for entity, values in self.quotas.items():
            names = dict(entity)
            ok = all(_matches(names, etype, match_type, match)
                     for etype, match_type, match in components)
            if ok and (not strict or len(names) == len(components)):
                out.append((entity, values))
        return out

    def quota_for(self, user: str, client_id: str, key: str) -> float | None:
        """Kafka's precedence: the most specific entity that sets `key`."""
        q = self.quotas
        for entity in (
            ((CLIENT_ID, client_id), (USER, user)), ((CLIENT_ID, None), (USER, user)),
            ((USER, user),),
            ((CLIENT_ID, client_id), (USER, None)), ((CLIENT_ID, None), (USER, None)),
            ((USER, None),),
            ((CLIENT_ID, client_id),), ((CLIENT_ID, None),),
        ):
            values = q.get(entity)
            if values is not None and key in values:
                return values[key]
        return None


def quota_store(broker: Any) -> QuotaStore:
    store = broker.extensions.get("quotas")
    if store is None:
        store = broker.extensions["quotas"] = QuotaStore(broker.data_dir)
    return store


def entity_of(parts: Any) -> Entity:
    return tuple(sorted((p.entity_type, p.entity_name) for p in parts))


def user_name(principal: str) -> str:
    """Kafka's quota user is the principal's name (User:alice -> alice)."""
    return principal.partition(":")[2] or principal


# Kafka's quota.window.num and quota.window.size.seconds defaults.
SAMPLES = 11
SAMPLE_S = 1.0


class _Rate:
    """Kafka's sampled Rate: bytes over the last SAMPLES windows of SAMPLE_S seconds."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[list[float]] = []  # [window start, bytes]

    def record(self, nbytes: float, now: float) -> float:
        samples = self.samples
        if not samples or now - samples[-1][0] >= SAMPLE_S:
            samples.append([now, 0.0])
            if len(samples) > SAMPLES:
                del samples[0]
        samples[-1][1] += nbytes
        return sum(s[1] for s in samples)

    def window_s(self, now: float) -> float:
        # As Kafka: at least (samples - 1) whole windows, so a first burst is not over-throttled.
        return max(now - self.samples[0][0], (SAMPLES - 1) * SAMPLE_S)


class QuotaEnforcer:
    """Throttle times for byte-rate quotas (Kafka's ClientQuotaManager.throttleTime)."""

    def __init__(self, store: QuotaStore) -> None:
        self.store = store
        self.rates: dict[tuple[str, str, str], _Rate] = {}

    def record(self, principal: str, client_id: str | None, key: str, nbytes: int,
               now: float) -> int:
        """Count `nbytes` against the client's `key` quota; the throttle in ms (0: none)."""
        if not self.store.quotas:
            return 0
        user, client = user_name(principal), client_id or ""
        bound = self.store.quota_for(user, client, key)
        if bound is None or bound <= 0:
            return 0
        rate = self.rates.get((user, client, key))
        if rate is None:
            if len(self.rates) > 100_000:
                self.rates.clear()
            rate = self.rates[(user, client, key)] = _Rate()
        total = rate.record(nbytes, now)
        window = rate.window_s(now)
        observed = total / window
        if observed <= bound:
            return 0
        return round((observed - bound) / bound * window * 1000)

    def unrecord(self, principal: str, client_id: str | None, key: str, nbytes: int) -> None:
        """Take back bytes that were not sent after all (a throttled, empty Fetch answer)."""
        rate = self.rates.get((user_name(principal), client_id or "", key))
        if rate is not None and rate.samples:
            rate.samples[-1][1] -= nbytes


def enforcer(broker: Any) -> QuotaEnforcer:
    e = broker.extensions.get("quota_enforcer")
    if e is None:
        e = broker.extensions["quota_enforcer"] = QuotaEnforcer(quota_store(broker))
    return e
