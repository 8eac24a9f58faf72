"""A small blocking Kafka protocol client for what librdkafka does not offer: checking a
user's SASL credentials once (the console's login), and DescribeClientQuotas /
AlterClientQuotas (librdkafka has no client-quota API).

One connection to the first bootstrap address, over PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
as librdkafka's settings say (`security.protocol`, `sasl.mechanism`, `sasl.username`,
`sasl.password`, `ssl.ca.location`, `ssl.ca.pem`, `ssl.certificate.location`,
`ssl.key.location`, `ssl.endpoint.identification.algorithm`,
`enable.ssl.certificate.verification`). SASL is SaslHandshake v1 + SaslAuthenticate v2 with
PLAIN or SCRAM-SHA-256/512 (RFC 5802 client side); requests are built with nerve's kio codec,
so the same bytes go to nerve and to Apache Kafka.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import secrets
import socket
import ssl
import struct
import tempfile
from types import TracebackType
from typing import Any

from kio.serial import entity_reader, entity_writer

from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, request_class, response_class
from nerve.tools.base import ToolError, Unreachable

_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class AuthenticationError(ToolError):
    """The broker refused the credentials (SASL_AUTHENTICATION_FAILED) or the mechanism."""


def error_text(code: int, message: str | None = None) -> str:
    name = ErrorCode(code).name.upper() if code in ErrorCode._value2member_map_ else str(code)
    return f"{name}: {message}" if message else name


def _tls_context(conf: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if conf.get("ssl.ca.location"):
        ctx.load_verify_locations(cafile=conf["ssl.ca.location"])
    if conf.get("ssl.ca.pem"):
        ctx.load_verify_locations(cadata=conf["ssl.ca.pem"])
    if conf.get("ssl.certificate.location"):
        ctx.load_cert_chain(conf["ssl.certificate.location"],
                            conf.get("ssl.key.location") or None,
                            conf.get("ssl.key.password") or None)
    elif conf.get("ssl.certificate.pem") and conf.get("ssl.key.pem"):
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:  # ssl wants a file
            f.write(conf["ssl.key.pem"] + "\n" + conf["ssl.certificate.pem"])
            f.flush()
            ctx.load_cert_chain(f.name, password=conf.get("ssl.key.password") or None)
    if conf.get("ssl.endpoint.identification.algorithm", "https").lower() in ("none", ""):
        ctx.check_hostname = False
    if conf.get("enable.ssl.certificate.verification", "true").lower() == "false":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ScramClient:
    """The client side of one SCRAM exchange (RFC 5802, no channel binding)."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.hash = _HASHES[mechanism]
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.nonce = secrets.token_urlsafe(24)
        self.first_bare = f"n={name},r={self.nonce}"
        self.password = password.encode()
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        if "e" in attrs or not attrs.get("r", "").startswith(self.nonce):
            raise AuthenticationError(f"SCRAM: bad server-first message {text!r}")
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = hmac.digest(hmac.digest(salted, b"Server Key", self.hash),
                                            auth_message, self.hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(p.split("=", 1) for p in server_final.decode().split(",") if "=" in p)
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")),
                                   self.server_signature):
            raise AuthenticationError("SCRAM: the broker's signature does not match")


class KafkaWire:
    """One authenticated connection; `call()` sends a request and decodes its response."""

    def __init__(self, bootstrap: str, conf: dict[str, str] | None = None,
                 timeout: float = 10.0, client_id: str = "nerve-console") -> None:
        conf = dict(conf or {})
        host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
        host = host.strip("[]")
        protocol = conf.get("security.protocol", "PLAINTEXT").upper()
        self.client_id = client_id.encode()
        self.correlation_id = 0
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        except (OSError, ValueError) as e:
            raise Unreachable(f"cannot reach broker at {bootstrap}: {e}") from None
        try:
            if protocol in ("SSL", "SASL_SSL"):
                sock = _tls_context(conf).wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise ToolError(f"TLS with {bootstrap} failed: {e}") from None
        self.sock = sock
        if protocol.startswith("SASL_"):
            try:
                self._authenticate(conf.get("sasl.mechanism", "GSSAPI").upper(),
                                   conf.get("sasl.username", ""), conf.get("sasl.password", ""))
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> KafkaWire:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _authenticate(self, mechanism: str, user: str, password: str) -> None:
        r = self.call(17, 1, mechanism=mechanism)
        if r.error_code != ErrorCode.none:
            raise AuthenticationError(
                f"the broker does not enable SASL mechanism {mechanism} (it has "
                f"{', '.join(r.mechanisms) or 'none'})")
        if mechanism == "PLAIN":
            self._sasl(f"\0{user}\0{password}".encode())
        elif mechanism in _HASHES:
            scram = ScramClient(mechanism, user, password)
            server_first = self._sasl(scram.first())
            scram.verify(self._sasl(scram.final(server_first)))
        else:
            raise AuthenticationError(f"SASL mechanism {mechanism} is not supported here")

    def _sasl(self, token: bytes) -> bytes:
        r = self.call(36, 2, auth_bytes=token)
        if r.error_code != ErrorCode.none:
            raise AuthenticationError(r.error_message or error_text(r.error_code))
        return bytes(r.auth_bytes)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Unreachable("the broker closed the connection")
            buf += chunk
        return bytes(buf)

    def call(self, api_key: int, version: int, /, **fields: Any) -> Any:
        req_cls = request_class(api_key, version)
        body = build(req_cls, fields)
        self.correlation_id += 1
        flexible = bool(req_cls.__flexible__)
        header = struct.pack(">hhih", api_key, version, self.correlation_id,
                             len(self.client_id)) + self.client_id + (b"\0" if flexible else b"")
        out = io.BytesIO()
        entity_writer(req_cls)(out, body)
        payload = header + out.getvalue()
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
            (size,) = struct.unpack(">i", self._exact(4))
            frame = self._exact(size)
        except TimeoutError:
            raise Unreachable("the broker did not answer in time") from None
        except OSError as e:
            raise Unreachable(f"connection to the broker failed: {e}") from None
        offset = 5 if flexible and api_key != 18 else 4
        resp, _ = entity_reader(response_class(api_key, version))(frame, offset)
        return resp
