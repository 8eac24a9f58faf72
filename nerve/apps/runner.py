"""Run a story: its services and simulator as separate processes against one bootstrap server.

Used by `nerve demo` and by tests/apps (which kill and restart pieces of it).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nerve.apps.common import Report, create_topics, read_json, wait_for_report

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceSpec:
    name: str  # the process's name (its log file); also its state dir unless `state` is set
    module: str
    args: tuple[str, ...] = ()
    instance: str = "0"
    state: str = ""  # the state dir under the run's root: instances of a service share it

    @property
    def state_dir(self) -> str:
        return self.state or self.name


def instances(service: str, module: str, n: int, args: tuple[str, ...] = ()) -> list[ServiceSpec]:
    """n instances of a SQLite service in one consumer group, sharing its state dir: `payments`
    (instance 0), `payments-1`, ..."""
    return [ServiceSpec(service if i == 0 else f"{service}-{i}", module, args, str(i), service)
            for i in range(n)]


@dataclass
class Story:
    name: str
    topics: dict[str, int]
    services: list[ServiceSpec]
    simulator: ServiceSpec
    check: Callable[[str, Path], Report]
    progress: Callable[[Path], str]
    ready: Callable[[Path], bool] = lambda root: True  # services ready for the simulator
    # action -> {n, p50, p99, max, recent_p99} (ms), from the services' stats files
    latency: Callable[[Path], dict[str, dict[str, float]]] = lambda root: {}


@dataclass
class Proc:
    spec: ServiceSpec
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    starts: int = 1


@dataclass
class StoryRun:
    story: Story
    bootstrap: str
    root: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    replication_factor: int = -1  # -1: the cluster's default.replication.factor

    def start(self, sim_args: tuple[str, ...] = (), ready_timeout: float = 60) -> None:
        """Create the topics, start every service, wait until they are ready, start the
        simulator."""
        self.root.mkdir(parents=True, exist_ok=True)
        create_topics(self.bootstrap, self.story.topics,
                      replication_factor=self.replication_factor)
        for spec in self.story.services:
            self._spawn(spec)
        deadline = time.monotonic() + ready_timeout
        while not self.story.ready(self.root):
            if self.crashed() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.story.name} services not ready after "
                                   f"{ready_timeout}s: {self.crashed()}\n{self.log_tails()}")
            time.sleep(0.1)
        sim = self.story.simulator
        self._spawn(ServiceSpec(sim.name, sim.module, (*sim.args, *sim_args)))

    def _spawn(self, spec: ServiceSpec, starts: int = 1) -> Proc:
        log = open(self.root / f"{spec.name}.log", "ab")  # noqa: SIM115 - closed in stop()
        log.write(f"--- start #{starts}\n".encode())
        log.flush()
        cmd = [sys.executable, "-m", spec.module, "--bootstrap-server", self.bootstrap,
               "--state-dir", str(self.root / spec.state_dir), "--instance", spec.instance,
               *spec.args]
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                 # Ctrl-C reaches only the runner, which stops them in order.
                                 start_new_session=True)
        proc = Proc(spec, popen, log, starts)
        self.procs[spec.name] = proc
        return proc

    @property
    def simulator(self) -> Proc:
        return self.procs[self.story.simulator.name]

    def simulator_done(self) -> bool:
        return self.simulator.popen.poll() is not None

    def kill(self, name: str) -> None:
        """SIGKILL a service: no clean shutdown, no offset commit, no LeaveGroup."""
        p = self.procs[name]
        p.popen.send_signal(signal.SIGKILL)
        p.popen.wait(10)

    def restart(self, name: str) -> None:
        p = self.procs[name]
        if p.popen.poll() is None:
            self.kill(name)
        p.log.close()
        self._spawn(p.spec, p.starts + 1)

    def stop_one(self, name: str, timeout: float = 15) -> None:
        p = self.procs[name].popen
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()

    def crashed(self) -> list[str]:
        """Processes that exited with an error we did not cause."""
        return [f"{n} exited with {p.popen.returncode} (log {self.root / (n + '.log')})"
                for n, p in self.procs.items()
                if p.popen.poll() not in (None, 0, -signal.SIGKILL)]

    def progress(self) -> str:
        return self.story.progress(self.root)

    def wait_simulator(self, timeout: float, every: float = 0.0,
                       out: Callable[[str], Any] | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while not self.simulator_done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.story.name} simulator still running after {timeout}s")
            time.sleep(0.2)
            if out is not None and every and time.monotonic() - last >= every:
                out(self.progress())
                last = time.monotonic()

    def check(self, timeout: float = 60) -> Report:
        """Wait until the services caught up with the topics (or timeout), then check."""
        report = wait_for_report(lambda: self.story.check(self.bootstrap, self.root), timeout)
        report.latency = self.latency()
        return report

    def stop(self, timeout: float = 15) -> None:
        for p in self.procs.values():
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(5)
            p.log.close()

    def stats(self, name: str) -> dict[str, Any]:
        return read_json(self.root / name / "stats.json") or {}

    def latency(self) -> dict[str, dict[str, float]]:
        """Every action's latency figures, over all instances (see Story.latency)."""
        return self.story.latency(self.root)

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for name in self.procs:
            with contextlib.suppress(OSError):
                text = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
                out.append(f"--- {name}.log\n" + "\n".join(text[-lines:]))
        return "\n".join(out)
