"""ACLs with Kafka's StandardAuthorizer semantics, and the checks handlers call.

Turned on by `authorizer.class.name` (Kafka's StandardAuthorizer, or the older AclAuthorizer's
name); with it unset `BrokerCore.authorizer` is None and every check is one attribute test.

A decision, as Kafka makes it: a super user (`super.users`, `;`-separated principals) may do
anything; otherwise the ACLs whose resource matches (LITERAL equal name, LITERAL `*`, PREFIXED
prefix of the name) are examined for the principal (or `User:*`) and host (or `*`): any
matching DENY wins, else any matching ALLOW allows. ALLOW READ, WRITE, DELETE or ALTER imply
DESCRIBE; ALLOW ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL matches every operation. When no
ACL at all exists for the resource, `allow.everyone.if.no.acl.found` decides (default false).

Lookups go through an index by (resource type, name) for literal ACLs and by (resource type,
prefix) for prefixed ones, probing only the prefix lengths that exist, and decisions are
cached until the ACLs change.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerve.security.acl_store import AclStore, AclStoreError

if TYPE_CHECKING:
    from nerve.config import BrokerConfig
    from nerve.handlers import RequestContext

AUTHORIZER_CLASSES = (
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
)
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
NO_OPERATIONS = -2147483648  # Kafka's "authorized operations not requested"


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14
    TWO_PHASE_COMMIT = 15


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


def _enum(cls: type[enum.IntEnum], value: int) -> Any:
    try:
        return cls(value)
    except ValueError:  # Kafka maps codes it does not know to UNKNOWN
        return cls(0)


Op = AclOperation
# Kafka's AclEntry.supportedOperations: what "authorized operations" bit fields range over.
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE, Op.DELETE, Op.ALTER,
                         Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS),
    ResourceType.GROUP: (Op.READ, Op.DESCRIBE, Op.DELETE, Op.DESCRIBE_CONFIGS,
                         Op.ALTER_CONFIGS),
    ResourceType.CLUSTER: (Op.CREATE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
                           Op.IDEMPOTENT_WRITE, Op.ALTER, Op.DESCRIBE),
    ResourceType.TRANSACTIONAL_ID: (Op.DESCRIBE, Op.WRITE, Op.TWO_PHASE_COMMIT),
    ResourceType.DELEGATION_TOKEN: (Op.DESCRIBE,),
    ResourceType.USER: (Op.CREATE_TOKENS, Op.DESCRIBE_TOKENS),
}
_IMPLIES_DESCRIBE = frozenset({Op.DESCRIBE, Op.READ, Op.WRITE, Op.DELETE, Op.ALTER})
_IMPLIES_DESCRIBE_CONFIGS = frozenset({Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS})


def operations_bits(ops: Iterable[AclOperation]) -> int:
    bits = 0
    for op in ops:
        bits |= 1 << int(op)
    return bits


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: Permission

    def to_json(self) -> dict[str, Any]:
        return {"resource_type": self.resource_type.name, "resource_name": self.resource_name,
                "pattern_type": self.pattern_type.name, "principal": self.principal,
                "host": self.host, "operation": self.operation.name,
                "permission": self.permission.name}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AclBinding:
        return cls(ResourceType[d["resource_type"]], d["resource_name"],
                   PatternType[d["pattern_type"]], d["principal"], d["host"],
                   AclOperation[d["operation"]], Permission[d["permission"]])

    def validate(self) -> str | None:
        """Why Kafka (AclControlManager.validateNewAcl) refuses this ACL, or None."""
        if self.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
            return f"Invalid resourceType {self.resource_type.name}"
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            return f"Invalid patternType {self.pattern_type.name}"
        if self.operation in (Op.UNKNOWN, Op.ANY):
            return f"Invalid operation {self.operation.name}"
        if self.permission not in (Permission.DENY, Permission.ALLOW):
            return f"Invalid permissionType {self.permission.name}"
        if self.resource_type is ResourceType.CLUSTER and self.resource_name != CLUSTER_NAME:
            return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        if not self.resource_name:
            return "Invalid empty resource name"
        if ":" not in self.principal:
            return (f"Could not parse principal from `{self.principal}` (no colon is present "
                    "separating the principal type from the principal name)")
        return None


@dataclass(frozen=True, slots=True)
class AclFilter:
    """Kafka's AclBindingFilter (DescribeAcls, DeleteAcls): None and ANY match everything."""

    resource_type: ResourceType
    resource_name: str | None
    pattern_type: PatternType
    principal: str | None
    host: str | None
    operation: AclOperation
    permission: Permission

    def is_unknown(self) -> bool:
        return (self.resource_type is ResourceType.UNKNOWN
                or self.pattern_type is PatternType.UNKNOWN
                or self.operation is Op.UNKNOWN or self.permission is Permission.UNKNOWN)

    def matches(self, acl: AclBinding) -> bool:
        if self.resource_type not in (ResourceType.ANY, acl.resource_type):
            return False
        pt = self.pattern_type
        if pt not in (PatternType.ANY, PatternType.MATCH, acl.pattern_type):
            return False
        name = self.resource_name
        if name is not None:
            if pt in (PatternType.ANY, acl.pattern_type):
                if name != acl.resource_name:
                    return False
            elif acl.pattern_type is PatternType.LITERAL:  # MATCH
                if name != acl.resource_name and acl.resource_name != WILDCARD:
                    return False
            elif not name.startswith(acl.resource_name):  # MATCH against PREFIXED
                return False
        if self.principal is not None and self.principal != acl.principal:
            return False
        if self.host is not None and self.host != acl.host:
            return False
        if self.operation is not Op.ANY and self.operation is not acl.operation:
            return False
        return self.permission in (Permission.ANY, acl.permission)


