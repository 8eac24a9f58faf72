"""The two reference systems (nerve/apps) as real processes against a real broker.

Each test runs a story for a bounded time, waits until the services caught up with the topics,
and checks the story's invariants from the topics and the services' SQLite files (the same
check `nerve demo` prints). The slow variants SIGKILL and restart a service, or the broker, in
the middle of the run; the last one runs a story on Apache Kafka 4.4.0 (scripts/kafka-broker).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nerve.apps.common import Report, read_json, service_stats
from nerve.apps.rides.story import ACTIONS as RIDES_ACTIONS
from nerve.apps.rides.story import story as rides_story
from nerve.apps.runner import StoryRun
from nerve.apps.shop.story import ACTIONS as SHOP_ACTIONS
from nerve.apps.shop.story import story as shop_story
from tests.apps.conftest import GROUP_ARGS
from tests.helpers import REPO_ROOT, NerveProcess

pytestmark = pytest.mark.timeout(240)

SHOP_ARGS = ("--rate", "50", "--seed", "7")
RIDES_ARGS = ("--rate", "5", "--seed", "7")
# Offsets committed once a second, not after every batch: a SIGKILLed service then leaves
# applied-but-uncommitted events behind, and its restart must skip them (the dedupe is tested).
LAZY_COMMITS = ("--commit-interval", "1")


def wait_until(cond: Callable[[], bool], timeout: float, what: str, run: StoryRun) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if run.crashed():
            raise AssertionError(f"while waiting for {what}: {run.crashed()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"progress: {run.progress()}")
        time.sleep(0.1)


def finish(run: StoryRun, sim_timeout: float = 150) -> Report:
    run.wait_simulator(sim_timeout)
    report = run.check(timeout=90)
    print(f"\n{run.story.name}:\n{report.summary()}")
    assert not run.crashed(), run.crashed()
    assert report.ok, report.summary()
    return report


def assert_shop_nontrivial(report: Report) -> None:
    f = report.figures
    assert f["orders"] > 20 and f["promos"] > 0 and f["tickets"] > 0, f
    assert f["stock-low events"] > 0, f
    assert f["views bought in window"] > 0, f


def assert_rides_nontrivial(report: Report) -> None:
    f = report.figures
    assert f["completed"] > 10 and f["charged"] == f["completed"], f


def shop_progress(run: StoryRun) -> int:
    return int((read_json(run.root / "simulator" / "stats.json") or {})
               .get("produced", {}).get("product-sold", 0))


def rides_progress(run: StoryRun) -> int:
    return int((read_json(run.root / "simulator" / "stats.json") or {}).get("completed", 0))


# ----------------------------------------------------------------------------- default run


def assert_latency_reported(report: Report, actions: tuple[str, ...], events: int) -> None:
    """Every action has figures over a fair share of its events, in a sane order; the bound is
    loose (a loaded machine), the point is that each service measures what it does."""
    lat = report.latency
    assert set(actions) <= set(lat), lat
    for action in actions:
        f = lat[action]
        assert f["n"] >= events, (action, f)
        assert 0 <= f["p50"] <= f["p99"] <= f["max"] < 30_000, (action, f)


def test_shop_invariants(broker: NerveProcess, story_run: Callable[..., StoryRun]) -> None:
    """A few hundred events/s, two instances of every service sharing their groups."""
    run = story_run(shop_story(instances_each=2), broker.bootstrap)
    run.start(("--duration", "6", "--rate", "300", "--seed", "7"))
    report = finish(run)
    assert_shop_nontrivial(report)
    assert report.figures["views"] > 1000, report.figures
    assert_latency_reported(report, SHOP_ACTIONS, 10)
    # Both instances of each service applied events: the partitions really were shared.
    for service in ("inventory", "marketing", "support"):
        applied = [st["applied"] for st in service_stats(run.root / service)]
        assert len(applied) == 2 and all(applied), (service, applied)


def test_rides_invariants(broker: NerveProcess, story_run: Callable[..., StoryRun]) -> None:
    """30 requests/s in a city sized for it: with the drivers' locations, ~250 events/s."""
    run = story_run(rides_story(), broker.bootstrap)
    run.start(("--duration", "6", "--rate", "30", "--seed", "7"))
    report = finish(run)
    assert_rides_nontrivial(report)
    assert report.figures["ride requests"] > 100, report.figures
    assert_latency_reported(report, RIDES_ACTIONS, 100)
    # Both matching instances did work: the zones really were shared between them.
    per_instance = report.figures["matches per matching instance (current processes)"]
    assert len(per_instance) == 2 and all(per_instance.values()), per_instance
    # One transaction per batch, not per match.
    stats = [read_json(run.root / f"matching-{i}" / "stats.json") for i in (0, 1)]
    assert sum(st["transactions"] for st in stats) < report.figures["matched"], stats


