"""Kafka client properties (`--command-config FILE`, as Kafka's tools take) -> librdkafka.

A file written for Kafka's Java tools works unchanged: `security.protocol`, `sasl.mechanism`,
`sasl.jaas.config` (its username and password), PEM `ssl.truststore.*` / `ssl.keystore.*`;
librdkafka's own names (`sasl.username`, `ssl.ca.location`, ...) pass through as they are.
"""

from __future__ import annotations

from pathlib import Path

from nerve.config import parse_properties
from nerve.tools.base import ToolError

_RENAMED = {
    "ssl.truststore.location": "ssl.ca.location",
    "ssl.truststore.certificates": "ssl.ca.pem",
    "ssl.keystore.key": "ssl.key.pem",
    "ssl.keystore.certificate.chain": "ssl.certificate.pem",
}
# Java-only settings with no librdkafka counterpart (the PEM type is implied).
_DROPPED = {"ssl.truststore.type", "ssl.keystore.type", "ssl.truststore.password",
            "ssl.keystore.password", "sasl.login.callback.handler.class",
            "ssl.protocol", "ssl.enabled.protocols"}


def librdkafka_config(props: dict[str, str]) -> dict[str, str]:
    from nerve.security.sasl import parse_jaas

    out: dict[str, str] = {}
    for key, value in props.items():
        if key in _DROPPED:
            continue
        if key == "sasl.jaas.config":
            try:
                options = parse_jaas(value)
            except ValueError as e:
                raise ToolError(f"sasl.jaas.config: {e}") from None
            if "username" in options:
                out["sasl.username"] = options["username"]
            if "password" in options:
                out["sasl.password"] = options["password"]
        elif key == "ssl.keystore.location":
            # PEM: key and certificate chain in one file; OpenSSL finds each in it.
            out["ssl.certificate.location"] = value
            out["ssl.key.location"] = value
        elif key == "ssl.endpoint.identification.algorithm":
            out[key] = value or "none"
        else:
            out[_RENAMED.get(key, key)] = value
    return out


def load_command_config(path: str | Path) -> dict[str, str]:
    try:
        return librdkafka_config(parse_properties(Path(path).read_text()))
    except OSError as e:
        raise ToolError(f"--command-config {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ToolError(f"--command-config {path}: {e}") from None
