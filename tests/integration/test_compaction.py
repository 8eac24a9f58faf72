"""Log compaction through a real `nerve serve` and confluent-kafka clients: the latest value
per key survives at its offset, tombstones go after delete.retention.ms, and a kill -9 at each
step of a cleaning pass (NERVE_CLEANER_PAUSE_AT) loses no acknowledged latest value."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.compaction import (
    create_topic,
    produce_one,
    produce_rounds,
    read_all,
    wait_compacted,
)
from tests.helpers import NerveProcess, free_port
from tests.integration.test_streams_eos import wordcount_cp  # noqa: F401 (fixture)
from tests.integration.test_tools_cli import cli, ok

FAST_CLEANER = ["--set", "log.cleaner.backoff.ms=200"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path_factory.mktemp("compaction") / "data",
                        extra_args=[*FAST_CLEANER, "--console-port", str(free_port())])
    proc.start()
    yield proc
    proc.stop()


def _console_url(proc: NerveProcess) -> str:
    return re.findall(r"nerve console on (http://\S+)", proc.log_text())[-1]


def test_latest_value_per_key_then_tombstones_go(broker: NerveProcess) -> None:
    topic = "compacted-a"
    create_topic(broker.bootstrap, topic)
    expect = produce_rounds(broker.bootstrap, topic)
    end = 4 * 12
    produce_one(broker.bootstrap, topic, b"roll1", b"r")  # the workload's segments roll
    expect[b"roll1"] = (end, b"r")
    wait_compacted(broker.bootstrap, topic, expect)
    assert any(v is None for _, v in expect.values())  # tombstones stay for now
    time.sleep(2)  # past delete.retention.ms (1.5 s): the next pass removes them
    more = produce_rounds(broker.bootstrap, topic, rounds=1, prefix="later", start=end + 1)
    produce_one(broker.bootstrap, topic, b"roll2", b"r")
    final = {k: v for k, v in expect.items() if v[1] is not None}
    final.update(more)
    final[b"roll2"] = (end + 1 + len(more), b"r")
    wait_compacted(broker.bootstrap, topic, {k: v for k, v in final.items()
                                             if v[1] is not None or k.startswith(b"later")})
    assert "Traceback" not in broker.log_text()
    # The console's topic page shows the cleaning state, and warns before a policy change.
    page = httpx.get(f"{_console_url(broker)}/topics/{topic}", timeout=20).text
    cleaning = page[page.index('<section id="cleaning">'):]
    cleaning = cleaning[:cleaning.index("</section>")]
    cells = re.findall(r'<td class="num">([0-9.]+)</td>', cleaning)
    # partition, dirty ratio, first dirty offset, passes, bytes reclaimed
    assert cells[0] == "0" and int(cells[3]) >= 2 and int(cells[4]) > 0, cleaning
    assert "never" not in cleaning  # last clean
    assert 'data-confirm-if="cleanup.policy"' in page
    # `nerve topics describe` shows the same state, read from the broker's metrics endpoint.
    assert broker.metrics_url
    desc = json.loads(ok(cli(broker.bootstrap, "topics", "describe", topic, "--json",
                             "--metrics-url", broker.metrics_url)))
    (state,) = desc["cleaning"]
    assert state["partition"] == 0 and state["passes"] >= 2 and state["bytes_reclaimed"] > 0
    assert state["last_clean_ms"] > 0 and 0 <= state["dirty_ratio"] <= 1
    text = ok(cli(broker.bootstrap, "topics", "describe", topic,
                  "--metrics-url", broker.metrics_url))
    assert "Cleaning:" in text and "DIRTY RATIO" in text and "never" not in text
    # nothing listening there (a Kafka cluster): said in one line, the rest still shown
    text = ok(cli(broker.bootstrap, "topics", "describe", topic,
                  "--metrics-url", f"http://127.0.0.1:{free_port()}/metrics"))
    assert "Cleaning: not known" in text and "PARTITION" in text
    other = "plain-topic"
    create_topic(broker.bootstrap, other, {"cleanup.policy": "delete"})
    plain = httpx.get(f"{_console_url(broker)}/topics/{other}", timeout=20).text
    assert "<h1>" in plain and 'id="cleaning"' not in plain


# The default suite kills in the worker's write and at the loop's most delicate state (old
# segments retired, the swaps not yet renamed); the other steps run in the slow suite.
@pytest.mark.parametrize("step", ["writing", pytest.param("cleaned", marks=pytest.mark.slow),
                                  pytest.param("swap", marks=pytest.mark.slow), "retired"])
def test_kill_at_each_step_of_a_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     step: str) -> None:
    monkeypatch.setenv("NERVE_CLEANER_PAUSE_AT", step)
    proc = NerveProcess(tmp_path / "data", extra_args=FAST_CLEANER)
    proc.start()
    try:
        topic = "killed"
        create_topic(proc.bootstrap, topic)
        expect = produce_rounds(proc.bootstrap, topic, rounds=3)
        produce_one(proc.bootstrap, topic, b"roll", b"r")
        expect[b"roll"] = (36, b"r")
        deadline = time.monotonic() + 30
        while f"paused at {step}" not in proc.log_text():
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.1)
        proc.kill()
        monkeypatch.delenv("NERVE_CLEANER_PAUSE_AT")
        proc.start()
        records, high = read_all(proc.bootstrap, topic)
        assert high == 37
        offsets = [o for o, _, _ in records]
        assert offsets == sorted(set(offsets))  # no segment twice
        got = {k: (o, v) for o, k, v in records}
        assert got == expect  # every acknowledged latest value, at its offset
        part = tmp_path / "data" / f"{topic}-0"
        assert not [n for n in os.listdir(part) if n.endswith((".cleaned", ".swap"))]
        wait_compacted(proc.bootstrap, topic, expect)  # and the next pass finishes the job
        assert "Traceback" not in proc.log_text()
    finally:
        proc.stop()


@pytest.mark.slow
def test_timed_kills_during_cleaning(tmp_path: Path) -> None:
    """kill -9 at random moments while the cleaner works, six times over one data dir: after
    each restart every acknowledged latest value is there at its offset, once."""
    import random

    rng = random.Random(17)
    proc = NerveProcess(tmp_path / "data", extra_args=FAST_CLEANER)
    proc.start()
    topic = "timed-kills"
    create_topic(proc.bootstrap, topic)
    expect: dict[bytes, tuple[int, bytes | None]] = {}
    end = 0
    try:
        for i in range(6):
            latest = produce_rounds(proc.bootstrap, topic, rounds=3, keys=20, start=end,
                                    prefix="k")
            end += 60
            produce_one(proc.bootstrap, topic, b"roll%d" % i, b"r")
            latest[b"roll%d" % i] = (end, b"r")
            end += 1
            expect.update(latest)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            proc.start()
            records, high = read_all(proc.bootstrap, topic)
            assert high == end
            offsets = [o for o, _, _ in records]
            assert offsets == sorted(set(offsets))
            got = {k: (o, v) for o, k, v in records}
            # A tombstone may be gone already (past delete.retention.ms), never a value.
            assert {k: v for k, v in got.items() if v[1] is not None} == \
                {k: v for k, v in expect.items() if v[1] is not None}
            assert all(got.get(k) in (None, v) for k, v in expect.items() if v[1] is None)
        assert "Traceback" not in proc.log_text()
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.java
def test_streams_restores_its_store_from_a_cleaned_changelog(nerve_factory, unique_topic,
                                                            wordcount_cp, tmp_path) -> None:  # noqa: F811
    """Kafka Streams (exactly_once_v2 word count): its compacted changelog is cleaned while it
    counts (transaction markers and all); with the state dir wiped, the store restored from the
    cleaned changelog gives exact counts."""
    import shutil
    from collections import Counter

    from tests.integration.test_streams_eos import (
        GROUP_ARGS,
        Counts,
        StreamsApp,
        lines_for,
        produce_lines,
    )
    from tests.integration.test_transactions import create_topic as create_plain

    broker = nerve_factory(*GROUP_ARGS, *FAST_CLEANER, "--set", "log.roll.ms=300",
                           "--set", "log.cleaner.min.cleanable.ratio=0.01")
    src, dst = unique_topic("wc-in"), unique_topic("wc-out")
    create_plain(broker.bootstrap, src, 3)
    create_plain(broker.bootstrap, dst, 3)
    state = tmp_path / "streams-state"
    app = StreamsApp(wordcount_cp, broker.bootstrap, unique_topic("wc"), state,
                     tmp_path / "wordcount.log", src, dst)
    counts = Counts(broker.bootstrap, dst, 3)
    want: Counter[str] = Counter()

    def feed(seed: int, n: int) -> None:
        lines = lines_for(seed, n)
        produce_lines(broker.bootstrap, src, lines)
        for line in lines:
            want.update(line.split())

    try:
        feed(1, 2000)
        app.start().wait_running()
        counts.wait_for(want)
        for seed in range(2, 6):  # several rounds: the changelog rolls and gets cleaned
            feed(seed, 1000)
            counts.wait_for(want)
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not re.search(r"changelog-\d+: cleaned", broker.log_text()):
            assert time.monotonic() < deadline, "the changelog was never cleaned"
            feed(99, 50)
            time.sleep(1)
        counts.wait_for(want)
        app.stop()
        shutil.rmtree(state)
        feed(7, 1000)
        app.start().wait_running()
        counts.wait_for(want)
    finally:
        app.stop(signal.SIGKILL)
        counts.close()
    assert "Traceback" not in broker.log_text()
