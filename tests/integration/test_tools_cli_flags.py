"""The CLI's kcat/rpk-parity flags (issue 15) as a user runs them: subprocesses against one
`nerve serve` for the module, and (marked slow) against Apache Kafka 4.4.0.

produce: auto-creation, -k, -Z, --compression, --acks, --whole (binary); consume: -o -N,
A:B, s@/e@, several topics and regexes, escapes in --format, --binary, headers as JSON,
SIGTERM leaves the group, an unreachable broker is said once; topics create defaults and
--if-not-exists, trim, delete by pattern; cluster info; groups reset-offsets modes and
delete-offsets.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, NerveProcess
from tests.integration.test_tools_cli import cli, kafka_bootstrap, ok, wait_for  # noqa: F401


@pytest.fixture(scope="module")
def module_nerve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path_factory.mktemp("cli-flags") / "data",
                        extra_args=["--no-console", "--set",
                                    "group.initial.rebalance.delay.ms=0"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(params=["nerve", pytest.param("kafka", marks=pytest.mark.slow)])
def bootstrap(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":
        return str(request.getfixturevalue("kafka_bootstrap"))
    return request.getfixturevalue("module_nerve").bootstrap


def name(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


# ---------------------------------------------------------------------------- produce
def test_produce_creates_topic_with_key_null_compression_acks(bootstrap: str) -> None:
    topic = name()  # never created: the broker auto-creates it on the producer's Metadata
    r = cli(bootstrap, "produce", topic, "-k", "fixed", "-Z", "--compression", "gzip",
            "--acks", "1", "-H", "h=1", input="one\n\ntwo\n")
    ok(r)
    assert "produced 3 message(s)" in r.stderr  # -Z: the empty line is a null value
    recs = records(ok(cli(bootstrap, "consume", topic, "-o", "beginning", "-e", "--json")))
    assert [(m["key"], m["value"]) for m in recs] == [
        ("fixed", "one"), ("fixed", None), ("fixed", "two")]
    assert all(m["headers"] == {"h": "1"} for m in recs)
    # --format escapes, -Z prints NULL, headers as JSON
    out = ok(cli(bootstrap, "consume", topic, "-o", "beginning", "-e", "-Z",
                 "--format", r"{offset}\t{value}\t{headers_json}\n"))
    assert out.split("\n") == ['0\tone\t{"h": "1"}', "", '1\tNULL\t{"h": "1"}', "",
                               '2\ttwo\t{"h": "1"}', "", ""]
    # -Z also makes an empty key (KEY<SEP>VALUE with nothing before SEP) null
    ok(cli(bootstrap, "produce", topic, "-K", r"\t", "-Z", input="\tv\nk\t\n"))
    recs = records(ok(cli(bootstrap, "consume", topic, "-o", "3", "-e", "--json")))
    assert [(m["key"], m["value"]) for m in recs] == [(None, "v"), ("k", None)]


def test_produce_whole_binary_file_prints_hex_or_base64(bootstrap: str,
                                                        tmp_path: Path) -> None:
    topic = name()
    ok(cli(bootstrap, "topics", "create", topic))
    blob = bytes(range(256)) + b"\n\xff\xfe"
    f = tmp_path / "blob.bin"
    f.write_bytes(blob)
    ok(cli(bootstrap, "produce", topic, "--whole", "--file", str(f), "-k", "k"))
    doc = tmp_path / "doc.json"
    doc.write_text('{\n  "a": 1\n}\n')
    ok(cli(bootstrap, "produce", topic, "--whole", "--file", str(doc)))
    recs = records(ok(cli(bootstrap, "consume", topic, "-o", "beginning", "-e", "--json")))
    assert recs[0]["value_encoding"] == "hex" and bytes.fromhex(recs[0]["value"]) == blob
    assert "key_encoding" not in recs[0] and recs[0]["key"] == "k"
    assert recs[1]["value"] == '{\n  "a": 1\n}\n' and "value_encoding" not in recs[1]
    out = ok(cli(bootstrap, "consume", topic, "-o", "0:1", "--binary", "base64"))
    assert base64.b64decode(out.strip()) == blob


def test_produce_to_unknown_topic_without_auto_create(
        nerve_factory: Callable[..., NerveProcess]) -> None:
    broker = nerve_factory("--no-console", "--set", "auto.create.topics.enable=false")
    r = cli(broker.bootstrap, "produce", "nope", input="x\n")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("Error: unknown topic 'nope'"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- consume
def test_consume_last_n_ranges_and_timestamps(bootstrap: str) -> None:
    topic = name()
    ok(cli(bootstrap, "topics", "create", topic, "--partitions", "2"))
    for p in (0, 1):
        ok(cli(bootstrap, "produce", topic, "--partition", str(p),
               input="".join(f"p{p}-{i}\n" for i in range(5))))
    out = ok(cli(bootstrap, "consume", topic, "-o", "-2", "-e", "--format", "{value}"))
    assert sorted(out.split()) == ["p0-3", "p0-4", "p1-3", "p1-4"]  # last 2 per partition
    out = ok(cli(bootstrap, "consume", topic, "-o", "1:3", "--format", "{value}"))  # no -e
    assert sorted(out.split()) == ["p0-1", "p0-2", "p1-1", "p1-2"]

    single = name()
    ok(cli(bootstrap, "topics", "create", single, "--partitions", "1"))
    ok(cli(bootstrap, "produce", single, input="a1\na2\n"))
    time.sleep(1.1)
    ok(cli(bootstrap, "produce", single, input="b1\nb2\n"))
    recs = records(ok(cli(bootstrap, "consume", single, "-o", "beginning", "-e", "--json")))
    t_b = recs[2]["timestamp"]
    assert t_b > recs[1]["timestamp"]
    out = ok(cli(bootstrap, "consume", single, "-o", f"s@{t_b}", "-e"))
    assert out.split() == ["b1", "b2"]
    out = ok(cli(bootstrap, "consume", single, "-o", "beginning", "-o", f"e@{t_b}"))
    assert out.split() == ["a1", "a2"]  # stops by itself at the first record of that time


def test_consume_several_topics_and_patterns(bootstrap: str) -> None:
    prefix = name("multi")
    a, b = f"{prefix}-a", f"{prefix}-b"
    for t in (a, b):
        ok(cli(bootstrap, "topics", "create", t))
        ok(cli(bootstrap, "produce", t, input=f"in-{t}\n"))
    for args in ((a, b), (f"^{prefix}-.*",), (f"{prefix}-*",)):
        out = ok(cli(bootstrap, "consume", *args, "-o", "beginning", "-e",
                     "--format", "{topic}={value}"))
        assert sorted(out.split()) == [f"{a}=in-{a}", f"{b}=in-{b}"], args
    r = cli(bootstrap, "consume", f"^{prefix}-zzz", "-e")
    assert r.returncode == 1 and "no topic matches" in r.stderr


def test_consumer_leaves_its_group_on_sigterm(bootstrap: str) -> None:
    topic, group = name(), name("g")
    ok(cli(bootstrap, "topics", "create", topic))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nerve", "consume", topic, "-g", group,
         "--bootstrap-server", bootstrap], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        def members() -> int:
            r = cli(bootstrap, "groups", "describe", group, "--json")
            return len(json.loads(r.stdout)["members"]) if r.returncode == 0 else 0

        wait_for(lambda: members() == 1, timeout=30, what="the consumer to join")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # Left the group at once: not after the 45 s session timeout
        assert members() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # its own broker, stopped and restarted, and waits for librdkafka
def test_consume_says_once_when_the_broker_is_away_then_resumes(
        nerve_factory: Callable[..., NerveProcess], tmp_path: Path) -> None:
    broker = nerve_factory("--no-console")
    topic = name()
    ok(cli(broker.bootstrap, "topics", "create", topic))
    err = (tmp_path / "err.txt").open("w+")
    ok(cli(broker.bootstrap, "produce", topic, input="before\n"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nerve", "consume", topic, "-o", "beginning",
         "--bootstrap-server", broker.bootstrap], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=err, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "before"  # started and reading
        broker.stop()
        wait_for(lambda: "cannot reach" in (tmp_path / "err.txt").read_text(), timeout=30,
                 what="the warning")
        time.sleep(3)  # librdkafka retries meanwhile: still one line
        broker.start()
        ok(cli(broker.bootstrap, "produce", topic, input="after\n"))
        assert proc.stdout.readline().strip() == "after"
        text = (tmp_path / "err.txt").read_text()
        assert text.count("cannot reach") == 1, text
    finally:
        proc.kill()
        proc.wait()
        err.close()


# ---------------------------------------------------------------------------- topics, cluster
def test_topics_defaults_if_not_exists_trim_delete_pattern_cluster_info(bootstrap: str
                                                                         ) -> None:
    prefix = name("tt")
    a, b = f"{prefix}-a", f"{prefix}-b"
    out = ok(cli(bootstrap, "topics", "create", a))  # -1/-1: the broker's defaults
    assert f"created topic {a} (1 partition(s))" in out
    r = cli(bootstrap, "topics", "create", a)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert "exists already" in ok(cli(bootstrap, "topics", "create", a, "--if-not-exists"))
    ok(cli(bootstrap, "topics", "create", b, "-p", "2"))
    ok(cli(bootstrap, "produce", a, input="".join(f"{i}\n" for i in range(5))))

    trimmed = json.loads(ok(cli(bootstrap, "topics", "trim", a, "--offset", "3", "--json")))
    assert trimmed == [{"partition": 0, "low_watermark": 3}]
    desc = json.loads(ok(cli(bootstrap, "topics", "describe", a, "--json")))
    assert (desc["partitions"][0]["start"], desc["partitions"][0]["end"]) == (3, 5)
    assert ok(cli(bootstrap, "consume", a, "-o", "beginning", "-e")).split() == ["3", "4"]

    info = json.loads(ok(cli(bootstrap, "cluster", "info", "--json")))
    assert info["brokers"] and any(br["controller"] for br in info["brokers"])
    by_name = {t["name"]: t for t in info["topics"]}
    assert len(by_name[b]["partitions"]) == 2
    assert by_name[a]["partitions"][0]["leader"] in {br["id"] for br in info["brokers"]}
    assert b in ok(cli(bootstrap, "cluster", "info"))

    out = ok(cli(bootstrap, "topics", "delete", f"{prefix}-*", "--dry-run"))
    assert sorted(out.splitlines()) == [f"would delete topic {a}", f"would delete topic {b}"]
    out = ok(cli(bootstrap, "topics", "delete", f"^{prefix}-"))
    assert sorted(out.splitlines()) == [f"deleted topic {a}", f"deleted topic {b}"]
    wait_for(lambda: not {a, b} & {t["name"] for t in json.loads(
        ok(cli(bootstrap, "topics", "list", "--json")))}, what="the topics to go")


# ---------------------------------------------------------------------------- groups
def test_reset_offsets_modes_and_delete_offsets(bootstrap: str, tmp_path: Path) -> None:
    topic, group = name(), name("g")
    ok(cli(bootstrap, "topics", "create", topic, "-p", "2"))
    for p in (0, 1):
        ok(cli(bootstrap, "produce", topic, "--partition", str(p),
               input="".join(f"{i}\n" for i in range(6))))
    ok(cli(bootstrap, "consume", topic, "-g", group, "--from-beginning", "--limit", "12"))

    def plan(*args: str) -> dict[tuple[str, int], int]:
        out = json.loads(ok(cli(bootstrap, "groups", "reset-offsets", group, *args,
                                "--json")))
        return {(r["topic"], r["partition"]): r["new"] for r in out["partitions"]}

    r = cli(bootstrap, "groups", "reset-offsets", group, "--to-latest", "--to-earliest")
    assert r.returncode == 2 and "exactly one of" in r.stderr
    assert plan("--shift-by", "-2") == {(topic, 0): 4, (topic, 1): 4}
    assert plan("--shift-by", "-100") == {(topic, 0): 0, (topic, 1): 0}  # clamped
    assert plan("--to-current") == {(topic, 0): 6, (topic, 1): 6}
    assert plan("--to-datetime", "2000-01-01T00:00:00.000") == {(topic, 0): 0, (topic, 1): 0}
    assert plan("--by-duration", "PT0S") == {(topic, 0): 6, (topic, 1): 6}
    assert plan("--by-duration", "P1D") == {(topic, 0): 0, (topic, 1): 0}
    assert plan("--to-earliest", "--topic", f"{topic}:1") == {(topic, 1): 0}
    f = tmp_path / "offsets.csv"
    f.write_text(f"{topic},0,2\n{topic},1,5\n")
    ok(cli(bootstrap, "groups", "reset-offsets", group, "--from-file", str(f), "--execute"))
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert {p["partition"]: p["committed"] for p in desc["partitions"]} == {0: 2, 1: 5}
    out = ok(cli(bootstrap, "groups", "reset-offsets", group, "--to-current", "--export"))
    assert out.splitlines() == [f"{topic},0,2", f"{topic},1,5"]

    out = json.loads(ok(cli(bootstrap, "groups", "delete-offsets", group, "--topic",
                            f"{topic}:1", "--json")))
    assert out == [{"topic": topic, "partition": 1, "error": None}]
    desc = json.loads(ok(cli(bootstrap, "groups", "describe", group, "--json")))
    assert {p["partition"]: p["committed"] for p in desc["partitions"]} == {0: 2}
