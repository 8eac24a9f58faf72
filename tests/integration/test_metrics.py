"""The broker's own Prometheus endpoint (`nerve serve --metrics-port`, nerve/metrics.py):
scraped from a `--no-console` broker after real clients produced, consumed and committed, every
family parsed with prometheus-client's parser; and every query of the Grafana dashboard in
docs/ names metrics that the scrape has data for."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO_ROOT, NerveProcess

TOPIC, GROUP, RECORDS, COMMITTED = "metrics-t", "metrics-g", 40, 25

FAMILIES = {
    # name: prometheus type; the whole list of issue 15
    "nerve_requests": "counter", "nerve_request_errors": "counter",
    "nerve_request_duration_seconds": "histogram",
    "nerve_topic_bytes_in": "counter", "nerve_topic_records_in": "counter",
    "nerve_topic_bytes_out": "counter",
    "nerve_log_size_bytes": "gauge", "nerve_log_segments": "gauge",
    "nerve_log_end_offset": "gauge", "nerve_log_start_offset": "gauge",
    "nerve_consumer_group_lag": "gauge", "nerve_consumer_group_committed_offset": "gauge",
    "nerve_connections": "gauge",
    "nerve_fsync_duration_seconds": "histogram", "nerve_fsync_batch_logs": "histogram",
    "nerve_data_dir_free_bytes": "gauge", "nerve_data_dir_total_bytes": "gauge",
    "process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge", "nerve_build_info": "gauge", "nerve_uptime_seconds": "gauge",
    "nerve_under_replicated_partitions": "gauge", "nerve_offline_partitions": "gauge",
    "nerve_partitions": "gauge", "nerve_topics": "gauge",
    # LogCleaner.metrics() (issue 17)
    "nerve_cleaner_passes": "counter", "nerve_cleaner_bytes_reclaimed": "counter",
    "nerve_cleaner_records_read": "counter", "nerve_cleaner_seconds": "counter",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path_factory.mktemp("metrics") / "data",
                        extra_args=["--no-console", "--metrics-port", "0",
                                    "--set", "group.initial.rebalance.delay.ms=0"])
    proc.start()
    bs = proc.bootstrap
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(TOPIC, 2, 1)])[TOPIC].result(30)
    p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 20})
    for i in range(RECORDS):
        p.produce(TOPIC, key=str(i % 2).encode(), value=b"v" * 100, partition=i % 2)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bs, "group.id": GROUP, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([TOPIC])
    seen = 0
    while seen < COMMITTED:
        for m in c.consume(COMMITTED - seen, 10):
            if m.error() is None:
                seen += 1
                c.commit(m, asynchronous=False)
    c.close()
    yield proc  # the producer stays connected: nerve_connections >= 1
    assert p.flush(5) == 0
    proc.stop()


def scrape(broker: NerveProcess) -> dict[str, object]:
    assert broker.metrics_url, broker.log_tail()
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: object, name: str | None = None, **labels: str) -> list[float]:
    return [s.value for s in fam.samples  # type: ignore[attr-defined]
            if (name is None or s.name == name)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def test_scrape_of_a_no_console_broker_has_every_family(broker: NerveProcess) -> None:
    fams = scrape(broker)
    missing = [n for n in FAMILIES if n not in fams]
    assert not missing, missing
    for name, kind in FAMILIES.items():
        assert fams[name].type == kind, (name, fams[name].type)  # type: ignore[attr-defined]
        assert fams[name].samples, name  # type: ignore[attr-defined]

    assert sum(samples(fams["nerve_topic_records_in"], topic=TOPIC)) == RECORDS
    assert sum(samples(fams["nerve_topic_bytes_in"], topic=TOPIC)) > RECORDS * 100
    assert sum(samples(fams["nerve_topic_bytes_out"], topic=TOPIC)) > COMMITTED * 100
    assert sum(samples(fams["nerve_log_end_offset"], topic=TOPIC)) == RECORDS
    assert samples(fams["nerve_log_start_offset"], topic=TOPIC) == [0.0, 0.0]
    assert samples(fams["nerve_log_segments"], topic=TOPIC) == [1.0, 1.0]
    assert sum(samples(fams["nerve_log_size_bytes"], topic=TOPIC)) > RECORDS * 100
    assert sum(samples(fams["nerve_consumer_group_lag"], group=GROUP)) == RECORDS - COMMITTED
    assert sum(samples(fams["nerve_consumer_group_committed_offset"], group=GROUP)) == COMMITTED
    produce = samples(fams["nerve_requests"], "nerve_requests_total", api="Produce")
    assert produce and sum(produce) >= 1
    assert samples(fams["nerve_request_duration_seconds"],
                   "nerve_request_duration_seconds_count", api="Produce") == produce
    # JoinGroup's first answer to a new member is MEMBER_ID_REQUIRED: an error code
    assert sum(samples(fams["nerve_request_errors"], "nerve_request_errors_total",
                       api="JoinGroup")) >= 1
    assert samples(fams["nerve_fsync_duration_seconds"],
                   "nerve_fsync_duration_seconds_count")[0] >= 1  # acks=all waited on fsync
    assert samples(fams["nerve_connections"])[0] >= 1  # the fixture's producer
    assert samples(fams["nerve_data_dir_free_bytes"])[0] > 0
    assert samples(fams["process_resident_memory_bytes"])[0] > 10_000_000
    assert samples(fams["process_open_fds"])[0] > 3
    assert samples(fams["nerve_under_replicated_partitions"]) == [0.0]
    assert samples(fams["nerve_offline_partitions"]) == [0.0]
    assert samples(fams["nerve_partitions"]) == [2.0]
    build = fams["nerve_build_info"].samples[0]  # type: ignore[attr-defined]
    assert build.labels["version"] and build.value == 1


_NAME = re.compile(r"\b((?:nerve|process)_[a-z_]+)\b")


def test_every_grafana_panel_queries_metrics_the_broker_has(broker: NerveProcess) -> None:
    dash = json.loads((REPO_ROOT / "docs" / "grafana-dashboard.json").read_text())
    fams = scrape(broker)
    have = {s.name for f in fams.values() for s in f.samples}  # type: ignore[attr-defined]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    for expr in exprs:
        names = _NAME.findall(expr)
        assert names, expr
        for name in names:
            assert name in have, f"panel query {expr!r}: no {name} in the scrape"
