"""TLS for SSL and SASL_SSL listeners, from Kafka's PEM settings; client certificate principals.

Key material as Kafka 4 accepts it with `ssl.keystore.type=PEM`: `ssl.keystore.location` (a
file holding the private key and the certificate chain) or the inline
`ssl.keystore.key` + `ssl.keystore.certificate.chain`, `ssl.key.password` for an encrypted
key; trust from `ssl.truststore.location` or the inline `ssl.truststore.certificates`. Every
setting may be given per listener as `listener.name.<listener>.ssl.*`. Contexts are rebuilt by
`Broker.reload_tls()` (SIGHUP): new connections get the new certificates, open ones keep theirs.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from collections.abc import Callable, Iterator

from nerve.config import ConfigError

Getter = Callable[[str], "str | None"]

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_PROTOCOLS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
              "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                "required": ssl.CERT_REQUIRED}


def normalize_pem(text: str) -> str:
    """PEM blocks with their base64 rewrapped: a properties value may have lost the line
    breaks (Kafka accepts a chain on one line), OpenSSL wants 64-column lines."""
    blocks = []
    for kind, body in _PEM_BLOCK.findall(text):
        b64 = re.sub(r"\s+", "", body)
        lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
        blocks.append(f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----\n")
    if not blocks:
        raise ConfigError("no PEM block (-----BEGIN ...-----) in the value")
    return "".join(blocks)


@contextlib.contextmanager
def _pem_file(text: str) -> Iterator[str]:
    """A path OpenSSL can read inline PEM from, in memory (never on disk)."""
    fd = os.memfd_create("nerve-pem")
    try:
        os.write(fd, text.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _java_cipher_to_openssl(name: str) -> str:
    """Kafka names cipher suites the IANA/Java way; OpenSSL has its own names."""
    if not name.startswith("TLS_") or "_WITH_" not in name:
        return name
    kex, cipher = name[4:].split("_WITH_", 1)
    kex = kex.replace("_", "-")
    cipher = re.sub(r"AES_(\d+)", r"AES\1", cipher).replace("_", "-")
    cipher = cipher.replace("CHACHA20-POLY1305-SHA256", "CHACHA20-POLY1305")
    if kex == "RSA":
        return cipher
    return f"{kex}-{cipher}"


def server_context(get: Getter, listener: str) -> ssl.SSLContext:
    """The SSLContext for `listener`, from Kafka's ssl.* settings; ConfigError if they are
    incomplete or unreadable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for kind, material in (("ssl.keystore.type", ("ssl.keystore.location",)),
                           ("ssl.truststore.type", ("ssl.truststore.location",
                                                    "ssl.truststore.certificates"))):
        value = (get(kind) or "PEM").upper()
        if value != "PEM" and any(get(m) for m in material):
            raise ConfigError(f"{kind}={value} on listener {listener}: nerve reads PEM only "
                              f"(set {kind}=PEM)")
    password = get("ssl.key.password") or get("ssl.keystore.password") or None
    location, key, chain = (get("ssl.keystore.location"), get("ssl.keystore.key"),
                            get("ssl.keystore.certificate.chain"))
    try:
        if location:
            ctx.load_cert_chain(location, password=password)
        elif key and chain:
            with _pem_file(normalize_pem(chain)) as cert_path, \
                    _pem_file(normalize_pem(key)) as key_path:
                ctx.load_cert_chain(cert_path, key_path, password=password)
        else:
            raise ConfigError(f"listener {listener} uses TLS but has no key: set "
                              "ssl.keystore.location, or ssl.keystore.key and "
                              "ssl.keystore.certificate.chain")
        client_auth = (get("ssl.client.auth") or "none").lower()
        if client_auth not in _CLIENT_AUTH:
            raise ConfigError(f"ssl.client.auth={client_auth}: none, requested or required")
        ctx.verify_mode = _CLIENT_AUTH[client_auth]
        trust_file, trust_inline = get("ssl.truststore.location"), get(
            "ssl.truststore.certificates")
        if trust_file:
            ctx.load_verify_locations(cafile=trust_file)
        elif trust_inline:
            ctx.load_verify_locations(cadata=normalize_pem(trust_inline))
        elif client_auth != "none":
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"listener {listener}: cannot load TLS material: {e}") from None
    protocols = [p.strip() for p in (get("ssl.enabled.protocols") or "").split(",") if p.strip()]
    if protocols:
        unknown = [p for p in protocols if p not in _PROTOCOLS]
        if unknown:
            raise ConfigError(f"ssl.enabled.protocols: unknown {unknown}")
        versions = sorted(_PROTOCOLS[p] for p in protocols)
        ctx.minimum_version, ctx.maximum_version = versions[0], versions[-1]
    suites = [s.strip() for s in (get("ssl.cipher.suites") or "").split(",") if s.strip()]
    tls12 = [_java_cipher_to_openssl(s) for s in suites if not s.startswith("TLS_AES_")
             and not s.startswith("TLS_CHACHA20_")]
    if tls12:
        try:
            ctx.set_ciphers(":".join(tls12))
        except ssl.SSLError:
            raise ConfigError(f"ssl.cipher.suites: none of {suites} is known") from None
    return ctx


