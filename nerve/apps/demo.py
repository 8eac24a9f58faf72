"""`nerve demo shop|rides`: run a reference system end to end with one command.

Without --bootstrap-server an embedded broker (nerve's `Broker`, in this process) serves the
story; with it, the same services run against any Kafka-protocol cluster (nerve or Apache
Kafka). Services and simulator are separate processes; their logs and SQLite files are kept in
--dir (a temporary directory by default, removed at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported lazily: `nerve serve` must not need the Kafka client
    from nerve.apps.runner import Story


def _options(default_rate: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed([
            click.option("--bootstrap-server", default=None, metavar="HOST:PORT",
                         help="Use this broker or cluster instead of an embedded nerve."),
            click.option("--duration", default=20.0, show_default=True, type=float,
                         help="Seconds the simulator runs (0: until Ctrl-C)."),
            click.option("--rate", default=default_rate, show_default=True, type=float,
                         help="Simulated events (shop) or ride requests (rides) per second."),
            click.option("--dir", "work_dir", default=None,
                         type=click.Path(file_okay=False, path_type=Path),
                         help="Keep broker data, service state and logs here (default: a "
                              "temporary directory, removed afterwards)."),
            click.option("--console-port", default=8080, show_default=True, type=int,
                         help="Web console of the embedded broker (0: any free port)."),
            click.option("--no-console", is_flag=True, help="Do not start the web console."),
            click.option("--replication-factor", default=-1, show_default=True, type=int,
                         help="Of the story's topics; -1: the cluster's default."),
            click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 6),
                         help="Processes per service, sharing its partitions through its "
                              "consumer group (rides: matching runs at least 2)."),
        ]):
            fn = opt(fn)
        return fn
    return wrap


@click.group()
def demo() -> None:
    """Run a reference system (services as separate processes) and check its invariants."""


@demo.command()
@_options(50.0)
def shop(bootstrap_server: str | None, duration: float, rate: float, work_dir: Path | None,
         console_port: int, no_console: bool, replication_factor: int,
         instances: int) -> None:
    """A web shop: inventory, marketing promos and support tickets from customer events;
    prints each action's latency."""
    from nerve.apps.shop.story import story

    _run(story(instances), bootstrap_server, duration, rate, work_dir,
         None if no_console else console_port, replication_factor)


@demo.command()
@_options(5.0)
@click.option("--zones", default=None, type=click.IntRange(1, 10), metavar="N",
              help="An N x N city (default: sized to --rate).")
@click.option("--drivers", default=None, type=click.IntRange(1), metavar="D",
              help="Drivers in all (default: sized to --rate so supply meets demand).")
def rides(bootstrap_server: str | None, duration: float, rate: float, work_dir: Path | None,
          console_port: int, no_console: bool, replication_factor: int, instances: int,
          zones: int | None, drivers: int | None) -> None:
    """Ride hailing: matching (2 or more instances), tracking and payments; prints each
    action's latency."""
    from nerve.apps.rides.story import story

    extra = (*(("--zones", str(zones)) if zones else ()),
             *(("--drivers", str(drivers)) if drivers else ()))
    _run(story(max(2, instances), instances), bootstrap_server, duration, rate, work_dir,
         None if no_console else console_port, replication_factor, extra)


@contextlib.contextmanager
def _broker(bootstrap: str | None, data_dir: Path, console_port: int | None,
            story: str) -> Iterator[str]:
    if bootstrap:
        if console_port is not None:
            click.echo(f"web console for this cluster: nerve console --bootstrap-server "
                       f"{bootstrap}, then open /stories/{story}")
        yield bootstrap
        return
    from nerve.broker import Broker

    console_server = None
    if console_port is not None:
        try:
            import nerve.console.accounting  # noqa: F401  (registers its broker start hook)
            from nerve.console import server as console_server
        except ImportError as e:  # the console's web dependencies are missing
            click.echo(f"no web console: {e}")
    # Kafka's 3 s initial rebalance delay only slows a demo down.
    broker = Broker(data_dir=data_dir, port=0, config={"group.initial.rebalance.delay.ms": "0"})
    # The broker (and the console, which must share its loop) on an event loop thread.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="nerve-demo-broker", daemon=True)
    thread.start()

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    console = None
    try:
        call(broker.start())
        click.echo(f"embedded nerve broker on {broker.bootstrap_servers} (data dir {data_dir})")
        if console_server is not None and console_port is not None:
            # Prints "nerve console on http://..."; port taken: any free port instead.
            console = call(console_server.start_embedded(broker, "127.0.0.1", console_port,
                                                         False))
            if console is None and console_port != 0:
                console = call(console_server.start_embedded(broker, "127.0.0.1", 0, False))
            if console is not None:  # the story's live page (nerve/console/stories.py)
                click.echo(f"{story} story page: {console.url}/stories/{story}")
        yield broker.bootstrap_servers
    finally:
        if console is not None:
            call(console.stop())
        call(broker.stop())
        call(_cancel_leftover_tasks())  # connection tasks still parked after stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _cancel_leftover_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _run(story: Story, bootstrap: str | None, duration: float, rate: float,
         work_dir: Path | None, console_port: int | None, replication_factor: int = -1,
         sim_args: tuple[str, ...] = ()) -> None:
    from nerve.apps.runner import StoryRun

    root = work_dir or Path(tempfile.mkdtemp(prefix=f"nerve-demo-{story.name}-"))
    ok = False
    try:
        with _broker(bootstrap, root / "broker", console_port, story.name) as bs:
            run = StoryRun(story, bs, root / "run", replication_factor=replication_factor)
            topics = ", ".join(f"{t} ({n})" for t, n in story.topics.items())
            click.echo(f"{story.name}: topics (partitions) {topics}")
            click.echo(f"{story.name}: starting {', '.join(s.name for s in story.services)}; "
                       f"state and logs in {run.root}")
            started = time.monotonic()
            try:
                run.start(("--duration", str(duration), "--rate", str(rate), *sim_args))
                click.echo(f"{story.name}: simulator running at {rate:g}/s for "
                           f"{duration:g} s (Ctrl-C stops it early)")

                def out(line: str) -> None:
                    click.echo(f"[{time.monotonic() - started:5.1f}s] {line}")

                try:
                    run.wait_simulator(duration + 180 if duration > 0 else 1e9, 2.0, out)
                except KeyboardInterrupt:
                    click.echo("stopping the simulator")
                    run.stop_one(story.simulator.name)
                out(run.progress())
                click.echo(f"{story.name}: simulator done; waiting for the services to catch up")
                report = run.check(timeout=60)
                crashed = run.crashed()
            finally:
                run.stop()
        click.echo(f"\n{story.name} summary:\n{report.summary()}")
        for c in crashed:
            click.echo(f"  CRASHED: {c}")
        ok = report.ok and not crashed
    finally:
        if work_dir is None and ok:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            click.echo(f"state and logs kept in {root}")
    if not ok:
        raise SystemExit(1)
