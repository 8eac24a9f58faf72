"""Fixtures for the reference-system tests: a real `nerve serve` process per test, and a
story runner whose process logs are attached to a failing test's report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nerve.apps.runner import Story, StoryRun
from tests.helpers import NerveProcess

# Kafka's 3 s initial rebalance delay would only slow every service start down.
GROUP_ARGS = ("--set", "group.initial.rebalance.delay.ms=0")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report = yield
    if report.failed and report.when == "call":
        for run in getattr(item, "_story_runs", []):
            report.sections.append((f"{run.story.name} process logs", run.log_tails(25)))
        for proc in getattr(item, "_nerve_procs", []):
            report.sections.append((f"nerve {proc.bootstrap} log tail", proc.log_tail(40)))
    return report


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path / "nerve-data", extra_args=GROUP_ARGS)
    request.node._nerve_procs = [proc]
    proc.start()
    yield proc
    crashed = proc.exited_unexpectedly
    proc.stop()
    if crashed:
        pytest.fail(f"nerve exited with {proc.returncode}:\n{proc.log_tail(60)}", pytrace=False)


@pytest.fixture
def story_run(request: pytest.FixtureRequest,
              tmp_path: Path) -> Iterator[Callable[[Story, str], StoryRun]]:
    """story_run(story, bootstrap) -> a StoryRun (not started) stopped at teardown."""
    runs: list[StoryRun] = []
    request.node._story_runs = runs

    def make(story: Story, bootstrap: str) -> StoryRun:
        run = StoryRun(story, bootstrap, tmp_path / f"{story.name}-{len(runs)}")
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()
