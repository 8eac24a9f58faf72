"""The web console served by `nerve serve --console-port N`, checked with an HTTP client.

Pages are server-rendered, so plain HTTP sees what a person sees; the live parts are
server-sent event streams, read here as a browser's EventSource would. One test (slow) serves
the console standalone against Apache Kafka.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO_ROOT, NerveProcess, free_port
from tests.integration.test_tools_cli import cli, kafka_bootstrap, ok  # noqa: F401

GROUP_ARGS = ("--set", "group.initial.rebalance.delay.ms=0")


class Console:
    def __init__(self, broker_bootstrap: str, url: str) -> None:
        self.bootstrap = broker_bootstrap
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=20, follow_redirects=False)

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return form_post(self.http, self.url, path, data)


def form_post(http: httpx.Client, url: str, path: str, data: dict[str, str]) -> httpx.Response:
    """Post as the console's own forms do: this session's CSRF token, same Origin."""
    token = re.findall(r'name="csrf" value="([0-9a-f]+)"', http.get(url + "/").text)[0]
    return http.post(url + path, data={**data, "csrf": token}, headers={"origin": url})


@pytest.fixture
def console(nerve_factory: Callable[..., NerveProcess]) -> Iterator[Console]:
    port = free_port()
    broker = nerve_factory("--console-port", str(port), *GROUP_ARGS)
    log = broker.log_text()
    # Kafka clients are served first; the console (heavier imports) comes up just after.
    assert log.index("serving Kafka protocol") < log.index(
        f"nerve console on http://127.0.0.1:{port}")
    c = Console(broker.bootstrap, f"http://127.0.0.1:{port}")
    yield c
    c.http.close()


def make_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)


def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, value=v, key=key, headers=[("origin", b"test")])
    assert p.flush(15) == 0


def commit_at(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """A consumer of `group` that commits `offset` on partition 0 and leaves."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    # A fresh Kafka answers NOT_COORDINATOR while __consumer_offsets is still being created and
    # loaded; librdkafka hands that to a synchronous commit instead of retrying it.
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
                return
            except KafkaException as e:
                transient = e.args[0].retriable() or e.args[0].code() in (
                    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, Any]]:
    event = "message"
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])
            event = "message"


# ---------------------------------------------------------------------------- pages
def test_overview_and_topic_page_show_topics_and_messages(
        console: Console, unique_topic: Callable[..., str]) -> None:
    topic = unique_topic()
    make_topic(console.bootstrap, topic, partitions=2)
    produce(console.bootstrap, topic, [b'{"sku": "A-1", "qty": 2}', b"plain <b>text</b>"],
            key=b"customer-42")

    r = console.http.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert f'href="/topics/{topic}"' in r.text
    assert "Consumer groups" in r.text and 'id="throughput"' in r.text
    assert 'method="post" action="/topics"' in r.text  # create form (not read-only)

    r = console.http.get(f"/topics/{topic}")
    assert r.status_code == 200
    assert "&quot;sku&quot;: &quot;A-1&quot;" in r.text  # pretty-printed JSON, escaped
    assert "plain &lt;b&gt;text&lt;/b&gt;" in r.text  # values are escaped, never HTML
    assert "customer-42" in r.text and "origin=test" in r.text
    assert "retention.ms" in r.text  # configs
    # Newest first by default; seek by offset; filter by text.
    r = console.http.get(f"/topics/{topic}", params={"q": "A-1"})
    assert "A-1" in r.text and "plain &lt;b&gt;" not in r.text
    r = console.http.get(f"/topics/{topic}", params={"offset": "5"})
    assert "no messages here" in r.text
    r = console.http.get(f"/topics/{topic}", params={"time": "2000-01-01T00:00"})
    assert "A-1" in r.text

    assert console.http.get("/topics/no-such-topic").status_code == 404
    assert console.http.get("/static/console.js").status_code == 200