# ---- principals from client certificates (Kafka's DefaultKafkaPrincipalBuilder)

_SHORT_NAMES = {"commonName": "CN", "organizationalUnitName": "OU", "organizationName": "O",
                "localityName": "L", "stateOrProvinceName": "ST", "countryName": "C",
                "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}


def _escape(value: str) -> str:
    out = re.sub(r'([,+"\\<>;=])', r"\\\1", value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def subject_dn(cert: dict) -> str:  # type: ignore[type-arg]
    """The subject of `SSLSocket.getpeercert()` in RFC 2253 form, as Java's
    X500Principal.getName() gives it (most specific RDN first)."""
    rdns = []
    for rdn in reversed(cert.get("subject", ())):
        rdns.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(rdns)


_RULE = re.compile(r"DEFAULT|RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?)")


class PrincipalMapper:
    """`ssl.principal.mapping.rules`: `RULE:regex/replacement/[L|U]` entries and DEFAULT,
    tried in order; the first whose regex matches the whole DN gives the name."""

    def __init__(self, rules: str | None) -> None:
        self.rules: list[tuple[re.Pattern[str], str, str] | None] = []
        text = (rules or "DEFAULT").strip()
        pos = 0
        while pos < len(text):
            m = _RULE.match(text, pos)
            if m is None:
                raise ConfigError(f"ssl.principal.mapping.rules: cannot parse {text[pos:]!r}")
            if m.group(0) == "DEFAULT":
                self.rules.append(None)
            else:
                try:
                    pattern = re.compile(m.group(1).replace("\\/", "/"))
                except re.error as e:
                    raise ConfigError(f"ssl.principal.mapping.rules: {e}") from None
                replacement = re.sub(r"\$(\d+)", r"\\g<\1>", m.group(2).replace("\\/", "/"))
                self.rules.append((pattern, replacement, m.group(3)))
            pos = m.end()
            while pos < len(text) and text[pos] in ", \t\n":
                pos += 1

    def name(self, dn: str) -> str:
        for rule in self.rules:
            if rule is None:
                return dn
            pattern, replacement, case = rule
            if pattern.fullmatch(dn):
                out = pattern.sub(replacement, dn, count=1)
                return out.lower() if case == "L" else out.upper() if case == "U" else out
        return dn  # no rule matched: Kafka's "No rules apply", the DN as it is

    def principal(self, cert: dict | None) -> str:  # type: ignore[type-arg]
        if not cert or not cert.get("subject"):
            return "User:ANONYMOUS"
        return "User:" + self.name(subject_dn(cert))