# ----------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_shop_services_killed_and_restarted_mid_run(
    broker: NerveProcess, story_run: Callable[..., StoryRun]
) -> None:
    run = story_run(shop_story(service_args=LAZY_COMMITS), broker.bootstrap)
    run.start(("--duration", "20", *SHOP_ARGS))
    for i, service in enumerate(("inventory", "marketing", "support")):
        wait_until(lambda i=i: shop_progress(run) >= 40 * (i + 1), 60, "more orders", run)
        run.kill(service)  # SIGKILL: no offset commit, no clean close
        run.restart(service)
    report = finish(run)
    assert_shop_nontrivial(report)
    assert all(run.procs[s].starts == 2 for s in ("inventory", "marketing", "support"))
    # Offsets were committed every second, so the restarted services were handed events they
    # had applied before the kill: the dedupe was exercised, not just the happy path.
    assert report.figures["redelivered events skipped (current processes)"] > 0


@pytest.mark.slow
def test_rides_services_killed_and_restarted_mid_run(
    broker: NerveProcess, story_run: Callable[..., StoryRun]
) -> None:
    run = story_run(rides_story(service_args=LAZY_COMMITS), broker.bootstrap)
    run.start(("--duration", "20", *RIDES_ARGS))
    for i, service in enumerate(("matching-0", "payments", "tracking", "matching-1")):
        wait_until(lambda i=i: rides_progress(run) >= 12 * (i + 1), 60, "more rides", run)
        run.kill(service)
        run.restart(service)
    report = finish(run)
    assert_rides_nontrivial(report)
    assert report.figures["redelivered events skipped (current processes)"] > 0


@pytest.mark.slow
def test_shop_broker_killed_and_restarted_mid_run(
    broker: NerveProcess, story_run: Callable[..., StoryRun]
) -> None:
    run = story_run(shop_story(), broker.bootstrap)
    run.start(("--duration", "20", *SHOP_ARGS))
    wait_until(lambda: shop_progress(run) >= 60, 60, "orders before the crash", run)
    broker.kill()  # SIGKILL: the broker recovers its log from disk on restart
    broker.restart()
    before = shop_progress(run)
    wait_until(lambda: shop_progress(run) >= before + 30, 60, "orders after the restart", run)
    assert_shop_nontrivial(finish(run))


@pytest.mark.slow
def test_rides_broker_killed_and_restarted_mid_run(
    broker: NerveProcess, story_run: Callable[..., StoryRun]
) -> None:
    run = story_run(rides_story(), broker.bootstrap)
    run.start(("--duration", "20", *RIDES_ARGS))
    wait_until(lambda: rides_progress(run) >= 20, 60, "rides before the crash", run)
    broker.kill()
    broker.restart()
    before = rides_progress(run)
    wait_until(lambda: rides_progress(run) >= before + 10, 60, "rides after the restart", run)
    assert_rides_nontrivial(finish(run))


@pytest.mark.slow
def test_rides_stalled_matching_instance_is_fenced(
    broker: NerveProcess, story_run: Callable[..., StoryRun]
) -> None:
    """SIGSTOP a matching instance inside an open transaction, past its session: the other
    instance takes its zones over and re-matches its rides; SIGCONT: the stalled instance's
    transaction is aborted (fenced by the group generation, or already by the coordinator's
    transaction timeout), so its matches are never seen and no ride is matched twice."""
    # Transactions held open 1.5 s, so a stop can be aimed inside one.
    run = story_run(rides_story(matching_args=("--txn-linger-ms", "1500")), broker.bootstrap)
    run.start(("--duration", "45", "--rate", "10", "--seed", "7"))
    stalled = run.procs["matching-0"].popen

    def inside_a_transaction() -> bool:
        st = read_json(run.root / "matching-0" / "stats.json") or {}
        return bool(st.get("open_transaction")) and time.time() - st["open_since"] < 0.8

    wait_until(lambda: rides_progress(run) >= 10, 60, "rides before the stall", run)
    wait_until(inside_a_transaction, 60, "matching-0 inside a transaction", run)
    stalled.send_signal(signal.SIGSTOP)
    try:
        def taken_over() -> bool:
            st = read_json(run.root / "matching-1" / "stats.json") or {}
            return st.get("partitions") == list(range(6))
        wait_until(taken_over, 90, "matching-1 owning every zone", run)
        before = rides_progress(run)
        wait_until(lambda: rides_progress(run) >= before + 10, 60, "rides during the stall",
                   run)
    finally:
        stalled.send_signal(signal.SIGCONT)
    wait_until(lambda: (read_json(run.root / "matching-0" / "stats.json") or {})
               .get("aborted", 0) >= 1, 60, "matching-0 to find its transaction aborted", run)
    report = finish(run, sim_timeout=200)
    assert_rides_nontrivial(report)
    assert report.figures["matching transactions aborted (fenced or failed)"] >= 1