def test_produce_form_then_see_it_on_the_sse_tail(console: Console,
                                                   unique_topic: Callable[..., str]) -> None:
    topic = unique_topic()
    make_topic(console.bootstrap, topic)
    got: list[dict[str, Any]] = []
    ready = threading.Event()

    def tail() -> None:
        with httpx.Client(base_url=console.url, timeout=30) as http, \
                http.stream("GET", f"/topics/{topic}/tail") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            for event, data in sse_events(resp):
                if event == "ready":
                    ready.set()
                elif event == "record":
                    got.append(data)
                    return

    t = threading.Thread(target=tail, daemon=True)
    t.start()
    assert ready.wait(20), "the tail never said it was ready"
    r = console.post(f"/topics/{topic}/produce",
                          data={"key": "k1", "value": '{"hello": "form"}',
                                "headers": "source=console\nx=1", "partition": ""})
    assert r.status_code == 303 and "produced+to+partition+0+at+offset+0" in r.headers["location"]
    t.join(20)
    assert got, "no record arrived on the tail"
    rec = got[0]
    assert (rec["key"], rec["value"], rec["offset"]) == ("k1", '{"hello": "form"}', 0)
    assert rec["headers"] == {"source": "console", "x": "1"}
    assert "&quot;hello&quot;" in rec["value_html"]


def test_group_page_shows_lag_and_resets_with_confirmation(
        console: Console, unique_topic: Callable[..., str]) -> None:
    topic, group = unique_topic(), unique_topic("g")
    make_topic(console.bootstrap, topic)
    produce(console.bootstrap, topic, [f"m{i}".encode() for i in range(7)])
    commit_at(console.bootstrap, group, topic, 3)

    r = console.http.get(f"/groups/{group}")
    assert r.status_code == 200
    row = r.text[r.text.index('id="offsets"'):]
    assert '<td class="num">3</td><td class="num">7</td><td class="num lag">4</td>' in row
    assert f'<a href="/groups/{group}">' in console.http.get("/").text

    # Reset: the first post only previews, the second (execute=1) applies.
    r = console.post(f"/groups/{group}/reset", data={"to": "earliest", "topic": topic})
    assert r.status_code == 200 and "Confirm reset" in r.text
    r = console.http.get(f"/groups/{group}")
    assert '<td class="num lag">4</td>' in r.text  # nothing moved yet
    r = console.post(f"/groups/{group}/reset",
                          data={"to": "earliest", "topic": topic, "execute": "1"})
    assert r.status_code == 303
    r = console.http.get(f"/groups/{group}")
    assert '<td class="num">0</td><td class="num">7</td><td class="num lag">7</td>' in r.text

    assert console.http.get("/groups/no-such-group").status_code == 404


def test_metrics_parse_as_prometheus_text(console: Console,
                                          unique_topic: Callable[..., str]) -> None:
    topic, group = unique_topic(), unique_topic("g")
    make_topic(console.bootstrap, topic)
    produce(console.bootstrap, topic, [b"a", b"b", b"c"])
    commit_at(console.bootstrap, group, topic, 1)

    r = console.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    key = (("partition", "0"), ("topic", topic))
    assert samples[("nerve_topic_partition_end_offset", key)] == 3
    assert samples[("nerve_topic_records_in_total", (("topic", topic),))] == 3
    gkey = (("group", group), ("partition", "0"), ("topic", topic))
    assert samples[("nerve_consumer_group_lag", gkey)] == 2
    assert samples[("nerve_consumer_group_committed_offset", gkey)] == 1
    assert families["nerve_consumer_group_lag"].type == "gauge"
    # Running inside nerve serve, the console has the broker's per-client accounting (fed by
    # the produce/fetch handlers when they call it; the family is declared either way).
    assert "# TYPE nerve_client_produced_bytes_total counter" in r.text


def test_overview_events_and_map(console: Console, unique_topic: Callable[..., str]) -> None:
    topic, group = unique_topic(), unique_topic("g")
    make_topic(console.bootstrap, topic)
    produce(console.bootstrap, topic, [b"x"] * 4)
    commit_at(console.bootstrap, group, topic, 1)

    with console.http.stream("GET", "/events/overview") as resp:
        events = sse_events(resp)
        assert next(events)[0] == "history"
        name, sample = next(events)
    assert name == "sample" and sample["topics"][topic]["end"] == 4
    assert sample["groups"][group]["lag"] == 3

    r = console.http.get("/map")
    assert r.status_code == 200 and 'id="map"' in r.text
    graph = console.http.get("/api/map").json()
    ids = {n["id"] for n in graph["nodes"]}
    assert {f"t:{topic}", f"g:{group}"} <= ids
    assert {"from": f"t:{topic}", "to": f"g:{group}"}.items() <= next(
        e for e in graph["edges"] if e["to"] == f"g:{group}").items()
    # nerve's own accounting adds who produced: the test's producer (librdkafka's default
    # client id "rdkafka", from this host) has an edge into the topic.
    producers = [n for n in graph["nodes"] if n.get("kind") == "producer"]
    assert any(n["id"].startswith("p:rdkafka@") for n in producers), graph["nodes"]
    assert any(e["from"].startswith("p:rdkafka@") and e["to"] == f"t:{topic}"
               for e in graph["edges"])


