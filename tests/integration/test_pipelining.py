"""Pipelined requests: acks=all produce requests on one connection share fsync rounds, answered
in order; pipelined answers are not held back by Nagle's algorithm."""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time
from pathlib import Path

from kio.serial import entity_reader

from nerve import Broker
from nerve.protocol import records as rb
from nerve.protocol.messages import build, request_class, response_class
from tests.helpers import NerveProcess
from tests.integration.test_bad_input import connect, read_frame, request_frame

REQUESTS = 40


async def test_pipelined_acks_all_requests_share_fsyncs_and_keep_order(tmp_path: Path) -> None:
    async with Broker(data_dir=tmp_path, port=0) as broker:
        assert broker.core is not None
        broker.core.logs.create_topic("pipelined", 1)
        frames = b"".join(
            request_frame(0, 9, cid, build(
                request_class(0, 9), transactional_id=None, acks=-1, timeout=5000,
                topic_data=[{"name": "pipelined", "partition_data": [
                    {"index": 0, "records": rb.build_batch([(None, b"r%d" % cid)])}]}]))
            for cid in range(REQUESTS)
        )
        rounds_before = broker.core.logs.fsync_rounds
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(frames)  # all at once, as librdkafka pipelines
        await writer.drain()
        answers = []
        for _ in range(REQUESTS):
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            frame = await reader.readexactly(size)
            (cid,) = struct.unpack_from(">i", frame)
            resp, _ = entity_reader(response_class(0, 9))(frame, 5)
            part = resp.responses[0].partition_responses[0]
            answers.append((cid, part.error_code, part.base_offset))
        writer.close()
        rounds = broker.core.logs.fsync_rounds - rounds_before
    # In request order, each at its own offset, every one acknowledged...
    assert answers == [(cid, 0, cid) for cid in range(REQUESTS)]
    # ...and the connection did not wait for one fsync per request: while a round ran, the
    # requests behind it were appended and joined the next round.
    assert 1 <= rounds < REQUESTS / 2, rounds


def test_pipelined_small_answers_are_not_held_for_the_clients_delayed_ack(
        nerve: NerveProcess) -> None:
    """Two pipelined requests with small answers: the second answer goes out at once. Without
    TCP_NODELAY on the broker's socket (Kafka sets it), Nagle holds it until the client ACKs
    the first, and a client waiting for both delays that ACK by ~40 ms (Linux's delayed ACK):
    every pipelined produce paid it (bench.txn: 10-batch transactions at 0.4x Kafka)."""
    pair = b"".join(request_frame(18, 0, cid, build(request_class(18, 0))) for cid in (1, 2))
    s = connect(nerve.bootstrap)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the client sends at once
    try:
        took = []
        for _ in range(25):
            t0 = time.perf_counter()
            s.sendall(pair)
            read_frame(s)
            read_frame(s)
            took.append(time.perf_counter() - t0)
    finally:
        s.close()
    # Held by Nagle: ~44 ms each once the connection leaves quick-ACK mode (the first one or
    # two). Not held: ~1 ms, well under 20 ms even on a loaded machine.
    assert statistics.median(took[3:]) < 0.020, [round(t * 1000, 1) for t in took]
