"""Malformed requests cost only their own connection: one log line, no traceback, no crash.

The length bombs are the 20-byte requests of issue 10 that made kio try to allocate ~32 GiB
and abort `nerve serve` (SIGABRT); the null arrays made handlers raise TypeError. Apache Kafka
4.1 closes the connection on both ("Error getting request for apiKey ...", "non-nullable field
topics was serialized as null"), and so does nerve, after one line naming the client, the API,
the version and why.
"""

from __future__ import annotations

import re
import struct
import time
import uuid

import pytest
from kio.serial import entity_reader

from nerve.protocol.messages import build, request_class, response_class
from tests.integration.test_bad_input import connect, is_closed, read_frame, request_frame

FLEXIBLE_HEADER = b"\x00"

CASES = {
    # name: (api, version, body after the header, what the log line says)
    "metadata-v12-4GiB-topics": (3, 12, b"\xff\xff\xff\xff\x0f", "Metadata v12"),
    "offset-commit-v9-4GiB-topics": (
        8, 9, b"\x02g\x00\x00\x00\x01\x01\x00\xff\xff\xff\xff\x0f", "OffsetCommit v9"),
    "list-offsets-v7-4GiB-topics": (
        2, 7, b"\xff\xff\xff\xff\x00\xff\xff\xff\xff\x0f", "ListOffsets v7"),
    "delete-topics-v4-4GiB-names": (20, 4, b"\xff\xff\xff\xff\x0f", "DeleteTopics v4"),
    "metadata-v4-2Gi-topics": (3, 4, b"\x7f\xff\xff\xff\x00", "Metadata v4"),
    "list-offsets-v7-null-topics": (2, 7, b"\xff\xff\xff\xff\x00\x00\x00", "ListOffsets v7"),
    "list-offsets-v5-null-topics": (2, 5, b"\xff\xff\xff\xff\x00\xff\xff\xff\xff",
                                    "ListOffsets v5"),
    "offset-fetch-v8-null-groups": (9, 8, b"\x00\x00\x00", "OffsetFetch v8"),
    "create-topics-v5-null-topics": (19, 5, b"\x00\x00\x00\x10\x00\x00\x00", "CreateTopics v5"),
    "create-topics-v4-null-topics": (19, 4, b"\xff\xff\xff\xff\x00\x00\x10\x00\x00",
                                     "CreateTopics v4"),
    "offset-for-leader-epoch-v4-null-topics": (23, 4, b"\xff\xff\xff\xff\x00\x00",
                                               "OffsetForLeaderEpoch v4"),
    "produce-v9-records-past-the-frame": (
        0, 9, b"\x00\x00\x01\x00\x00\x03\xe8\x02\x02t\x02\x00\x00\x00\x00\xff\xff\x03",
        "Produce v9"),
}


def raw_frame(api: int, version: int, body: bytes, flexible: bool) -> bytes:
    payload = struct.pack(">hhih", api, version, 7, 4) + b"evil"
    payload += (FLEXIBLE_HEADER if flexible else b"") + body
    return struct.pack(">i", len(payload)) + payload


def api_versions_ok(bootstrap: str) -> bool:
    body = build(request_class(18, 3), client_software_name="probe",
                 client_software_version="1")
    with connect(bootstrap) as s:
        s.sendall(request_frame(18, 3, 5, body))
        frame = read_frame(s)
    return struct.unpack_from(">ih", frame) == (5, 0)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_request_closes_only_that_connection_with_one_line(nerve, case):
    api, version, body, named = CASES[case]
    flexible = request_class(api, version).__flexible__
    before = len(nerve.log_text().splitlines())
    with connect(nerve.bootstrap) as s:
        port = s.getsockname()[1]
        s.sendall(raw_frame(api, version, body, flexible))
        assert is_closed(s)
    assert api_versions_ok(nerve.bootstrap)
    assert nerve.running
    time.sleep(0.2)
    new = nerve.log_text().splitlines()[before:]
    mine = [ln for ln in new if f"127.0.0.1:{port}" in ln]
    assert len(mine) == 1, new
    why = rf"127\.0\.0\.1:{port}: malformed {named} request: MalformedRequest: "
    assert re.search(why, mine[0])
    assert not [ln for ln in new if "Traceback" in ln or "internal error" in ln], new


