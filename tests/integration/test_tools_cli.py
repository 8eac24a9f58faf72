"""`nerve topics|produce|consume|groups` as a user runs them: subprocesses against a real broker.

Every scenario runs against a real `nerve serve`, and (marked slow) against Apache Kafka 4.4.0
started by scripts/kafka-broker: the CLI speaks only the Kafka protocol, so both must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, NerveProcess, free_port

KAFKA_BROKER = REPO_ROOT / "scripts" / "kafka-broker"


def cli(bootstrap: str, *args: str, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m nerve ARGS --bootstrap-server B`, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "nerve", *args, "--bootstrap-server", bootstrap],
        input=input, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def wait_for(check: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------- brokers
@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Apache Kafka 4.4.0 broker (scripts/kafka-broker) for the session."""
    if not KAFKA_BROKER.exists():
        pytest.skip("scripts/kafka-broker is not there")
    d = tmp_path_factory.mktemp("kafka-cli")
    r = subprocess.run([str(KAFKA_BROKER), "start", "--dir", str(d),
                        "--set", "group.initial.rebalance.delay.ms=0"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"scripts/kafka-broker start failed:\n{r.stdout}{r.stderr}", pytrace=False)
    yield r.stdout.strip().splitlines()[-1]
    subprocess.run([str(KAFKA_BROKER), "stop", "--dir", str(d)], capture_output=True,
                   timeout=120)


@pytest.fixture(params=["nerve", pytest.param("kafka", marks=pytest.mark.slow)])
def bootstrap(request: pytest.FixtureRequest,
              nerve_factory: Callable[..., NerveProcess]) -> str:
    """Runs each test against nerve, and (slow) against Apache Kafka."""
    if request.param == "kafka":
        return str(request.getfixturevalue("kafka_bootstrap"))
    return nerve_factory("--no-console", "--set", "group.initial.rebalance.delay.ms=0").bootstrap


# ---------------------------------------------------------------------------- topics
def test_topics_create_list_describe_alter_delete(bootstrap: str,
                                                  unique_topic: Callable[..., str]) -> None:
    topic = unique_topic()
    out = ok(cli(bootstrap, "topics", "create", topic, "--partitions", "3",
                 "--config", "retention.ms=86400000"))
    assert f"created topic {topic}" in out

    r = cli(bootstrap, "topics", "create", topic)
    assert r.returncode == 1 and "already exists" in r.stderr

    listed = json.loads(ok(cli(bootstrap, "topics", "list", "--json")))
    assert {"name": topic, "partitions": 3, "messages": 0, "end_offset_total": 0} in listed
    assert topic in ok(cli(bootstrap, "topics", "list"))  # the table for people

    desc = json.loads(ok(cli(bootstrap, "topics", "describe", topic, "--json")))
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    configs = {c["name"]: c for c in desc["configs"]}
    assert configs["retention.ms"]["value"] == "86400000"
    assert not configs["retention.ms"]["default"]
    table = ok(cli(bootstrap, "topics", "describe", topic))
    assert "retention.ms" in table and "PARTITION" in table

    ok(cli(bootstrap, "topics", "alter", topic, "--partitions", "4",
           "--config", "retention.ms=3600000", "--config", "cleanup.policy=delete"))
    desc = json.loads(ok(cli(bootstrap, "topics", "describe", topic, "--json")))
    assert len(desc["partitions"]) == 4
    assert {c["name"]: c["value"] for c in desc["configs"]}["retention.ms"] == "3600000"
    ok(cli(bootstrap, "topics", "alter", topic, "--delete-config", "retention.ms"))
    desc = json.loads(ok(cli(bootstrap, "topics", "describe", topic, "--json")))
    assert {c["name"]: c for c in desc["configs"]}["retention.ms"]["default"]

    assert f"deleted topic {topic}" in ok(cli(bootstrap, "topics", "delete", topic))
    wait_for(lambda: topic not in {t["name"] for t in json.loads(
        ok(cli(bootstrap, "topics", "list", "--json")))}, what="the topic to disappear")


# ---------------------------------------------------------------------------- records
def test_produce_lines_with_keys_and_headers_then_consume_json(
        bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = unique_topic()
    ok(cli(bootstrap, "topics", "create", topic))
    lines = 'k1|{"sku": "A-1", "qty": 2}\nk2|plain text\n\nno-key-here\n'
    r = cli(bootstrap, "produce", topic, "--key-separator", "|", "--header", "source=cli",
            "--header", "trace=abc=1", input=lines)
    ok(r)
    assert "produced 3 message(s)" in r.stderr  # the empty line is skipped

    out = ok(cli(bootstrap, "consume", topic, "--from-beginning", "--limit", "3", "--json"))
    recs = [json.loads(line) for line in out.splitlines()]
    assert [(m["offset"], m["key"], m["value"]) for m in recs] == [
        (0, "k1", '{"sku": "A-1", "qty": 2}'), (1, "k2", "plain text"),
        (2, None, "no-key-here")]
    assert all(m["headers"] == {"source": "cli", "trace": "abc=1"} for m in recs)
    assert json.loads(recs[0]["value"]) == {"sku": "A-1", "qty": 2}  # JSON passes through
    assert all(m["partition"] == 0 and m["timestamp"] > 0 for m in recs)

    # --file, --format, --offset, and --exit at the end of the partitions
    f = tmp_path / "more.txt"
    f.write_text("k3:v3\n")
    ok(cli(bootstrap, "produce", topic, "--file", str(f), "-K", ":"))
    out = ok(cli(bootstrap, "consume", topic, "--offset", "2", "--exit",
                 "--format", "{partition}:{offset} {key}={value} [{headers}]"))
    assert out.splitlines() == ["0:2 =no-key-here [source=cli,trace=abc=1]", "0:3 k3=v3 []"]

    # --timestamp: from the first record at or after that time (here: all of them)
    out = ok(cli(bootstrap, "consume", topic, "--timestamp", str(recs[0]["timestamp"]),
                 "--exit"))
    assert out.splitlines()[0] == '{"sku": "A-1", "qty": 2}' and len(out.splitlines()) == 4


def test_groups_describe_lag_then_reset_to_earliest(bootstrap: str,
                                                    unique_topic: Callable[..., str]) -> None:
    topic, group = unique_topic(), unique_topic("g")
    ok(cli(bootstrap, "topics", "create", topic))
    ok(cli(bootstrap, "produce", topic, input="".join(f"m{i}\n" for i in range(5))))
    # A consumer in the group reads two messages and commits them on the way out.
    out = ok(cli(bootstrap, "consume", topic, "--group", group, "--from-beginning",
                 "--limit", "2"))
    assert out.splitlines() == ["m0", "m1"]

    assert group in {g["group_id"] for g in json.loads(ok(cli(bootstrap, "groups", "list",
                                                              "--json")))}
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert desc["state"] == "EMPTY" and desc["members"] == []
    parts = [(p["topic"], p["partition"], p["committed"], p["end"], p["lag"])
             for p in desc["partitions"]]
    assert parts == [(topic, 0, 2, 5, 3)]
    assert desc["total_lag"] == 3
    table = ok(cli(bootstrap, "groups", "describe", group))
    assert "LAG" in table and "total lag: 3" in table

    # Dry run first, as Kafka's tool: nothing moves.
    r = cli(bootstrap, "groups", "reset-offsets", group, "--to-earliest", "--json")
    plan = json.loads(ok(r))
    assert plan["executed"] is False
    assert plan["partitions"] == [{"topic": topic, "partition": 0, "current": 2, "new": 0}]
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert desc["partitions"][0]["committed"] == 2

    r = cli(bootstrap, "groups", "reset-offsets", group, "--to-earliest", "--execute")
    ok(r)
    assert "reset" in r.stderr
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert (desc["partitions"][0]["committed"], desc["partitions"][0]["lag"]) == (0, 5)
    # The group resumes from the reset position.
    out = ok(cli(bootstrap, "consume", topic, "--group", group, "--limit", "1"))
    assert out.splitlines() == ["m0"]

    ok(cli(bootstrap, "groups", "reset-offsets", group, "--to-offset", "4", "--topic", topic,
           "--execute"))
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert desc["partitions"][0]["committed"] == 4

    assert f"deleted group {group}" in ok(cli(bootstrap, "groups", "delete", group))
    r = cli(bootstrap, "groups", "describe", group)
    assert r.returncode == 1 and "unknown group" in r.stderr


def test_unknown_topic_is_one_line_and_exit_1(bootstrap: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    for args, stdin in [
        (("topics", "describe", missing), None),
        (("topics", "delete", missing), None),
        (("topics", "alter", missing, "--partitions", "2"), None),
        (("consume", missing, "--exit"), None),
    ]:
        r = cli(bootstrap, *args, input=stdin)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == f"Error: unknown topic '{missing}'", (args, r.stderr)


# ---------------------------------------------------------------------------- no broker
def test_unreachable_broker_fails_fast_with_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (("topics", "list"), ("groups", "list"), ("consume", "t", "--exit")):
        started = time.monotonic()
        r = cli(address, *args, "--timeout", "1")
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == f"Error: cannot reach broker at {address}", r.stderr
        assert time.monotonic() - started < 15


def test_usage_errors_exit_2(bootstrap: str) -> None:
    r = cli(bootstrap, "groups", "reset-offsets", "g", "--to-earliest", "--to-offset", "3")
    assert r.returncode == 2 and "exactly one of" in r.stderr
    r = cli(bootstrap, "consume", "t", "--from-beginning", "--offset", "3")
    assert r.returncode == 2


def test_bootstrap_from_environment(nerve_factory: Callable[..., NerveProcess],
                                    unique_topic: Callable[..., str]) -> None:
    broker = nerve_factory("--no-console")
    topic = unique_topic()
    env_run = subprocess.run(
        [sys.executable, "-m", "nerve", "topics", "create", topic], capture_output=True,
        text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "NERVE_BOOTSTRAP_SERVER": broker.bootstrap})
    ok(env_run)
    assert topic in ok(cli(broker.bootstrap, "topics", "list"))