def test_read_only_hides_actions_and_refuses_posts(
        nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str]) -> None:
    port = free_port()
    broker = nerve_factory("--console-port", str(port), "--console-read-only", *GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    make_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, [b"v"])
    commit_at(broker.bootstrap, group, topic, 1)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        for path in ("/", f"/topics/{topic}", f"/groups/{group}"):
            r = http.get(path)
            assert r.status_code == 200, path
            assert 'method="post"' not in r.text, path
            assert "read-only" in r.text
        for path, data in [(f"/topics/{topic}/produce", {"value": "x"}),
                           ("/topics", {"name": "nope"}),
                           (f"/topics/{topic}/delete", {"confirm": topic}),
                           (f"/groups/{group}/reset", {"to": "earliest", "execute": "1"}),
                           (f"/groups/{group}/delete", {})]:
            assert http.post(path, data=data).status_code == 403, path
    # Nothing was changed.
    r = cli(broker.bootstrap, "topics", "describe", topic, "--json")
    assert json.loads(ok(r))["messages"] == 1


def test_no_console_flag(nerve_factory: Callable[..., NerveProcess]) -> None:
    port = free_port()
    broker = nerve_factory("--no-console", "--console-port", str(port))
    assert "nerve console on" not in broker.log_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


# ---------------------------------------------------------------------------- Apache Kafka
def _standalone(bootstrap: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nerve", "console", "--bootstrap-server", bootstrap,
         "--port", str(port), *extra], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "nerve console for" in line, line
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_standalone_console_against_apache_kafka(kafka_bootstrap: str,  # noqa: F811
                                                 unique_topic: Callable[..., str]) -> None:
    topic, group = unique_topic(), unique_topic("g")
    make_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [b'{"on": "kafka"}', b"two"])
    commit_at(kafka_bootstrap, group, topic, 1)
    proc, url = _standalone(kafka_bootstrap)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert f'href="/topics/{topic}"' in http.get("/").text
            r = http.get(f"/topics/{topic}")
            assert "&quot;on&quot;: &quot;kafka&quot;" in r.text
            r = http.get(f"/groups/{group}")
            assert '<td class="num">1</td><td class="num">2</td><td class="num lag">1</td>' \
                in r.text
            fams = {f.name for f in text_string_to_metric_families(http.get("/metrics").text)}
            assert "nerve_consumer_group_lag" in fams
            # No broker accounting on Kafka: the map is topics and groups only.
            graph = http.get("/api/map").json()
            assert graph["accounting"] is False and f"g:{group}" in {
                n["id"] for n in graph["nodes"]}
            r = form_post(http, url, f"/topics/{topic}/produce", {"value": "three"})
            assert r.status_code == 303
    finally:
        proc.terminate()
        proc.wait(15)


def test_standalone_console_against_nerve_read_only(
        nerve_factory: Callable[..., NerveProcess]) -> None:
    broker = nerve_factory("--no-console")
    proc, url = _standalone(broker.bootstrap, "--read-only")
    try:
        r = httpx.get(url + "/", timeout=20)
        assert r.status_code == 200 and "read-only" in r.text
        assert httpx.post(url + "/topics", data={"name": "x"}, timeout=20).status_code == 403
    finally:
        proc.terminate()
        assert proc.wait(15) is not None
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "nerve", "console", "--bootstrap-server",
                        f"127.0.0.1:{free_port()}", "--timeout", "1"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot reach broker" in r.stderr
    assert time.monotonic() - started < 15
