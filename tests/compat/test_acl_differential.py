"""ACLs: the same scenario against nerve and a Kafka 4.4.0 broker running the StandardAuthorizer.

Both brokers run `authorizer.class.name=...StandardAuthorizer` with
`allow.everyone.if.no.acl.found=true`: over PLAINTEXT every client (and Kafka's own broker and
controller) is User:ANONYMOUS, so a resource without ACLs must stay open for Kafka to run at all.
Each resource of the scenario gets ACLs that deny ANONYMOUS some operation (an ACL for another
principal only, a DENY that beats an ALLOW, a prefixed ACL, an ACL for another host), and every
API is called on it with raw requests; the error codes must be the same on both brokers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from nerve.protocol import records as rb
from tests.compat.conftest import Broker, KafkaProcess, KafkaStartError, _kafka_libs_ready
from tests.compat.test_differential import wait_for_leaders
from tests.compat.wire import WireClient
from tests.helpers import NerveProcess

pytestmark = [pytest.mark.compat, pytest.mark.slow]

SETS = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}
ANON = "User:ANONYMOUS"
TOPIC, GROUP, CLUSTER, TXN = 2, 3, 4, 5
LITERAL, PREFIXED = 3, 4
ALL, READ, WRITE, CREATE, DESCRIBE = 2, 3, 4, 5, 8
DENY, ALLOW = 2, 3


@dataclass
class Names:
    open: str
    denied: str  # an ACL for User:alice only
    read_only: str  # ALLOW ALL to User:*, DENY WRITE to ANONYMOUS
    prefix: str  # PREFIXED ALLOW ALL to User:alice; topic prefix + "a"
    other_host: str  # ALLOW ALL to ANONYMOUS from 127.0.0.2 only
    group_denied: str
    group_open: str
    txn_denied: str
    create_denied: str  # a new topic under a PREFIXED ALLOW CREATE for User:alice


def _acls(n: Names) -> list[dict[str, Any]]:
    def acl(rtype: int, name: str, op: int, principal: str = ANON, host: str = "*",
            perm: int = ALLOW, pattern: int = LITERAL) -> dict[str, Any]:
        return {"resource_type": rtype, "resource_name": name, "resource_pattern_type": pattern,
                "principal": principal, "host": host, "operation": op, "permission_type": perm}
    return [
        acl(TOPIC, n.denied, ALL, "User:alice"),
        acl(TOPIC, n.read_only, ALL, "User:*"),
        acl(TOPIC, n.read_only, WRITE, perm=DENY),
        acl(TOPIC, n.prefix, ALL, "User:alice", pattern=PREFIXED),
        acl(TOPIC, n.other_host, ALL, host="127.0.0.2"),
        acl(GROUP, n.group_denied, READ, "User:alice"),
        acl(TXN, n.txn_denied, WRITE, "User:alice"),
        acl(TOPIC, n.create_denied[:-1], CREATE, "User:alice", pattern=PREFIXED),
    ]


def _start_kafka(tmp: Path) -> KafkaProcess:
    proc = KafkaProcess(tmp, sets=SETS)
    try:
        proc.start()
    except KafkaStartError as e:
        pytest.fail(str(e), pytrace=False)
    return proc


@pytest.fixture(scope="module", params=["nerve", "kafka"])
def secured(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if request.param == "kafka":
        if not _kafka_libs_ready():
            pytest.fail("Kafka jars missing: scripts/install-test-deps jars", pytrace=False)
        proc = _start_kafka(tmp_path_factory.mktemp("kafka-acl"))
        yield Broker("kafka", proc.bootstrap)
        proc.stop()
        return
    base = tmp_path_factory.mktemp("nerve-acl")
    nerve = NerveProcess(base / "data", extra_args=[
        a for k, v in {**SETS, "group.initial.rebalance.delay.ms": "0"}.items()
        for a in ("--set", f"{k}={v}")])
    nerve.start()
    yield Broker("nerve", nerve.bootstrap)
    nerve.stop()
    assert "Traceback" not in nerve.log_text()


def _setup(bootstrap: str) -> Names:
    u = uuid.uuid4().hex[:6]
    n = Names(open=f"open-{u}", denied=f"denied-{u}", read_only=f"ro-{u}", prefix=f"pfx{u}-",
              other_host=f"host-{u}", group_denied=f"gd-{u}", group_open=f"go-{u}",
              txn_denied=f"txd-{u}", create_denied=f"cd{u}-x")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [n.open, n.denied, n.read_only, n.prefix + "a", n.other_host]
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(30)
    for t in topics:
        wait_for_leaders(bootstrap, t, 1)
    with WireClient(bootstrap) as c:
        resp = c.call(30, 3, creations=_acls(n))
        assert [int(r.error_code) for r in resp.results] == [0] * len(_acls(n))
        # Kafka applies ACLs once the broker has read them from the metadata log.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            d = c.call(29, 3, resource_type_filter=1, resource_name_filter=None,
                       pattern_type_filter=1, principal_filter=None, host_filter=None,
                       operation=1, permission_type=1)
            names = {r.resource_name for r in d.resources}
            if {n.denied, n.create_denied[:-1], n.txn_denied} <= names:
                break
            time.sleep(0.2)
        # Kafka loads its group and transaction coordinators on first use: wait for both.
        for key_type, key in ((0, n.group_open), (1, "open-txn-" + u)):
            while time.monotonic() < deadline:
                fc = c.call(10, 4, key_type=key_type, coordinator_keys=[key])
                if int(fc.coordinators[0].error_code) == 0:
                    break
                time.sleep(0.2)
        while time.monotonic() < deadline:
            ip = c.call(22, 4, transactional_id=None, transaction_timeout=60000,
                        producer_id=-1, producer_epoch=-1)
            if int(ip.error_code) not in (14, 15):  # loading, not available
                break
            time.sleep(0.2)
        while time.monotonic() < deadline:
            dg = c.call(15, 5, groups=[n.group_open], include_authorized_operations=False)
            if int(dg.groups[0].error_code) not in (14, 15, 16):
                break
            time.sleep(0.2)
    return n


def _codes(c: WireClient, n: Names) -> dict[str, Any]:
    out: dict[str, Any] = {}
    batch = rb.build_batch([(None, b"v")], timestamp_ms=int(time.time() * 1000))

    def produce(topic: str) -> int:
        r = c.call(0, 9, transactional_id=None, acks=1, timeout=10000, topic_data=[
            {"name": topic, "partition_data": [{"index": 0, "records": batch}]}])
        return int(r.responses[0].partition_responses[0].error_code)

    for label, topic in (("open", n.open), ("denied", n.denied), ("read_only", n.read_only),
                         ("prefixed", n.prefix + "a"), ("other_host", n.other_host),
                         ("missing_denied", n.prefix + "missing")):
        out[f"produce/{label}"] = produce(topic)
        f = c.call(1, 12, replica_id=-1, max_wait=0, min_bytes=1, max_bytes=1 << 20,
                   isolation_level=0, session_id=0, session_epoch=-1, topics=[
                       {"topic": topic, "partitions": [
                           {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0,
                            "last_fetched_epoch": -1, "log_start_offset": -1,
                            "partition_max_bytes": 1 << 20}]}], forgotten_topics_data=[],
                   rack_id="")
        out[f"fetch/{label}"] = int(f.responses[0].partitions[0].error_code)
        lo = c.call(2, 7, replica_id=-1, isolation_level=0, topics=[
            {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                            "timestamp": -1}]}])
        out[f"list_offsets/{label}"] = int(lo.topics[0].partitions[0].error_code)
        ep = c.call(23, 4, replica_id=-1, topics=[
            {"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1,
                                             "leader_epoch": 0}]}])
        out[f"offset_for_leader_epoch/{label}"] = int(ep.topics[0].partitions[0].error_code)
        md = c.call(3, 12, topics=[{"name": topic, "topic_id": None}],
                    allow_auto_topic_creation=False, include_topic_authorized_operations=True)
        t = md.topics[0]
        out[f"metadata/{label}"] = (int(t.error_code), int(t.topic_authorized_operations))
        dc = c.call(32, 4, resources=[{"resource_type": 2, "resource_name": topic,
                                       "configuration_keys": ["retention.ms"]}],
                    include_synonyms=False, include_documentation=False)
        out[f"describe_configs/{label}"] = int(dc.results[0].error_code)
        ac = c.call(33, 2, resources=[{"resource_type": 2, "resource_name": topic,
                                       "configs": [{"name": "retention.ms",
                                                    "value": "86400000"}]}],
                    validate_only=True)
        out[f"alter_configs/{label}"] = int(ac.responses[0].error_code)
        iac = c.call(44, 1, resources=[{"resource_type": 2, "resource_name": topic,
                                        "configs": [{"name": "retention.ms",
                                                     "config_operation": 0,
                                                     "value": "86400000"}]}],
                     validate_only=True)
        out[f"incremental_alter_configs/{label}"] = int(iac.responses[0].error_code)
        cp = c.call(37, 3, topics=[{"name": topic, "count": 1, "assignments": None}],
                    timeout=10000, validate_only=True)
        out[f"create_partitions/{label}"] = int(cp.results[0].error_code)
        dp = c.call(61, 0, topics=[{"name": topic, "partition_indexes": [0]}])
        out[f"describe_producers/{label}"] = int(dp.topics[0].partitions[0].error_code)
        oc = c.call(8, 8, group_id=n.group_open, generation_id_or_member_epoch=-1,
                    member_id="", group_instance_id=None, topics=[
                        {"name": topic, "partitions": [
                            {"partition_index": 0, "committed_offset": 0,
                             "committed_leader_epoch": -1, "committed_metadata": ""}]}])
        out[f"offset_commit_topic/{label}"] = int(oc.topics[0].partitions[0].error_code)
        dr = c.call(21, 2, topics=[{"name": topic, "partitions": [
            {"partition_index": 0, "offset": 0}]}], timeout=10000)
        out[f"delete_records/{label}"] = int(dr.topics[0].partitions[0].error_code)

    md = c.call(3, 12, topics=None, allow_auto_topic_creation=False,
                include_topic_authorized_operations=False)
    listed = {t.name for t in md.topics}
    out["metadata_all/visible"] = sorted(
        label for label, t in (("open", n.open), ("denied", n.denied), ("ro", n.read_only),
                               ("prefixed", n.prefix + "a"), ("other_host", n.other_host))
        if t in listed)
    md = c.call(3, 12, topics=[{"name": n.create_denied, "topic_id": None}],
                allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    out["metadata/auto_create_denied"] = int(md.topics[0].error_code)
    ct = c.call(19, 7, topics=[{"name": n.create_denied, "num_partitions": 1,
                                "replication_factor": 1, "assignments": [], "configs": []}],
                timeout=10000, validate_only=True)
    out["create_topics/denied"] = int(ct.topics[0].error_code)
    ct = c.call(19, 7, topics=[{"name": n.open + "-new", "num_partitions": 1,
                                "replication_factor": 1, "assignments": [], "configs": []}],
                timeout=10000, validate_only=True)
    out["create_topics/open"] = int(ct.topics[0].error_code)

    g = n.group_denied
    fc = c.call(10, 4, key_type=0, coordinator_keys=[g, n.group_open])
    out["find_coordinator/group"] = [int(x.error_code) for x in fc.coordinators]
    fc = c.call(10, 4, key_type=1, coordinator_keys=[n.txn_denied])
    out["find_coordinator/txn"] = [int(x.error_code) for x in fc.coordinators]
    jg = c.call(11, 9, group_id=g, session_timeout=10000, rebalance_timeout=10000,
                member_id="", group_instance_id=None, protocol_type="consumer",
                protocols=[{"name": "range", "metadata": b""}], reason=None)
    out["join_group"] = int(jg.error_code)
    hb = c.call(12, 4, group_id=g, generation_id=1, member_id="m", group_instance_id=None)
    out["heartbeat"] = int(hb.error_code)
    sg = c.call(14, 5, group_id=g, generation_id=1, member_id="m", group_instance_id=None,
                protocol_type="consumer", protocol_name="range", assignments=[])
    out["sync_group"] = int(sg.error_code)
    lg = c.call(13, 5, group_id=g, members=[{"member_id": "m", "group_instance_id": None,
                                             "reason": None}])
    out["leave_group"] = int(lg.error_code)
    oc = c.call(8, 8, group_id=g, generation_id_or_member_epoch=-1, member_id="",
                group_instance_id=None, topics=[{"name": n.open, "partitions": [
                    {"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1,
                     "committed_metadata": ""}]}])
    out["offset_commit/group_denied"] = int(oc.topics[0].partitions[0].error_code)
    of = c.call(9, 8, groups=[{"group_id": g, "topics": None}], require_stable=False)
    out["offset_fetch/group_denied"] = int(of.groups[0].error_code)
    of = c.call(9, 8, groups=[{"group_id": n.group_open, "topics": [
        {"name": n.denied, "partition_indexes": [0]}]}], require_stable=False)
    out["offset_fetch/topic_denied"] = (int(of.groups[0].error_code), [
        (t.name == n.denied, [int(p.error_code) for p in t.partitions])
        for t in of.groups[0].topics])
    dg = c.call(15, 5, groups=[g], include_authorized_operations=True)
    out["describe_groups/denied"] = int(dg.groups[0].error_code)
    dg = c.call(15, 5, groups=[n.group_open], include_authorized_operations=True)
    out["describe_groups/open"] = (int(dg.groups[0].error_code),
                                   int(dg.groups[0].authorized_operations))
    lgs = c.call(16, 4, states_filter=[])
    out["list_groups"] = (int(lgs.error_code), g in {x.group_id for x in lgs.groups})
    od = c.call(47, 0, group_id=g, topics=[{"name": n.open, "partitions": [
        {"partition_index": 0}]}])
    out["offset_delete"] = int(od.error_code)
    dgs = c.call(42, 2, groups_names=[g])
    out["delete_groups"] = int(dgs.results[0].error_code)

    x = n.txn_denied
    ip = c.call(22, 4, transactional_id=x, transaction_timeout=60000, producer_id=-1,
                producer_epoch=-1)
    out["init_producer_id/txn"] = int(ip.error_code)
    ip = c.call(22, 4, transactional_id=None, transaction_timeout=60000, producer_id=-1,
                producer_epoch=-1)
    out["init_producer_id/idempotent"] = int(ip.error_code)
    ap = c.call(24, 3, v3_and_below_transactional_id=x, v3_and_below_producer_id=1,
                v3_and_below_producer_epoch=0, v3_and_below_topics=[
                    {"name": n.open, "partitions": [0]}])
    out["add_partitions_to_txn"] = int(
        ap.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)
    ao = c.call(25, 3, transactional_id=x, producer_id=1, producer_epoch=0,
                group_id=n.group_open)
    out["add_offsets_to_txn"] = int(ao.error_code)
    et = c.call(26, 3, transactional_id=x, producer_id=1, producer_epoch=0, committed=False)
    out["end_txn"] = int(et.error_code)
    to = c.call(28, 3, transactional_id=x, group_id=n.group_open, producer_id=1,
                producer_epoch=0, generation_id=-1, member_id="", group_instance_id=None,
                topics=[{"name": n.open, "partitions": [
                    {"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1,
                     "committed_metadata": ""}]}])
    out["txn_offset_commit"] = int(to.topics[0].partitions[0].error_code)
    dtx = c.call(65, 0, transactional_ids=[x])
    out["describe_transactions"] = int(dtx.transaction_states[0].error_code)

    cl = c.call(60, 1, include_cluster_authorized_operations=True, endpoint_type=1)
    out["describe_cluster"] = (int(cl.error_code), int(cl.cluster_authorized_operations))
    md = c.call(3, 10, topics=[], allow_auto_topic_creation=False,
                include_cluster_authorized_operations=True,
                include_topic_authorized_operations=False)
    out["metadata/cluster_ops"] = int(md.cluster_authorized_operations)
    bad = c.call(30, 3, creations=[
        {"resource_type": CLUSTER, "resource_name": "not-kafka-cluster",
         "resource_pattern_type": LITERAL, "principal": ANON, "host": "*",
         "operation": ALL, "permission_type": ALLOW},
        {"resource_type": TOPIC, "resource_name": "x", "resource_pattern_type": LITERAL,
         "principal": "nocolon", "host": "*", "operation": READ, "permission_type": ALLOW},
        {"resource_type": TOPIC, "resource_name": "", "resource_pattern_type": LITERAL,
         "principal": ANON, "host": "*", "operation": READ, "permission_type": ALLOW},
        {"resource_type": TOPIC, "resource_name": "x", "resource_pattern_type": 2,
         "principal": ANON, "host": "*", "operation": READ, "permission_type": ALLOW}])
    out["create_acls/invalid"] = [int(r.error_code) for r in bad.results]
    d = c.call(29, 3, resource_type_filter=TOPIC, resource_name_filter=n.prefix + "zzz",
               pattern_type_filter=2, principal_filter=None, host_filter=None, operation=1,
               permission_type=1)
    out["describe_acls/match"] = [(r.resource_name == n.prefix, int(r.pattern_type),
                                   [(a.principal, a.host, int(a.operation),
                                     int(a.permission_type)) for a in r.acls])
                                  for r in d.resources]
    return out


# Kafka 4.4.0's answers (the `kafka` run proves them). Per topic: open (no ACL), denied (an ACL
# for User:alice only), read_only (ALLOW ALL to User:*, DENY WRITE to ANONYMOUS), prefixed (a
# PREFIXED ACL for alice), other_host (ALLOW ALL to ANONYMOUS from 127.0.0.2), missing_denied
# (a topic that does not exist under that prefix: authorization comes before existence).
_TOPIC_APIS = ("produce", "fetch", "list_offsets", "describe_configs", "alter_configs",
               "incremental_alter_configs", "create_partitions", "describe_producers",
               "offset_commit_topic", "delete_records")
_OPEN = dict.fromkeys(_TOPIC_APIS, 0) | {"create_partitions": 37}  # 37: already 1 partition
_DENIED = dict.fromkeys(_TOPIC_APIS, 29)
_PER_TOPIC = {
    "open": _OPEN,
    "denied": _DENIED,
    "read_only": _OPEN | {"produce": 29},
    "prefixed": _DENIED,
    "other_host": _DENIED,
    "missing_denied": _DENIED,
}
NO_OPS = -2147483648
EXPECTED: dict[str, Any] = {
    **{f"{api}/{label}": code for label, codes in _PER_TOPIC.items()
       for api, code in codes.items()},
    # Kafka 4.4 does not authorize a consumer's OffsetForLeaderEpoch.
    **{f"offset_for_leader_epoch/{label}": 0 for label in _PER_TOPIC},
    "offset_for_leader_epoch/missing_denied": 3,
    "metadata/open": (0, 3576),  # every topic operation
    "metadata/read_only": (0, 3560),  # all but WRITE
    **{f"metadata/{label}": (29, NO_OPS)
       for label in ("denied", "prefixed", "other_host", "missing_denied")},
    "metadata_all/visible": ["open", "ro"],
    "metadata/auto_create_denied": 29,  # no DESCRIBE on the topic
    "create_topics/denied": 0,  # CREATE on the cluster (no cluster ACL) is enough
    "create_topics/open": 0,
    "find_coordinator/group": [30, 0],
    "find_coordinator/txn": [53],
    "join_group": 30, "heartbeat": 30, "sync_group": 30, "leave_group": 30,
    "offset_commit/group_denied": 30,
    "offset_fetch/group_denied": 30,
    "offset_fetch/topic_denied": (0, [(True, [29])]),
    "describe_groups/denied": 30,
    "describe_groups/open": (0, 3400),  # every group operation
    "list_groups": (0, False),
    "offset_delete": 30,
    "delete_groups": 30,
    "init_producer_id/txn": 53,
    "init_producer_id/idempotent": 0,
    "add_partitions_to_txn": 53, "add_offsets_to_txn": 53, "end_txn": 53,
    "txn_offset_commit": 53, "describe_transactions": 53,
    "describe_cluster": (0, 8096),  # every cluster operation
    "metadata/cluster_ops": 8096,
    # Kafka 4.4 answers UNKNOWN_SERVER_ERROR (-1, no message) for each invalid creation; nerve
    # answers INVALID_REQUEST with the reason (docs/oracle.md).
    "create_acls/invalid": [-1, -1, -1, -1],
    "describe_acls/match": [(True, 4, [("User:alice", "*", 2, 3)])],
}
INTENDED = {"create_acls/invalid": [42, 42, 42, 42]}


def test_every_api_answers_kafkas_authorization_errors(secured: Broker) -> None:
    n = _setup(secured.bootstrap)
    with WireClient(secured.bootstrap) as c:
        observed = _codes(c, n)
    expected = EXPECTED | INTENDED if secured.name == "nerve" else EXPECTED
    diff = {k: (observed.get(k), v) for k, v in expected.items() if observed.get(k) != v}
    assert not diff, f"{secured.name}: (observed, expected) {diff}"
    assert observed.keys() == expected.keys()
