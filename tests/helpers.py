"""Shared test helpers: free ports and a real `nerve serve` broker in a subprocess.

    broker = NerveProcess(tmp_path / "data", extra_args=["--set", "log.segment.bytes=1048576"])
    broker.start()
    ...  # clients connect to broker.bootstrap
    broker.kill(); broker.restart()  # crash and recover on the same port and data dir
    broker.stop()
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_RUN = REPO_ROOT / "scripts" / "kafka-run"
READY_RE = re.compile(r"serving Kafka protocol on ([\d.]+):(\d+)")
# What `nerve serve` prints once its web console listens, or gave up on it.
CONSOLE_RE = re.compile(r"nerve console on http|web console (?:not started|failed)")
METRICS_RE = re.compile(r"nerve metrics on (http://\S+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NerveStartError(RuntimeError):
    pass


class NerveProcess:
    """`python -m nerve serve` as a subprocess, on 127.0.0.1.

    Output (stdout and stderr) is appended to `log_path`, next to the data dir. `start()` returns
    once the broker printed its "serving Kafka protocol on HOST:PORT" line (and, when it runs
    a web console, the console's line too).
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        start_timeout: float = START_TIMEOUT,
        open_file_limit: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """open_file_limit: run the broker with RLIMIT_NOFILE soft = hard = this (`ulimit -n`,
        which the broker cannot raise). env: extra environment (test hooks); change it between
        restarts through `self.env`."""
        self.env = dict(env or {})
        self.data_dir = Path(data_dir)
        self.open_file_limit = open_file_limit
        self.host = host
        self._port_given = port is not None
        self.port = port if port is not None else free_port(host)
        self.extra_args = [str(a) for a in extra_args]
        self.log_path = (Path(log_path) if log_path is not None
                         else self.data_dir.parent / f"{self.data_dir.name}.log")
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._signalled = False  # we stopped or killed it, so its exit is expected
        self.metrics_url: str | None = None  # http://host:port/metrics once started

    # ------------------------------------------------------------------ info
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def exited_unexpectedly(self) -> bool:
        """It exited with an error status that no stop()/kill()/signal of ours explains."""
        rc = self.returncode
        return rc is not None and rc > 0 and not self._signalled

    def console_enabled(self) -> bool:
        return "--no-console" not in self.command()

    def command(self) -> list[str]:
        # Brokers under test run without the web console unless a test asks for one: many
        # start side by side, and only one of them could hold the default console port.
        console = [] if any(a.startswith("--console") for a in self.extra_args) else [
            "--no-console"]
        # Likewise the metrics endpoint: any free port (its URL: `metrics_url`).
        metrics = [] if any(a.startswith(("--metrics", "--no-metrics"))
                            for a in self.extra_args) else ["--metrics-port", "0"]
        return [
            sys.executable, "-m", "nerve", "serve",
            "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            *console,
            *metrics,
            *self.extra_args,
        ]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<NerveProcess {self.bootstrap} {state} data_dir={self.data_dir}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> NerveProcess:
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        # A port picked by free_port() can be taken by someone else before the broker binds it:
        # on the first start only, retry with a fresh port.
        attempts = 1 if (self.starts or self._port_given) else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except NerveStartError as e:
                if attempt + 1 < attempts and "in use" in str(e).lower():
                    self.port = free_port(self.host)
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- nerve start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
            offset = log.tell()
            env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,  # `python -m nerve` imports this checkout
                env=env,
                preexec_fn=None if self.open_file_limit is None else self._limit_files,
            )
        self.starts += 1
        self._signalled = False
        deadline = time.monotonic() + self.start_timeout
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                out = f.read().decode(errors="replace")
            m = READY_RE.search(out)
            # The console (when asked for) starts after the Kafka listener; wait for its line
            # too, so a test finds it up.
            if m and (not self.console_enabled() or CONSOLE_RE.search(out)):
                self.port = int(m.group(2))
                mm = METRICS_RE.search(out)
                self.metrics_url = mm.group(1) if mm else None
                return
            if self.proc.poll() is not None:
                raise NerveStartError(
                    f"nerve exited with code {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL, 5)
                raise NerveStartError(
                    f"nerve did not print 'serving Kafka protocol on ...' within "
                    f"{self.start_timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _limit_files(self) -> None:  # in the child, before exec
        import resource

        n = self.open_file_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        if self.proc is None:
            return None
        self._signalled = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        rc = self._terminate(signal.SIGTERM, timeout)
        if rc is None:
            with open(self.log_path, "ab") as log:
                log.write(f"--- nerve did not exit {timeout:.0f}s after SIGTERM: SIGKILL\n"
                          .encode())
            rc = self.kill()
        return rc

    def kill(self) -> int | None:
        """SIGKILL and wait. Returns the exit code."""
        return self._terminate(signal.SIGKILL, 30)

    def restart(self) -> NerveProcess:
        """Start again on the same port and data dir (stops it first if it is running)."""
        if self.running:
            self.stop()
        return self.start()

    def __enter__(self) -> NerveProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