def test_fetch_by_all_zero_topic_id_is_unknown_topic_id(nerve):
    """kio reads the all-zero topic id as None; Fetch v13+ answers UNKNOWN_TOPIC_ID for it."""
    req = build(request_class(1, 13), max_wait=0, min_bytes=0, max_bytes=1 << 20,
                isolation_level=0, session_id=0, session_epoch=-1, rack_id="",
                topics=[{"topic_id": uuid.UUID(int=0), "partitions": [
                    {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                     "current_leader_epoch": -1, "log_start_offset": -1,
                     "last_fetched_epoch": -1}]}],
                forgotten_topics_data=[])
    with connect(nerve.bootstrap) as s:
        s.sendall(request_frame(1, 13, 3, req))
        frame = read_frame(s)
    resp, _ = entity_reader(response_class(1, 13))(frame, 5)
    assert resp.responses[0].partitions[0].error_code == 100  # UNKNOWN_TOPIC_ID
    assert "Traceback" not in nerve.log_text()


def test_bystander_connection_keeps_working_through_a_bomb(nerve):
    good = connect(nerve.bootstrap)
    try:
        with connect(nerve.bootstrap) as s:
            s.sendall(raw_frame(3, 12, b"\xff\xff\xff\xff\x0f", True))
            assert is_closed(s)
        body = build(request_class(18, 3), client_software_name="x", client_software_version="1")
        good.sendall(request_frame(18, 3, 9, body))
        assert struct.unpack_from(">ih", read_frame(good)) == (9, 0)
    finally:
        good.close()


def test_create_partitions_beyond_ten_thousand_new_is_policy_violation(nerve):
    """A count of millions (a bit flip away from 2) would hang the broker creating files."""
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": nerve.bootstrap})
    admin.create_topics([NewTopic("grow-me", 2, 1)])["grow-me"].result(10)
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        admin.create_partitions([NewPartitions("grow-me", 2 + 10_001)])["grow-me"].result(30)
    assert time.monotonic() - t0 < 20
    assert e.value.args[0].code() == 44, e.value  # POLICY_VIOLATION
    assert "Excessively large number of additional partitions" in str(e.value)
    admin.create_partitions([NewPartitions("grow-me", 3)])["grow-me"].result(10)


@pytest.mark.parametrize("version", [10, 11])
def test_metadata_null_topic_name_below_v12_is_invalid_request(nerve, version):
    """Kafka reads topics by id only from v12; v10/v11 answers cannot even carry a null name."""
    req = build(request_class(3, version), topics=[{"name": None, "topic_id": uuid.uuid4()}],
                allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    with connect(nerve.bootstrap) as s:
        s.sendall(request_frame(3, version, 4, req))
        frame = read_frame(s)
    resp, _ = entity_reader(response_class(3, version))(frame, 5)
    assert [(t.name, t.error_code) for t in resp.topics] == [("", 42)]  # INVALID_REQUEST
    assert "Traceback" not in nerve.log_text()


def test_describe_transactions_of_an_unknown_id_is_answered(nerve):
    """Its start time -1 reached kio as None for a non-nullable timestamp (found by the fuzz)."""
    req = build(request_class(65, 0), transactional_ids=["no-such-txn"])
    with connect(nerve.bootstrap) as s:
        s.sendall(request_frame(65, 0, 6, req))
        frame = read_frame(s)
    # kio cannot read its own -1 timestamp back; the first state's error code is at byte 10
    # (correlation id, header tags, throttle time, array length).
    assert struct.unpack_from(">ibi", frame) == (6, 0, 0)
    assert frame[9] == 2  # one state
    assert struct.unpack_from(">h", frame, 10)[0] in (105, 15)  # NOT_FOUND / NOT_AVAILABLE
    assert "Traceback" not in nerve.log_text()
