"""SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, with hashlib and hmac.

Only what Kafka uses: no channel binding (gs2 header "n,," or "y,,"), the user name in
SASL-name encoding (`=2C` for ",", `=3D` for "="), Kafka's `tokenauth` extension refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# AlterUserScramCredentials' mechanism numbers (Kafka's ScramMechanism enum).
MECHANISM_IDS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES = {v: k for k, v in MECHANISM_IDS.items()}
# Kafka's bounds (ScramMechanism.minIterations / maxIterations).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384


class ScramError(Exception):
    """The exchange failed: a bad message, an unknown user or a wrong proof."""


@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def salted_password(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)


def credential_from_salted(hash_name: str, salted: bytes, salt: bytes,
                           iterations: int) -> ScramCredential:
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramCredential(salt, iterations, hashlib.new(hash_name, client_key).digest(),
                           hmac.digest(salted, b"Server Key", hash_name))


def new_credential(mechanism: str, password: str, iterations: int = MIN_ITERATIONS,
                   salt: bytes | None = None) -> ScramCredential:
    hash_name = MECHANISMS[mechanism]
    salt = salt if salt is not None else secrets.token_bytes(32)
    salted = salted_password(hash_name, password.encode(), salt, iterations)
    return credential_from_salted(hash_name, salted, salt, iterations)


def password_matches(mechanism: str, cred: ScramCredential, password: str) -> bool:
    """For SASL/PLAIN against the SCRAM store: derive the stored key and compare."""
    derived = new_credential(mechanism, password, cred.iterations, cred.salt)
    return hmac.compare_digest(derived.stored_key, cred.stored_key)


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"invalid SCRAM attribute {part!r}")
        out[key] = value
    return out


def decode_saslname(name: str) -> str:
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise ScramError("invalid user name encoding")
    return name.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """One SCRAM exchange: client-first -> server-first, client-final -> server-final."""

    def __init__(self, mechanism: str, lookup: object) -> None:
        self.mechanism = mechanism
        self.hash_name = MECHANISMS[mechanism]
        self._lookup = lookup  # callable (user, mechanism) -> ScramCredential | None
        self.username: str | None = None
        self._state = "first"
        self._gs2 = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._cred: ScramCredential | None = None
        self.complete = False

    def step(self, token: bytes) -> bytes:
        """The server's answer to `token`; ScramError when the exchange fails."""
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("SCRAM message is not UTF-8") from None
        if self._state == "first":
            return self._first(text)
        if self._state == "final":
            return self._final(text)
        raise ScramError("SCRAM exchange already complete")

    def _first(self, text: str) -> bytes:
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y"):
            raise ScramError("invalid SCRAM client-first message (channel binding unsupported)")
        self._gs2 = f"{parts[0]},{parts[1]},"
        bare = parts[2]
        attrs = _attributes(bare)
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("SCRAM client-first message lacks n= or r=")
        if attrs.get("tokenauth", "false") == "true":
            raise ScramError("delegation tokens are not supported")
        self.username = decode_saslname(attrs["n"])
        self._cred = self._lookup(self.username, self.mechanism)  # type: ignore[operator]
        if self._cred is None:
            raise ScramError(f"unknown user {self.username!r}")
        self._client_first_bare = bare
        self._nonce = attrs["r"] + secrets.token_urlsafe(18)
        self._server_first = (f"r={self._nonce},s={base64.b64encode(self._cred.salt).decode()},"
                              f"i={self._cred.iterations}")
        self._state = "final"
        return self._server_first.encode()

    def _final(self, text: str) -> bytes:
        assert self._cred is not None
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM client-final message lacks p=")
        attrs = _attributes(without_proof)
        # Kafka checks endsWith, not equality: librdkafka < 1.x (kcat's) sends the client
        # nonce twice, and Kafka accepts it.
        if not attrs.get("r", "").endswith(self._nonce):
            raise ScramError("SCRAM nonce mismatch")
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise ScramError("SCRAM channel binding mismatch")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise ScramError("invalid SCRAM proof encoding") from None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(self._cred.stored_key, auth_message, self.hash_name)
        if len(proof) != len(signature):
            raise ScramError("invalid SCRAM proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(),
                                   self._cred.stored_key):
            raise ScramError("invalid credentials")
        self._state = "done"
        self.complete = True
        server_signature = hmac.digest(self._cred.server_key, auth_message, self.hash_name)
        return b"v=" + base64.b64encode(server_signature)
