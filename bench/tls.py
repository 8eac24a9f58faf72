"""Produce and consume MB/s over PLAINTEXT vs SSL vs SASL_SSL (SCRAM-SHA-256) on one broker.

    python -m bench.tls [--mb 100] [--record-bytes 1024]

One `nerve serve` with three listeners and a self-signed CA (tests/certs.py, needs the
`cryptography` package); librdkafka producer (acks=all, lz4 off) then a consumer reading the
topic from the start, per listener, each on its own topic.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.certs import make_cert_files
from tests.helpers import NerveProcess, free_port


def run(conf: dict[str, str], topic: str, total: int, size: int) -> tuple[float, float]:
    p = Producer({**conf, "linger.ms": 5, "batch.size": 1_000_000, "acks": "all"})
    value = b"x" * size
    n = total // size
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(120) == 0
    produce_s = time.perf_counter() - t0
    c = Consumer({**conf, "group.id": f"b-{topic}", "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    c.subscribe([topic])
    got = 0
    t0 = None
    while got < n:
        for m in c.consume(10000, 1.0):
            if m.error() is None:
                if t0 is None:
                    t0 = time.perf_counter()
                got += 1
    consume_s = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    mb = n * size / 1e6
    return mb / produce_s, mb / consume_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--record-bytes", type=int, default=1024)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="nerve-tls-bench-"))
    try:
        certs = make_cert_files(d / "certs")
        ports = {n: free_port() for n in ("PLAINTEXT", "SSL", "SASL_SSL")}
        proc = NerveProcess(d / "data", port=ports["PLAINTEXT"], extra_args=[
            "--set", "listeners=" + ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
            "--set", "sasl.enabled.mechanisms=SCRAM-SHA-256",
            "--set", "ssl.keystore.type=PEM",
            "--set", f"ssl.keystore.location={certs.server_keystore}",
            "--log-level", "WARNING"])
        proc.start()
        try:
            admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports['PLAINTEXT']}"})
            for f in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                    "bench", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                    b"bench")]).values():
                f.result(10)
            tls = {"ssl.ca.location": str(certs.ca)}
            confs = {
                "PLAINTEXT": {},
                "SSL": {"security.protocol": "SSL", **tls},
                "SASL_SSL": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                             "sasl.username": "bench", "sasl.password": "bench", **tls},
            }
            total = args.mb * 1_000_000
            for name, extra in confs.items():
                conf = {"bootstrap.servers": f"127.0.0.1:{ports[name]}", **extra}
                prod, cons = run(conf, f"bench-{name.lower()}", total, args.record_bytes)
                print(f"{name:10s} produce {prod:7.1f} MB/s   consume {cons:7.1f} MB/s")
        finally:
            proc.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
