"""Acknowledged data survives `kill -9` of the broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_produce_consume import create_topic

PRODUCER = textwrap.dedent(
    """
    import json, sys, time
    from confluent_kafka import Producer
    bootstrap, topic, out_path = sys.argv[1:4]
    out = open(out_path, "w", buffering=1)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                  "enable.idempotence": False, "message.timeout.ms": 60000,
                  "retries": 0})
    def on_delivery(err, msg):
        if err is None:
            out.write(json.dumps([msg.partition(), msg.offset(), msg.value().decode()]) + "\\n")
    i = 0
    while True:
        try:
            p.produce(topic, value=f"v{i}".encode(), on_delivery=on_delivery)
            i += 1
        except BufferError:
            pass
        p.poll(0.001 if i % 50 else 0.01)
    """
)


def test_acked_records_survive_sigkill(nerve, unique_topic, tmp_path):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, partitions=3)
    acks_file = tmp_path / "acks.jsonl"
    producers = [
        subprocess.Popen([sys.executable, "-c", PRODUCER, nerve.bootstrap, topic,
                          str(acks_file) + str(n)])
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = sum(
                len((tmp_path / f"acks.jsonl{n}").read_text().splitlines())
                for n in range(2) if (tmp_path / f"acks.jsonl{n}").exists()
            )
            if lines > 3000:
                break
            time.sleep(0.2)
        nerve.kill()  # SIGKILL mid-stream
        time.sleep(0.5)
    finally:
        for proc in producers:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    acked: dict[tuple[int, int], str] = {}
    for n in range(2):
        for line in (tmp_path / f"acks.jsonl{n}").read_text().splitlines():
            try:
                partition, offset, value = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by the SIGKILL of the producer itself
            acked[(partition, offset)] = value
    assert len(acked) > 3000

    nerve.restart()
    stored: dict[tuple[int, int], str] = {}
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "durability",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
             for p in range(3)}
    deadline = time.monotonic() + 60
    while (len(stored) < sum(highs.values())
           and time.monotonic() < deadline):
        msg = c.poll(0.5)
        if msg is None or msg.error():
            continue
        stored[(msg.partition(), msg.offset())] = msg.value().decode()
    c.close()
    missing = [k for k in acked if stored.get(k) != acked[k]]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, e.g. {missing[:5]}"
