"""Fixtures for integration tests against a real `nerve serve` process and real clients.

    def test_x(nerve, unique_topic, kcat, kafka_run):
        topic = unique_topic()
        subprocess.run([kcat, "-b", nerve.bootstrap, "-P", "-t", topic], input=b"a\\n", check=True)
        r = kafka_run("console-consumer", "--bootstrap-server", nerve.bootstrap, "--topic", topic,
                      "--from-beginning", "--max-messages", "1")
        assert r.returncode == 0 and r.stdout == "a\\n"

When a test fails, the tail of each broker's log is added to its failure report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import KAFKA_RUN, REPO_ROOT, NerveProcess

_PROCS_ATTR = "_nerve_processes"


def _track(request: pytest.FixtureRequest, proc: NerveProcess) -> None:
    procs = getattr(request.node, _PROCS_ATTR, None)
    if procs is None:
        procs = []
        setattr(request.node, _PROCS_ATTR, procs)
    procs.append(proc)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report = yield
    # Attach each broker's log tail to a failed test's report (shown with the failure).
    if report.failed and report.when == "call":
        for proc in getattr(item, _PROCS_ATTR, []):
            state = "running" if proc.running else f"exited with code {proc.returncode}"
            report.sections.append(
                (f"nerve {proc.bootstrap} log tail ({state}, {proc.log_path})", proc.log_tail(80))
            )
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the Kafka Java tools get the `java` marker, so `-m "not java"` skips them.
    for item in items:
        if "kafka_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.java)


def _finish(procs: list[NerveProcess]) -> None:
    crashed = [p for p in procs if p.exited_unexpectedly]
    for p in procs:
        p.stop()
    if crashed:
        pytest.fail(
            "\n\n".join(
                f"nerve {p.bootstrap} exited with code {p.returncode} during the test; "
                f"log tail ({p.log_path}):\n{p.log_tail(80)}"
                for p in crashed
            ),
            pytrace=False,
        )


@pytest.fixture
def nerve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NerveProcess]:
    """A started `nerve serve` on a free port with a fresh data dir (tmp_path/nerve-data)."""
    proc = NerveProcess(tmp_path / "nerve-data")
    _track(request, proc)
    proc.start()
    yield proc
    _finish([proc])


@pytest.fixture
def nerve_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., NerveProcess]]:
    """Start brokers with extra `nerve serve` args: nerve_factory("--set", "k=v", ...).

    Keyword args: data_dir (default tmp_path/nerve-N), port (default: a free one).
    """
    procs: list[NerveProcess] = []

    def make(*extra_args: str, data_dir: Path | str | None = None,
             port: int | None = None) -> NerveProcess:
        proc = NerveProcess(
            data_dir if data_dir is not None else tmp_path / f"nerve-{len(procs) + 1}",
            port=port,
            extra_args=extra_args,
        )
        procs.append(proc)
        _track(request, proc)
        return proc.start()

    yield make
    _finish(procs)


@pytest.fixture
def unique_topic() -> Callable[..., str]:
    """unique_topic() -> a fresh topic name per call, e.g. "t-1a2b3c4d"."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture(scope="session")
def kcat() -> str:
    """Path to kcat. Missing kcat fails the test: scripts/install-test-deps installs it."""
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not on PATH: run scripts/install-test-deps (apt-get install kcat)",
                    pytrace=False)
    return path


def _kafka_libs_ready() -> bool:
    cache = Path(os.environ.get("NERVE_CACHE") or Path.home() / ".cache" / "nerve")
    version = os.environ.get("KAFKA_VERSION") or "4.4.0"
    return (cache / f"kafka-{version}" / ".complete").is_file()


@pytest.fixture(scope="session")
def kafka_run() -> Callable[..., subprocess.CompletedProcess[str]]:
    """kafka_run(short_name_or_class, *args, input=None, timeout=60) -> CompletedProcess.

    Runs scripts/kafka-run (Apache Kafka's Java tools), capturing stdout and stderr as text
    (as bytes if `input` is bytes). Does not raise on a non-zero exit; check .returncode.
    """
    if not _kafka_libs_ready():
        r = subprocess.run([str(REPO_ROOT / "scripts" / "install-test-deps"), "jars"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"scripts/install-test-deps jars failed:\n{r.stdout}{r.stderr}",
                        pytrace=False)

    def run(name: str, *args: object, input: str | bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_RUN), name, *(str(a) for a in args)],
            input=input,
            capture_output=True,
            text=not isinstance(input, bytes),
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    return run
