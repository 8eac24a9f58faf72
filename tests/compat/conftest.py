"""Differential tests: the same scenario against nerve and against a real Apache Kafka 4.4.0.

    def test_x(broker):              # runs twice: broker.name == "nerve", then "kafka"
        assert observe(broker.bootstrap) == WHAT_KAFKA_DOES

Both brokers are session-scoped (Kafka takes ~10 s to start); tests use unique topic and group
names. The `kafka` side is the oracle: a test's expectation must hold on it first. Run with
`scripts/test-compat` (these tests are also marked slow, so `scripts/test` deselects them).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, NerveProcess

KAFKA_BROKER = REPO_ROOT / "scripts" / "kafka-broker"


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml belongs to others; --strict-markers needs the marker registered.
    config.addinivalue_line(
        "markers", "compat: differential tests against Apache Kafka; run with scripts/test-compat"
    )


class KafkaStartError(RuntimeError):
    pass


class KafkaProcess:
    """Apache Kafka (KRaft, broker+controller) via scripts/kafka-broker, in its own dir."""

    def __init__(self, directory: Path | str, nodes: int = 1,
                 sets: dict[str, str] | None = None, listeners: list[str] = ()) -> None:
        self.dir = Path(directory)
        self.nodes = nodes
        self.sets = dict(sets or {})
        self.listeners = list(listeners)  # extra NAME:PROTOCOL:PORT (scripts/kafka-broker)
        self.bootstrap = ""
        self.startup_s: float | None = None

    def start(self, timeout: float = 180) -> KafkaProcess:
        args = [str(KAFKA_BROKER), "start", "--nodes", str(self.nodes), "--dir", str(self.dir)]
        for k, v in self.sets.items():
            args += ["--set", f"{k}={v}"]
        for item in self.listeners:
            args += ["--listener", item]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise KafkaStartError(f"scripts/kafka-broker start failed ({r.returncode}):\n"
                                  f"{r.stdout}{r.stderr}")
        self.bootstrap = r.stdout.strip().splitlines()[-1]
        state = json.loads((self.dir / "state.json").read_text())
        self.startup_s = state.get("startup_s")
        return self

    def stop(self) -> None:
        subprocess.run([str(KAFKA_BROKER), "stop", "--dir", str(self.dir)],
                       capture_output=True, text=True, timeout=60)

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(p.read_text(errors="replace")[-chars:]
                         for p in sorted(self.dir.glob("node-*/server.log")))


def _kafka_libs_ready() -> bool:
    cache = Path(os.environ.get("NERVE_CACHE") or Path.home() / ".cache" / "nerve")
    version = os.environ.get("KAFKA_VERSION") or "4.4.0"
    return (cache / f"kafka-{version}" / ".complete").is_file()


# Both brokers sweep retention every second (Kafka's default waits 30 s, then 5 min), so a
# retention test sees what each deletes within seconds.
RETENTION_SWEEP = {"log.retention.check.interval.ms": "1000", "log.initial.task.delay.ms": "0"}
# Both cleaners look for dirty compacted logs every 200 ms (Kafka's default: 15 s).
RETENTION_SWEEP["log.cleaner.backoff.ms"] = "200"
NERVE_CONFIG_KEYS = {"log.retention.check.interval.ms",  # nerve has no initial task delay
                     "log.cleaner.backoff.ms"}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaProcess]:
    """One Apache Kafka 4.4.0 broker for the whole session."""
    if not _kafka_libs_ready():
        r = subprocess.run([str(REPO_ROOT / "scripts" / "install-test-deps"), "jars"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"scripts/install-test-deps jars failed:\n{r.stdout}{r.stderr}",
                        pytrace=False)
    proc = KafkaProcess(tmp_path_factory.mktemp("kafka"), sets=RETENTION_SWEEP)
    try:
        proc.start()
    except KafkaStartError as e:
        pytest.fail(str(e), pytrace=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def nerve_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    """One nerve for the whole session, configured like the Kafka one where they differ."""
    base = tmp_path_factory.mktemp("nerve")
    proc = NerveProcess(base / "data", extra_args=[
        "--set", "group.initial.rebalance.delay.ms=0",
        *[a for k, v in RETENTION_SWEEP.items() if k in NERVE_CONFIG_KEYS
          for a in ("--set", f"{k}={v}")]])
    proc.start()
    yield proc
    proc.stop()


@dataclass(frozen=True)
class Broker:
    name: str  # "nerve" or "kafka"
    bootstrap: str


@pytest.fixture(params=["nerve", "kafka"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each test using this runs once per broker, with the same expectations for both."""
    name = request.param
    proc = request.getfixturevalue(f"{name}_broker")
    if name == "nerve" and not proc.running:
        pytest.fail(f"nerve is not running any more:\n{proc.log_tail()}", pytrace=False)
    return Broker(name, proc.bootstrap)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """unique("t") -> "t-1a2b3c4d": fresh topic/group names (both brokers live all session)."""
    return lambda prefix="t": f"{prefix}-{uuid.uuid4().hex[:8]}"


def nerve_bug(request: pytest.FixtureRequest, broker: Broker, reason: str) -> None:
    """Mark this run as a known nerve bug (strict xfail) on the nerve side only.

    Only for differences reported as nerve bugs; intended differences go to docs/oracle.md.
    """
    if broker.name == "nerve":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"nerve bug: {reason}"))
