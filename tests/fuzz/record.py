"""Record the request frames real clients send: `python -m tests.fuzz.record [--no-java]`.

Starts a `nerve serve` advertising 127.0.0.2, puts a RecordingProxy on 127.0.0.2 in front of
it, runs confluent-kafka (librdkafka), kafka-python and Kafka's Java tools through it, and
writes every distinct frame (at most a few per client, API and version, each under 8 KiB) to
tests/fuzz/corpus.jsonl, the seed corpus of the fuzz suite. Topic and group names are the
fixed ones the fuzz test creates (FUZZ_TOPIC, FUZZ_GROUP), so replayed frames reach the real
produce, fetch and group paths.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from tests.fuzz.proxy import RecordingProxy
from tests.helpers import KAFKA_RUN, NerveProcess

CORPUS = Path(__file__).with_name("corpus.jsonl")
FUZZ_TOPIC = "fuzz-a"
FUZZ_GROUP = "fuzz-group"
PER_KEY = 3
MAX_FRAME = 8192


class Recorder:
    def __init__(self) -> None:
        self.client = "nerve-cli"  # nerve topics create, before the first client step
        self.frames: dict[tuple[str, int, int], list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, frame: bytes) -> None:
        if len(frame) < 8 or len(frame) > MAX_FRAME:
            return
        api, version = struct.unpack_from(">hh", frame)
        with self.lock:
            kept = self.frames[(self.client, api, version)]
            if len(kept) < PER_KEY and frame not in kept:
                kept.append(frame)


def confluent(bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        OffsetSpec,
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("fuzz-del", 1, 1, config={"retention.ms": "60000"})]
                                 ).values():
        f.result(10)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "compression.type": "lz4", "linger.ms": 5})
    for i in range(20):
        p.produce(FUZZ_TOPIC, key=b"k%d" % i, value=b"v" * 40, partition=i % 3)
    p.flush(10)
    p2 = Producer({"bootstrap.servers": bootstrap, "acks": 1})
    p2.produce(FUZZ_TOPIC, value=b"acks-one", partition=0)
    p2.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": FUZZ_GROUP,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([FUZZ_TOPIC])
    got = 0
    deadline = time.monotonic() + 20
    while got < 21 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.committed([TopicPartition(FUZZ_TOPIC, 0)], timeout=10)
    c.close()
    topic_res = ConfigResource(ConfigResource.Type.TOPIC, "fuzz-del")
    for f in admin.describe_configs([topic_res]).values():
        f.result(10)
    for f in admin.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.TOPIC, "fuzz-del", incremental_configs=[ConfigEntry(
                "retention.ms", "120000", incremental_operation=AlterConfigOpType.SET)])]
    ).values():
        f.result(10)
    for f in admin.alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "fuzz-del",
                                                 set_config={"retention.ms": "90000"})]).values():
        f.result(10)
    for f in admin.create_partitions([NewPartitions("fuzz-del", 2)]).values():
        f.result(10)
    for f in admin.list_offsets({TopicPartition(FUZZ_TOPIC, 0): OffsetSpec.latest()}).values():
        f.result(10)
    for f in admin.delete_records([TopicPartition("fuzz-del", 0, 0)]).values():
        f.result(10)
    admin.list_consumer_groups().result(10)
    for f in admin.describe_consumer_groups([FUZZ_GROUP]).values():
        f.result(10)
    admin.describe_cluster().result(10)
    for f in admin.describe_topics(
            __import__("confluent_kafka").TopicCollection([FUZZ_TOPIC])).values():
        f.result(10)
    for f in admin.delete_topics(["fuzz-del"]).values():
        f.result(10)


def kafka_python(bootstrap: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(5):
        p.send(FUZZ_TOPIC, value=b"kp%d" % i, partition=i % 3)
    p.flush(10)
    p.close()
    c = KafkaConsumer(FUZZ_TOPIC, bootstrap_servers=bootstrap, group_id=FUZZ_GROUP + "-kp",
                      auto_offset_reset="earliest", consumer_timeout_ms=4000)
    for _ in c:
        pass
    c.commit()
    c.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    from kafka.admin import ConfigResource
    calls = [
        (admin.create_topics, [NewTopic("fuzz-kp", 1, 1)]),
        (admin.describe_configs, [ConfigResource("TOPIC", "fuzz-kp")]),
        (admin.list_groups,), (admin.describe_groups, [FUZZ_GROUP + "-kp"]),
        (admin.list_group_offsets, FUZZ_GROUP + "-kp"), (admin.describe_log_dirs,),
        (admin.describe_cluster,), (admin.list_topics,),
        (admin.delete_groups, [FUZZ_GROUP + "-kp"]), (admin.delete_topics, ["fuzz-kp"]),
    ]
    for fn, *fn_args in calls:
        try:
            fn(*fn_args)
        except Exception as e:
            print(f"kafka-python {fn.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
    admin.close()


def java(bootstrap: str) -> None:
    def run(*args: str, stdin: str | None = None) -> None:
        r = subprocess.run([str(KAFKA_RUN), *args], input=stdin, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            print("java", args[0], "exited", r.returncode, r.stderr[-500:])

    run("topics", "--bootstrap-server", bootstrap, "--create", "--topic", "fuzz-java",
        "--partitions", "2")
    run("topics", "--bootstrap-server", bootstrap, "--describe", "--topic", FUZZ_TOPIC)
    run("console-producer", "--bootstrap-server", bootstrap, "--topic", FUZZ_TOPIC,
        stdin="j1\nj2\nj3\n")
    run("console-consumer", "--bootstrap-server", bootstrap, "--topic", FUZZ_TOPIC,
        "--group", FUZZ_GROUP + "-java", "--from-beginning", "--max-messages", "3")
    run("consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group",
        FUZZ_GROUP + "-java")
    run("get-offsets", "--bootstrap-server", bootstrap, "--topic", FUZZ_TOPIC)
    run("log-dirs", "--bootstrap-server", bootstrap, "--describe")
    run("topics", "--bootstrap-server", bootstrap, "--delete", "--topic", "fuzz-java")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-java", action="store_true")
    args = ap.parse_args()
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        broker = NerveProcess(Path(tmp) / "data", extra_args=["--advertised-host", "127.0.0.2"])
        broker.start()
        proxy = RecordingProxy(("127.0.0.2", broker.port), ("127.0.0.1", broker.port), recorder)
        bootstrap = f"127.0.0.2:{broker.port}"
        try:
            subprocess.run([sys.executable, "-m", "nerve", "topics", "create", FUZZ_TOPIC,
                            "--partitions", "3", "--bootstrap-server",
                            f"127.0.0.1:{broker.port}"], check=False)
            steps = [("confluent-kafka", confluent), ("kafka-python", kafka_python)]
            if not args.no_java:
                steps.append(("java", java))
            for name, step in steps:
                recorder.client = name
                t0 = time.monotonic()
                step(bootstrap)
                print(f"{name}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
        finally:
            proxy.close()
            broker.stop()
    with CORPUS.open("w") as out:
        for (client, api, version), frames in sorted(recorder.frames.items()):
            for frame in frames:
                out.write(json.dumps({"client": client, "api": api, "version": version,
                                      "frame": base64.b64encode(frame).decode()}) + "\n")
    keys = {(a, v) for _c, a, v in recorder.frames}
    print(f"wrote {sum(map(len, recorder.frames.values()))} frames, {len(keys)} (api, version) "
          f"pairs, to {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
