"""Prometheus metrics served by the broker itself (`nerve serve --metrics-port`, default
127.0.0.1:9464), with prometheus-client's text format and process collector.

The request path only bumps plain counters (nerve/stats.py); everything else (log sizes,
offsets, consumer lag, disk free) is read when Prometheus scrapes. The scrape is answered on the
broker's event loop, so it reads the broker's state without locks; it costs O(partitions +
committed offsets), nothing per record.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

from nerve import __version__
from nerve.stats import Histogram

if TYPE_CHECKING:
    from nerve.broker import Broker

log = logging.getLogger("nerve.metrics")

DEFAULT_METRICS_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses


def _hist(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_hist(fam: HistogramMetricFamily, values: list[str], h: Histogram) -> None:
    fam.add_metric(values, h.cumulative(), h.sum)


class BrokerCollector:
    """Reads a running Broker at scrape time."""

    def __init__(self, broker: Broker, started: float) -> None:
        self.broker = broker
        self.started = started

    def collect(self) -> Iterator[Any]:
        core = self.broker.core
        if core is None:
            return
        from nerve.handlers import load_handlers

        names = {key: spec.name for key, spec in load_handlers().items()}
        stats = core.stats
        yield InfoMetricFamily("nerve_build", "nerve's version and Python's",
                               value={"version": __version__,
                                      "python": sys.version.split()[0]})
        up = GaugeMetricFamily("nerve_uptime_seconds", "Seconds since the broker started")
        up.add_metric([], time.monotonic() - self.started)
        yield up

        # ---- requests, per API and version
        req = CounterMetricFamily("nerve_requests", "Requests handled", labels=["api", "version"])
        err = CounterMetricFamily("nerve_request_errors",
                                  "Requests answered with a top-level error code, or failed",
                                  labels=["api", "version"])
        lat = _hist("nerve_request_duration_seconds",
                    "Time from a decoded request to its answer (acks=all: after fsync)",
                    ["api", "version"])
        for (key, version), s in sorted(stats.apis.items()):
            labels = [names.get(key, str(key)), str(version)]
            req.add_metric(labels, s.requests)
            err.add_metric(labels, s.errors)
            _add_hist(lat, labels, s.latency)
        yield req
        yield err
        yield lat

        # ---- traffic per topic
        for name, doc, d in (
            ("nerve_topic_bytes_in", "Record batch bytes produced", stats.bytes_in),
            ("nerve_topic_records_in", "Records produced (from batch headers)",
             stats.records_in),
            ("nerve_topic_bytes_out", "Record batch bytes fetched", stats.bytes_out),
        ):
            fam = CounterMetricFamily(name, doc, labels=["topic"])
            for topic, v in sorted(d.items()):
                fam.add_metric([topic], v)
            yield fam

        # ---- logs, per partition
        size = GaugeMetricFamily("nerve_log_size_bytes", "Bytes on disk of a partition's log",
                                 labels=["topic", "partition"])
        segs = GaugeMetricFamily("nerve_log_segments", "Segments of a partition's log",
                                 labels=["topic", "partition"])
        end = GaugeMetricFamily("nerve_log_end_offset", "Next offset to be written",
                                labels=["topic", "partition"])
        start = GaugeMetricFamily("nerve_log_start_offset", "Oldest offset kept",
                                  labels=["topic", "partition"])
        ends: dict[tuple[str, int], int] = {}
        count = 0
        topics: set[str] = set()
        for plog in core.logs.all_logs():
            labels = [plog.topic, str(plog.partition)]
            size.add_metric(labels, plog.size_bytes)
            segs.add_metric(labels, len(plog.segments))
            end.add_metric(labels, plog.log_end_offset)
            start.add_metric(labels, plog.log_start_offset)
            ends[(plog.topic, plog.partition)] = plog.log_end_offset
            count += 1
            topics.add(plog.topic)
        yield from (size, segs, end, start)
        for name, doc, v in (
            ("nerve_partitions", "Partitions this broker leads", count),
            ("nerve_topics", "Topics", len(topics)),
            # What dashboards built for Kafka expect; one replica per partition, always led.
            ("nerve_under_replicated_partitions", "Always 0: one replica per partition", 0),
            ("nerve_offline_partitions", "Always 0: every partition is led by this broker", 0),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], v)
            yield g

        # ---- consumer groups
        lag = GaugeMetricFamily("nerve_consumer_group_lag",
                                "Log end offset minus the group's committed offset",
                                labels=["group", "topic", "partition"])
        committed = GaugeMetricFamily("nerve_consumer_group_committed_offset",
                                      "The group's committed offset",
                                      labels=["group", "topic", "partition"])
        groups = core.groups
        if groups is not None:
            for group, offsets in sorted(groups.store.offsets.items()):
                for (topic, partition), om in offsets.items():
                    labels = [group, topic, str(partition)]
                    committed.add_metric(labels, om.offset)
                    e = ends.get((topic, partition))
                    if e is not None:
                        lag.add_metric(labels, max(0, e - om.offset))
        yield lag
        yield committed

        # ---- connections, group commit, disk
        conns = GaugeMetricFamily("nerve_connections", "Open client connections")
        conns.add_metric([], len(self.broker._connections))
        yield conns
        flush = core.logs.flush_stats
        fs = _hist("nerve_fsync_duration_seconds", "One group-commit fsync round", [])
        _add_hist(fs, [], flush.seconds)
        yield fs
        fb = _hist("nerve_fsync_batch_logs", "Partition logs one fsync round covered", [])
        _add_hist(fb, [], flush.logs)
        yield fb
        try:
            usage = shutil.disk_usage(core.data_dir)
        except OSError:
            usage = None
        if usage is not None:
            for name, doc, v in (("nerve_data_dir_free_bytes", "Free bytes of the data dir's "
                                  "filesystem (for unprivileged users)", usage.free),
                                 ("nerve_data_dir_total_bytes", "Size of that filesystem",
                                  usage.total)):
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], v)
                yield g

        cleaner = getattr(core.logs, "cleaner", None)  # log compaction, when present
        if cleaner is not None:
            yield from _cleaner_families(cleaner.metrics())


_CLEANER_COUNTERS = {
    "passes": "Cleaning passes completed", "abandoned_passes": "Cleaning passes abandoned",
    "bytes_read": "Bytes the cleaner read", "bytes_written": "Bytes the cleaner wrote",
    "bytes_reclaimed": "Bytes cleaning freed", "records_read": "Records the cleaner read",
    "records_kept": "Records the cleaner kept", "seconds": "Seconds spent cleaning",
}


def _cleaner_families(m: dict[str, Any]) -> Iterator[Any]:
    """LogCleaner.metrics(): totals, and the dirty ratio per compacted partition."""
    for key, doc in _CLEANER_COUNTERS.items():
        if key in m:
            fam = CounterMetricFamily(f"nerve_cleaner_{key}", doc)
            fam.add_metric([], float(m[key]))
            yield fam
    ratio = GaugeMetricFamily("nerve_cleaner_dirty_ratio",
                              "Dirty share of a compacted partition's log",
                              labels=["topic", "partition"])
    for name, v in sorted(dict(m.get("dirty_ratio") or {}).items()):
        topic, _, partition = str(name).rpartition("-")
        ratio.add_metric([topic, partition], float(v))
    yield ratio
    # The rest of a partition's cleaning state, as `nerve topics describe` shows it.
    states = dict(m.get("partitions") or {})
    for key, doc in _CLEANER_PARTITION_GAUGES.items():
        fam = GaugeMetricFamily(f"nerve_cleaner_partition_{key}", doc,
                                labels=["topic", "partition"])
        for name, state in sorted(states.items()):
            topic, _, partition = str(name).rpartition("-")
            fam.add_metric([topic, partition], float(state.get(key, 0)))
        yield fam


_CLEANER_PARTITION_GAUGES = {
    "first_dirty_offset": "First offset of a compacted partition not yet cleaned",
    "last_clean_ms": "When a compacted partition was last cleaned (epoch ms; -1: never)",
    "passes": "Cleaning passes of a compacted partition",
    "bytes_reclaimed": "Bytes cleaning freed in a compacted partition",
}


def registry_for(broker: Broker) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BrokerCollector(broker, time.monotonic()))  # type: ignore[arg-type]
    ProcessCollector(registry=reg)  # process_cpu_seconds_total, resident memory, open fds
    return reg


class MetricsServer:
    """GET /metrics over HTTP/1.1 on the broker's event loop (no thread, no framework)."""

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self.registry = registry_for(broker)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path.split("?")[0] in ("/metrics", "/"):
                status, body = "200 OK", generate_latest(self.registry)
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()