# ----------------------------------------------------------------------------- at volume


def fresh_broker(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> NerveProcess:
    """A broker of its own per run: the invariants are checked over every event in the topics."""
    proc = NerveProcess(tmp_path / name, extra_args=GROUP_ARGS)
    request.node._nerve_procs = [*getattr(request.node, "_nerve_procs", []), proc]
    proc.start()
    return proc


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "rates"), [("rides", (50, 150)), ("shop", (500, 1500))])
def test_story_at_rising_rates(request: pytest.FixtureRequest, tmp_path: Path,
                               story_run: Callable[..., StoryRun], name: str,
                               rates: tuple[int, ...]) -> None:
    """Each rate on a fresh broker for 10 s: the city (or the catalogue) is sized to the rate,
    every invariant holds, every action's latency is reported, the services kept up."""
    for rate in rates:
        broker = fresh_broker(request, tmp_path, f"nerve-{rate}")
        try:
            story = rides_story() if name == "rides" else shop_story()
            run = story_run(story, broker.bootstrap)
            run.start(("--duration", "10", "--rate", str(rate), "--seed", "7"))
            report = finish(run, sim_timeout=240)
            run.stop()
            f = report.figures
            if name == "rides":
                assert f["ride requests"] >= 10 * rate * 0.5, f
                # Locations every 0.5 s per driver: the largest topic by far.
                assert f["driver locations"] > 3 * f["ride requests"], f
                assert_latency_reported(report, RIDES_ACTIONS, 5 * rate)
            else:
                assert f["views"] >= 10 * rate * 0.5, f
                assert_latency_reported(report, SHOP_ACTIONS, 10)
        finally:
            broker.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_services_killed_and_restarted_at_volume(
    request: pytest.FixtureRequest, tmp_path: Path, story_run: Callable[..., StoryRun]
) -> None:
    """Two instances of every service; one instance of each SIGKILLed and restarted while
    the rides story runs at 100 requests/s and the shop at 1,000 events/s."""
    broker = fresh_broker(request, tmp_path, "nerve-rides")
    run = story_run(rides_story(2, 2), broker.bootstrap)
    run.start(("--duration", "20", "--rate", "100", "--seed", "7"))
    for i, service in enumerate(("matching-0", "tracking-1", "payments", "matching-1")):
        wait_until(lambda i=i: rides_progress(run) >= 300 * (i + 1), 120, "more rides", run)
        run.kill(service)
        run.restart(service)
    assert_rides_nontrivial(finish(run, sim_timeout=300))
    run.stop()
    broker.stop()

    broker = fresh_broker(request, tmp_path, "nerve-shop")
    run = story_run(shop_story(2), broker.bootstrap)
    run.start(("--duration", "20", "--rate", "1000", "--seed", "7"))
    for i, service in enumerate(("inventory", "marketing-1", "support", "marketing")):
        wait_until(lambda i=i: shop_progress(run) >= 800 * (i + 1), 120, "more orders", run)
        run.kill(service)
        run.restart(service)
    report = finish(run, sim_timeout=300)
    assert_shop_nontrivial(report)
    assert report.figures["orders"] > 3000, report.figures
    broker.stop()


# ----------------------------------------------------------------------------- Apache Kafka


@pytest.mark.slow
@pytest.mark.java
@pytest.mark.timeout(420)
def test_same_code_on_apache_kafka(
    tmp_path: Path, story_run: Callable[..., StoryRun]
) -> None:
    """Both stories, unchanged, against a real Apache Kafka KRaft broker."""
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH: run scripts/install-test-deps", pytrace=False)
    script = REPO_ROOT / "scripts" / "kafka-broker"
    kdir = tmp_path / "kafka"
    started = subprocess.run(
        [str(script), "start", "--dir", str(kdir),
         "--set", "group.initial.rebalance.delay.ms=0"],
        capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip().splitlines()[-1]
    try:
        shop = story_run(shop_story(), bootstrap)
        shop.start(("--duration", "10", *SHOP_ARGS))
        assert_shop_nontrivial(finish(shop))
        shop.stop()
        rides = story_run(rides_story(), bootstrap)
        rides.start(("--duration", "10", *RIDES_ARGS))
        assert_rides_nontrivial(finish(rides))
    finally:
        subprocess.run([str(script), "stop", "--dir", str(kdir)], capture_output=True,
                       timeout=120)