def binding(resource_type: int, name: str, pattern: int, principal: str, host: str,
            operation: int, permission: int) -> AclBinding:
    return AclBinding(_enum(ResourceType, resource_type), name, _enum(PatternType, pattern),
                      principal, host, _enum(AclOperation, operation),
                      _enum(Permission, permission))


def acl_filter(resource_type: int, name: str | None, pattern: int, principal: str | None,
               host: str | None, operation: int, permission: int) -> AclFilter:
    return AclFilter(_enum(ResourceType, resource_type), name, _enum(PatternType, pattern),
                     principal, host, _enum(AclOperation, operation),
                     _enum(Permission, permission))


def _result(acl: AclBinding, op: AclOperation, principal: str, host: str) -> Permission | None:
    """Kafka's AuthorizerData.findResult: what this ACL says about the action, if anything."""
    if acl.principal != principal and acl.principal != WILDCARD_PRINCIPAL:
        return None
    if acl.host != WILDCARD and acl.host != host:
        return None
    if acl.operation is not Op.ALL:
        if acl.permission is Permission.ALLOW:
            if op is Op.DESCRIBE:
                if acl.operation not in _IMPLIES_DESCRIBE:
                    return None
            elif op is Op.DESCRIBE_CONFIGS:
                if acl.operation not in _IMPLIES_DESCRIBE_CONFIGS:
                    return None
            elif op is not acl.operation:
                return None
        elif op is not acl.operation:
            return None
    return acl.permission


