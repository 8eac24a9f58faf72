"""Kafka's listener settings: `listeners`, `advertised.listeners`,
`listener.security.protocol.map`, and the per-listener security each one gets.

`--host/--port` are the short form of `listeners=PLAINTEXT://host:port`; when `listeners` is
set it replaces them. Each listener binds its own socket with its own accept loop and limits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from nerve.config import BrokerConfig, ConfigError

log = logging.getLogger("nerve.security")

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_ENDPOINT = re.compile(r"^([A-Za-z0-9_\-]+)://(\[[^\]]*\]|[^:/]*):(\d+)$")


@dataclass
class ListenerSpec:
    name: str
    protocol: str
    host: str
    port: int
    advertised_host: str | None = None  # None: the bound address
    advertised_port: int | None = None


def _endpoints(value: str, setting: str) -> list[tuple[str, str, int]]:
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        m = _ENDPOINT.match(item)
        if m is None:
            raise ConfigError(f"{setting}: {item!r} is not NAME://host:port")
        out.append((m.group(1).upper(), m.group(2).strip("[]"), int(m.group(3))))
    names = [e[0] for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{setting}: each listener name may appear once")
    return out


def protocol_map(config: BrokerConfig) -> dict[str, str]:
    value = config.get("listener.security.protocol.map") or ""
    out = {}
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        name, sep, proto = item.partition(":")
        if not sep or proto.strip().upper() not in PROTOCOLS:
            raise ConfigError(f"listener.security.protocol.map: {item!r} is not "
                              f"NAME:{'|'.join(PROTOCOLS)}")
        out[name.strip().upper()] = proto.strip().upper()
    return out


def parse_listeners(config: BrokerConfig, host: str, port: int,
                    advertised_host: str | None) -> list[ListenerSpec]:
    value = config.get("listeners")
    if not value:
        return [ListenerSpec("PLAINTEXT", "PLAINTEXT", host, port, advertised_host)]
    protos = protocol_map(config)
    specs = []
    for name, lhost, lport in _endpoints(value, "listeners"):
        proto = protos.get(name)
        if proto is None:
            raise ConfigError(f"listener {name} has no security protocol: add it to "
                              "listener.security.protocol.map")
        # Kafka binds every interface for an empty host.
        specs.append(ListenerSpec(name, proto, lhost or "0.0.0.0", lport))
    advertised = config.get("advertised.listeners")
    if advertised:
        by_name = {s.name: s for s in specs}
        for name, ahost, aport in _endpoints(advertised, "advertised.listeners"):
            spec = by_name.get(name)
            if spec is None:
                raise ConfigError(f"advertised.listeners names {name}, which is not in "
                                  "listeners")
            spec.advertised_host, spec.advertised_port = ahost or None, aport
    elif advertised_host:
        for spec in specs:
            spec.advertised_host = advertised_host
    return specs


def security_for(config: BrokerConfig, spec: ListenerSpec, credentials: object) -> object:
    """The ListenerSecurity of `spec`: TLS context, SASL mechanisms, JAAS PLAIN users."""
    from nerve.security.sasl import SUPPORTED, ListenerSecurity, parse_jaas
    from nerve.security.tls import PrincipalMapper, server_context

    def get(key: str) -> str | None:
        return config.for_listener(spec.name, key)

    sec = ListenerSecurity(spec.name, spec.protocol, credentials=credentials)  # type: ignore[arg-type]
    if sec.tls:
        sec.ssl_context = server_context(get, spec.name)
        sec.principal_mapper = PrincipalMapper(get("ssl.principal.mapping.rules"))
    if sec.sasl:
        wanted = [m.strip().upper() for m in (get("sasl.enabled.mechanisms") or "").split(",")
                  if m.strip()]
        unsupported = [m for m in wanted if m not in SUPPORTED]
        if unsupported:
            log.warning("listener %s: SASL mechanisms %s are not supported (nerve has %s)",
                        spec.name, ",".join(unsupported), ",".join(SUPPORTED))
        sec.mechanisms = tuple(m for m in wanted if m in SUPPORTED)
        if not sec.mechanisms:
            raise ConfigError(f"listener {spec.name} ({spec.protocol}) has no supported SASL "
                              f"mechanism: set sasl.enabled.mechanisms to some of "
                              f"{','.join(SUPPORTED)}")
        sec.reauth_ms = int(get("connections.max.reauth.ms") or 0)
        jaas = (config.overrides.get(f"listener.name.{spec.name.lower()}.plain.sasl.jaas.config")
                or config.get("sasl.jaas.config"))
        if jaas and "PLAIN" in sec.mechanisms and "PlainLoginModule" in jaas:
            try:
                options = parse_jaas(jaas)
            except ValueError as e:
                raise ConfigError(f"listener {spec.name}: sasl.jaas.config: {e}") from None
            sec.plain_users = {k[5:]: v for k, v in options.items() if k.startswith("user_")}
    return sec
