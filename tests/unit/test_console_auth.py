"""The console's login pieces without a broker: the SCRAM client against nerve's SCRAM server,
session expiry and logout, the read-only role, and `next` never leaving the console."""

from __future__ import annotations

from typing import Any

import pytest

from nerve.console.auth import Logins, LoginSettings, _safe_next, parse_users
from nerve.security.scram import ScramError, ScramServer, new_credential
from nerve.tools.wire import AuthenticationError, ScramClient


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_client_against_nerves_server(mechanism: str) -> None:
    cred = new_credential(mechanism, "pw,=secret", 4096)
    server = ScramServer(mechanism, lambda user, _m: cred if user == "a,b=c" else None)
    client = ScramClient(mechanism, "a,b=c", "pw,=secret")
    client.verify(server.step(client.final(server.step(client.first()))))
    assert server.complete and server.username == "a,b=c"
    wrong = ScramClient(mechanism, "a,b=c", "nope")
    server = ScramServer(mechanism, lambda _u, _m: cred)
    with pytest.raises(ScramError):
        server.step(wrong.final(server.step(wrong.first())))
    # A forged server signature is refused by the client.
    client = ScramClient(mechanism, "a,b=c", "pw,=secret")
    server = ScramServer(mechanism, lambda _u, _m: cred)
    client.final(server.step(client.first()))
    with pytest.raises(AuthenticationError):
        client.verify(b"v=" + b"A" * 44)


class FakeCluster:
    def __init__(self, *args: Any) -> None:
        self.args, self.closed = args, False

    def close(self) -> None:
        self.closed = True


def test_sessions_expire_and_end_at_logout(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    settings = LoginSettings("127.0.0.1:1", {"security.protocol": "SASL_PLAINTEXT"},
                             ("SCRAM-SHA-256",), read_only_users=parse_users("User:carol,x"),
                             idle_timeout_s=60, max_age_s=300, make_cluster=FakeCluster)
    logins = Logins(settings, clock=lambda: now[0])
    monkeypatch.setattr("nerve.tools.wire.KafkaWire.__init__", lambda self, *a, **k: None)
    monkeypatch.setattr("nerve.tools.wire.KafkaWire.close", lambda self: None)
    alice = logins.authenticate("alice", "pw", "SCRAM-SHA-256")
    carol = logins.authenticate("carol", "pw", "SCRAM-SHA-256")
    assert not alice.read_only and carol.read_only
    assert alice.cluster.args[3]["sasl.password"] == "pw"  # only the client config holds it
    assert "pw" not in repr(alice)
    with pytest.raises(Exception, match="logs in with SCRAM-SHA-256"):
        logins.authenticate("alice", "pw", "PLAIN")
    ta, tc = logins.add(alice), logins.add(carol)
    assert logins.get(ta) is alice and logins.get("forged") is None
    now[0] += 50
    assert logins.get(ta) is alice  # used: the idle clock restarts
    now[0] += 50
    assert logins.get(tc) is None and carol.closed  # idle for 100 s > 60 s
    assert logins.get(ta) is alice
    now[0] += 250  # 350 s after the login > max_age_s, however busy
    assert logins.get(ta) is None and alice.closed
    bob = logins.authenticate("bob", "pw", "SCRAM-SHA-256")
    tb = logins.add(bob)
    assert logins.remove(tb) is bob and bob.closed and logins.get(tb) is None


def test_next_stays_on_the_console() -> None:
    assert _safe_next("/topics/a?x=1") == "/topics/a?x=1"
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil", "", "/logout"):
        assert _safe_next(bad) == "/"


class FakeBroker:
    def __init__(self, *listeners: tuple[str, str, str]) -> None:
        from nerve.security.listeners import ListenerSpec

        self.listeners = [ListenerSpec(n, p, h, 9000 + i)
                          for i, (n, p, h) in enumerate(listeners)]

    def sasl_mechanisms(self, name: str) -> tuple[str, ...]:
        return ("SCRAM-SHA-512", "PLAIN")


def test_the_embedded_console_picks_its_listener() -> None:
    from nerve.console.auth import SessionCluster
    from nerve.console.server import _embedded_cluster
    from nerve.tools.base import ToolError
    from nerve.tools.kafka import Cluster

    both = FakeBroker(("PLAINTEXT", "PLAINTEXT", "127.0.0.1"),
                      ("INTERNAL", "SASL_PLAINTEXT", "0.0.0.0"),
                      ("EXTERNAL", "SASL_SSL", "0.0.0.0"))
    cluster, logins = _embedded_cluster(both, None, (), frozenset({"carol"}), 60)
    assert isinstance(cluster, SessionCluster) and cluster.bootstrap == "127.0.0.1:9001"
    assert logins.settings.mechanisms == ("SCRAM-SHA-512", "PLAIN")
    assert logins.settings.base_config == {"security.protocol": "SASL_PLAINTEXT"}
    assert logins.settings.read_only_users == {"carol"} and logins.settings.idle_timeout_s == 60
    cluster, logins = _embedded_cluster(both, "plaintext", (), frozenset(), 60)
    assert isinstance(cluster, Cluster) and logins is None
    assert cluster.bootstrap == "127.0.0.1:9000"
    for broker, name in [(FakeBroker(("EXTERNAL", "SASL_SSL", "0.0.0.0")), None),
                         (both, "EXTERNAL"), (both, "nope")]:
        with pytest.raises(ToolError):
            _embedded_cluster(broker, name, (), frozenset(), 60)


def test_a_console_that_logs_in_needs_no_password_off_loopback() -> None:
    from nerve.cli import _console_logs_in
    from nerve.config import BrokerConfig

    sasl = BrokerConfig.load(None, {
        "listeners": "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9095",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256"})
    assert _console_logs_in(sasl, "127.0.0.1", 9092, None)
    assert not _console_logs_in(sasl, "127.0.0.1", 9092, "PLAINTEXT")
    assert not _console_logs_in(BrokerConfig.load(None, {}), "127.0.0.1", 9092, None)