class Authorizer:
    """The ACL set (durable), its indexes, and decisions."""

    def __init__(self, data_dir: Path, *, super_users: Iterable[str] = (),
                 allow_everyone_if_no_acl_found: bool = False) -> None:
        self.store = AclStore(data_dir)
        self.super_users = frozenset(s.strip() for s in super_users if s.strip())
        self.allow_everyone = allow_everyone_if_no_acl_found
        try:
            self.acls: list[AclBinding] = [AclBinding.from_json(d) for d in self.store.load()]
        except (KeyError, TypeError, AttributeError) as e:
            raise AclStoreError(f"cannot read {self.store.path}: bad entry ({e})") from None
        self._reindex()

    @classmethod
    def from_config(cls, data_dir: Path, config: BrokerConfig) -> Authorizer | None:
        name = (config.get("authorizer.class.name") or "").strip()
        if not name:
            return None
        if name not in AUTHORIZER_CLASSES:
            raise ValueError(f"authorizer.class.name {name!r} is not supported; use "
                             f"{AUTHORIZER_CLASSES[0]}")
        return cls(data_dir, super_users=(config.get("super.users") or "").split(";"),
                   allow_everyone_if_no_acl_found=config.get_bool(
                       "allow.everyone.if.no.acl.found"))

    def _reindex(self) -> None:
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = defaultdict(list)
        self._prefixed: dict[tuple[ResourceType, str], list[AclBinding]] = defaultdict(list)
        self._prefix_lengths: dict[ResourceType, list[int]] = defaultdict(list)
        lengths: dict[ResourceType, set[int]] = defaultdict(set)
        for acl in self.acls:
            key = (acl.resource_type, acl.resource_name)
            if acl.pattern_type is PatternType.LITERAL:
                self._literal[key].append(acl)
            else:
                self._prefixed[key].append(acl)
                lengths[acl.resource_type].add(len(acl.resource_name))
        for rtype, ls in lengths.items():
            self._prefix_lengths[rtype] = sorted(ls)
        self._cache: dict[tuple[str, str, AclOperation, ResourceType, str], bool] = {}

    # ---- changes (each one durable before it returns)
    def create(self, new: list[AclBinding]) -> None:
        existing = set(self.acls)
        added = [a for a in dict.fromkeys(new) if a not in existing]
        if added:
            self._save(self.acls + added)

    def delete(self, filters: list[AclFilter]) -> list[list[AclBinding]]:
        """The ACLs each filter matched (all removed, durably)."""
        matched = [[a for a in self.acls if f.matches(a)] for f in filters]
        gone = {a for m in matched for a in m}
        if gone:
            self._save([a for a in self.acls if a not in gone])
        return matched

    def describe(self, f: AclFilter) -> list[AclBinding]:
        return [a for a in self.acls if f.matches(a)]

    def _save(self, acls: list[AclBinding]) -> None:
        self.store.save([a.to_json() for a in acls])
        self.acls = acls
        self._reindex()

    # ---- decisions
    def _matching(self, rtype: ResourceType, name: str) -> Iterable[AclBinding]:
        yield from self._literal.get((rtype, name), ())
        if name != WILDCARD:
            yield from self._literal.get((rtype, WILDCARD), ())
        for n in self._prefix_lengths.get(rtype, ()):
            if n > len(name):
                break
            yield from self._prefixed.get((rtype, name[:n]), ())

    def authorize(self, principal: str, host: str, op: AclOperation, rtype: ResourceType,
                  name: str) -> bool:
        if principal in self.super_users:
            return True
        key = (principal, host, op, rtype, name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        allowed = None
        any_acl = False
        for acl in self._matching(rtype, name):
            any_acl = True
            r = _result(acl, op, principal, host)
            if r is Permission.DENY:
                allowed = False
                break
            if r is Permission.ALLOW:
                allowed = True
        if allowed is None:
            allowed = self.allow_everyone and not any_acl
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = allowed
        return allowed

    def authorize_by_resource_type(self, principal: str, host: str, op: AclOperation,
                                   rtype: ResourceType) -> bool:
        """Kafka's Authorizer.authorizeByResourceType: may `op` on some resource of `rtype`."""
        if self.authorize(principal, host, op, rtype, "hardcode"):
            return True
        principals = (principal, WILDCARD_PRINCIPAL)

        def applies(a: AclBinding) -> bool:
            return (a.resource_type is rtype and a.principal in principals
                    and a.host in (host, WILDCARD) and a.operation in (op, Op.ALL))

        denies = [a for a in self.acls if a.permission is Permission.DENY and applies(a)]
        deny_literal = {a.resource_name for a in denies if a.pattern_type is PatternType.LITERAL}
        if WILDCARD in deny_literal:
            return False
        deny_prefix = [a.resource_name for a in denies if a.pattern_type is PatternType.PREFIXED]
        for a in self.acls:
            if a.permission is not Permission.ALLOW or not applies(a):
                continue
            if any(a.resource_name.startswith(p) for p in deny_prefix):
                continue
            if a.pattern_type is PatternType.LITERAL and a.resource_name in deny_literal:
                continue
            return True
        return False


# ------------------------------------------------------------------ the handlers' API
TOPIC = ResourceType.TOPIC
GROUP = ResourceType.GROUP
CLUSTER = ResourceType.CLUSTER
TRANSACTIONAL_ID = ResourceType.TRANSACTIONAL_ID


def authorize(ctx: RequestContext, op: AclOperation, rtype: ResourceType,
              name: str = CLUSTER_NAME) -> bool:
    """May the request's principal, from its host, do `op` on the resource? Always True with
    no authorizer configured."""
    authorizer: Authorizer | None = getattr(ctx.broker, "authorizer", None)
    if authorizer is None:
        return True
    return authorizer.authorize(ctx.principal, ctx.client_host, op, rtype, name)


def authorize_by_resource_type(ctx: RequestContext, op: AclOperation,
                               rtype: ResourceType) -> bool:
    authorizer: Authorizer | None = getattr(ctx.broker, "authorizer", None)
    if authorizer is None:
        return True
    return authorizer.authorize_by_resource_type(ctx.principal, ctx.client_host, op, rtype)


def authorized_operations(ctx: RequestContext, rtype: ResourceType, name: str,
                          requested: bool = True) -> int:
    """Kafka's authorized-operations bit field for a resource (every supported operation with
    no authorizer), or NO_OPERATIONS when the client did not ask for it."""
    if not requested:
        return NO_OPERATIONS
    ops = SUPPORTED_OPERATIONS[rtype]
    return operations_bits(op for op in ops if authorize(ctx, op, rtype, name))


def cluster_authorized_operations(ctx: RequestContext, requested: bool) -> int:
    """Metadata's and DescribeCluster's field: 0 without DESCRIBE on the cluster (Kafka)."""
    if not requested:
        return NO_OPERATIONS
    if not authorize(ctx, Op.DESCRIBE, CLUSTER):
        return 0
    return authorized_operations(ctx, CLUSTER, CLUSTER_NAME)


# ConfigResource.Type ids (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs).
_CONFIG_TOPIC, _CONFIG_BROKER, _CONFIG_BROKER_LOGGER, _CONFIG_CLIENT_METRICS, _CONFIG_GROUP = (
    2, 4, 8, 16, 32)


def config_resource_denied(ctx: RequestContext, config_type: int, name: str,
                           op: AclOperation) -> Any:
    """The ErrorCode Kafka answers when `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a config
    resource is not authorized, else None. Broker resources are checked on the cluster."""
    from nerve.protocol.errors import ErrorCode

    if config_type == _CONFIG_TOPIC:
        ok, code = authorize(ctx, op, TOPIC, name), ErrorCode.topic_authorization_failed
    elif config_type == _CONFIG_GROUP:
        ok, code = authorize(ctx, op, GROUP, name), ErrorCode.group_authorization_failed
    elif config_type in (_CONFIG_BROKER, _CONFIG_BROKER_LOGGER, _CONFIG_CLIENT_METRICS):
        ok, code = authorize(ctx, op, CLUSTER), ErrorCode.cluster_authorization_failed
    else:
        return None
    return None if ok else code
