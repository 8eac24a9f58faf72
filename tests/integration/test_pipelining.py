"""Pipelined acks=all produce requests on one connection share fsync rounds, answered in order."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from kio.serial import entity_reader

from nerve import Broker
from nerve.protocol import records as rb
from nerve.protocol.messages import build, request_class, response_class
from tests.integration.test_bad_input import request_frame

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
