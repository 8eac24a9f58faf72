"""The embeddable Broker: async and sync context managers, and the pytest plugin's fixture."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from nerve import Broker


def _consume_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "embedded",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg.value())
    c.close()
    return out


def test_sync_context_manager_serves_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path, port=0) as broker:
        assert broker.port != 0
        p = Producer({"bootstrap.servers": broker.bootstrap_servers})
        for i in range(10):
            p.produce("embedded", b"e%d" % i)
        assert p.flush(10) == 0
    # Stopped cleanly: a second broker on the same directory sees the same records.
    with Broker(data_dir=tmp_path, port=0) as again:
        assert _consume_all(again.bootstrap_servers, "embedded", 10) == [
            b"e%d" % i for i in range(10)
        ]
    assert (tmp_path / ".nerve_clean_shutdown").exists()


async def test_async_context_manager_with_aiokafka(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async with Broker(data_dir=tmp_path, port=0) as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            meta = await producer.send_and_wait("async-topic", b"hello")
        finally:
            await producer.stop()
        assert meta.offset == 0
        consumer = AIOKafkaConsumer("async-topic", bootstrap_servers=broker.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()
        assert msg.value == b"hello"


def test_pytest_plugin_fixture(nerve_broker: Broker) -> None:
    p = Producer({"bootstrap.servers": nerve_broker.bootstrap_servers})
    p.produce("plugin-topic", b"from the fixture")
    assert p.flush(10) == 0
    assert _consume_all(nerve_broker.bootstrap_servers, "plugin-topic", 1) == [
        b"from the fixture"
    ]
