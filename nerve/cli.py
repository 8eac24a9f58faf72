"""`nerve` command line: `nerve serve` runs the broker."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from nerve import __version__
from nerve.config import BrokerConfig, ConfigError
from nerve.security.acl_store import AclStoreError
from nerve.server.listener import ListenError
from nerve.storage.errors import DataDirLockedError


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nerve")
def main() -> None:
    """nerve: a durable single-node broker that speaks the Apache Kafka protocol."""


@main.command()
@click.option("--host", envvar="NERVE_HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", envvar="NERVE_PORT", default=9092, show_default=True, type=int,
              help="Kafka protocol port (0: any free port).")
@click.option("--data-dir", envvar="NERVE_DATA_DIR", default="nerve-data", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where logs are kept.")
@click.option("--advertised-host", envvar="NERVE_ADVERTISED_HOST", default=None,
              help="Host clients are told to connect to (default: --host).")
@click.option("--node-id", envvar="NERVE_NODE_ID", default=None, type=int,
              help="Broker id reported in metadata (default 1).")
@click.option("--config", "config_file", envvar="NERVE_CONFIG", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A server.properties-style file of broker configs.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A broker config, named as Kafka names it (repeatable).")
@click.option("--log-level", envvar="NERVE_LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--event-loop", envvar="NERVE_EVENT_LOOP", default="asyncio", show_default=True,
              type=click.Choice(["asyncio", "uvloop"]),
              help="asyncio (sendfile for large fetches) or uvloop (must be installed).")
# ---- web console (nerve/console), served on the broker's event loop
@click.option("--console-port", envvar="NERVE_CONSOLE_PORT", default=8080, show_default=True,
              type=int, help="Web console port, on --console-host (0: any free port).")
@click.option("--console-host", envvar="NERVE_CONSOLE_HOST", default="127.0.0.1",
              show_default=True, help="Address the web console listens on.")
@click.option("--console-password", envvar="NERVE_CONSOLE_PASSWORD", default=None,
              help="HTTP basic auth password (any user name) for the web console; required "
                   "for a writable console on a non-loopback --console-host. Prefer the env "
                   "variable (a flag shows in ps).")
@click.option("--console-allowed-hosts", envvar="NERVE_CONSOLE_ALLOWED_HOSTS", default="",
              help="Comma-separated extra Host names the console answers to (a DNS name or "
                   "proxy in front of it); others are refused.")
@click.option("--no-console", is_flag=True, envvar="NERVE_NO_CONSOLE",
              help="Do not start the web console.")
@click.option("--console-read-only", is_flag=True, envvar="NERVE_CONSOLE_READ_ONLY",
              help="Console without actions (produce, reset offsets, delete).")
@click.option("--console-listener", envvar="NERVE_CONSOLE_LISTENER", default=None,
              metavar="NAME", help="Listener the console connects to (default: the first "
              "SASL_PLAINTEXT one, where each person logs in as their Kafka user; else the "
              "first PLAINTEXT one).")
@click.option("--console-read-only-users", envvar="NERVE_CONSOLE_READ_ONLY_USERS", default="",
              metavar="USERS", help="Comma-separated users (alice or User:alice) who log in "
              "with the read-only role: no actions.")
@click.option("--console-sasl-mechanisms", envvar="NERVE_CONSOLE_SASL_MECHANISMS", default="",
              help="Mechanisms the login form offers (default: the listener's enabled ones).")
@click.option("--console-session-timeout", envvar="NERVE_CONSOLE_SESSION_TIMEOUT",
              default=1800, show_default=True, type=click.IntRange(min=1),
              help="Seconds without a request after which a console login ends.")
# ---- Prometheus metrics (nerve/metrics.py), served on the broker's event loop
@click.option("--metrics-port", envvar="NERVE_METRICS_PORT", default=None, type=int,
              help="Prometheus /metrics port, on --metrics-host (default 9464; if that one "
                   "is taken, a warning and no metrics; 0: any free port).")
@click.option("--metrics-host", envvar="NERVE_METRICS_HOST", default="127.0.0.1",
              show_default=True, help="Address the metrics endpoint listens on.")
@click.option("--no-metrics", is_flag=True, envvar="NERVE_NO_METRICS",
              help="Do not serve Prometheus metrics.")
def serve(
    host: str,
    port: int,
    data_dir: Path,
    advertised_host: str | None,
    node_id: int | None,
    config_file: Path | None,
    sets: tuple[str, ...],
    log_level: str,
    event_loop: str,
    console_port: int,
    console_host: str,
    console_password: str | None,
    console_allowed_hosts: str,
    no_console: bool,
    console_read_only: bool,
    console_listener: str | None,
    console_read_only_users: str,
    console_sasl_mechanisms: str,
    console_session_timeout: int,
    metrics_port: int | None,
    metrics_host: str,
    no_metrics: bool,
) -> None:
    """Run the broker until SIGTERM or Ctrl-C.

    Every broker and topic setting (--set, --config), with its type, default and meaning:
    docs/configuration.md. Metrics: docs/operations.md "Monitoring"."""
    # kio registers hypothesis strategies for its types whenever hypothesis is importable
    # (test environments), which costs ~0.3 s of start-up the broker never uses.
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = BrokerConfig.load(config_file, _parse_sets(sets))
    except (ConfigError, OSError) as e:
        raise click.ClickException(str(e)) from None
    console = None
    if not no_console:
        from nerve.console.auth import parse_users
        from nerve.console.guard import refusal

        if (not _console_logs_in(config, host, port, console_listener)
                and (why := refusal(console_host, console_read_only, console_password))):
            click.echo(f"nerve: {why}", err=True)
            sys.exit(2)
        console = {"host": console_host, "port": console_port, "read_only": console_read_only,
                   "password": console_password or None,
                   "allowed": tuple(console_allowed_hosts.split(",")),
                   "listener": console_listener,
                   "mechanisms": tuple(m.strip().upper() for m in
                                       console_sasl_mechanisms.split(",") if m.strip()),
                   "read_only_users": parse_users(console_read_only_users),
                   "session_timeout_s": float(console_session_timeout)}
    metrics = None if no_metrics else {"host": metrics_host, "port": metrics_port}
    main_coro = _serve(host, port, data_dir, advertised_host, node_id, config, console,
                       metrics)
    try:
        if event_loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                main_coro.close()
                raise click.ClickException("--event-loop uvloop: pip install uvloop") from None
            uvloop.run(main_coro)
        else:
            asyncio.run(main_coro)
    except (DataDirLockedError, ListenError, AclStoreError, ConfigError) as e:
        # A second broker on a live data dir, or a port that cannot be had: one line, exit 2.
        click.echo(f"nerve: {e}", err=True)
        sys.exit(2)


def _console_logs_in(config: BrokerConfig, host: str, port: int, listener: str | None) -> bool:
    """The embedded console will log people in (nerve/console/server.py picks the listener):
    each has their own password, so no --console-password is needed off loopback."""
    from nerve.security.listeners import parse_listeners

    try:
        specs = parse_listeners(config, host, port, None)
    except ConfigError:
        return False  # the broker reports it when it starts
    if listener is not None:
        return any(s.name == listener.upper() and s.protocol == "SASL_PLAINTEXT" for s in specs)
    return any(s.protocol == "SASL_PLAINTEXT" for s in specs)


def _import_console() -> None:
    for name in ("nerve.console.app", "nerve.console.server"):
        importlib.import_module(name)


async def _serve(
    host: str,
    port: int,
    data_dir: Path,
    advertised_host: str | None,
    node_id: int | None,
    config: BrokerConfig,
    console_opts: dict[str, Any] | None = None,
    metrics_opts: dict[str, Any] | None = None,
) -> None:
    from nerve.broker import Broker

    if console_opts is not None:
        import nerve.console.accounting  # noqa: F401  (registers its on_start hook)

    broker = Broker(
        data_dir, host=host, port=port, advertised_host=advertised_host, node_id=node_id,
        config=config,
    )
    await broker.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    console: Any = None
    metrics = await _start_metrics(broker, metrics_opts) if metrics_opts is not None else None

    async def shutdown() -> None:
        if console is not None:
            await console.stop()  # first: its Kafka clients talk to this broker
        if metrics is not None:
            await metrics.stop()
        await broker.stop()

    def request_stop(signame: str) -> None:
        if not stopping:
            logging.getLogger("nerve").info("%s received: shutting down", signame)
            stopping.append(loop.create_task(shutdown()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    # SIGHUP: TLS listeners reload their certificates and keys (new connections get them).
    loop.add_signal_handler(signal.SIGHUP, broker.reload_tls)
    click.echo(
        f"nerve {__version__}: serving Kafka protocol on {broker.host}:{broker.port}, "
        f"data dir {data_dir.resolve()}",
        err=False,
    )
    if len(broker.listeners) > 1 or broker.listeners[0].protocol != "PLAINTEXT":
        for spec in broker.listeners:
            click.echo(f"nerve: listener {spec.name} ({spec.protocol}) on "
                       f"{spec.host}:{spec.port}")
    sys.stdout.flush()
    if console_opts is not None and not stopping:
        # Kafka clients first: the console's modules (starlette, uvicorn, confluent-kafka:
        # ~170 ms) are imported on a worker thread while the loop already serves Kafka, and
        # the console prints its own "nerve console on URL" line once it listens.
        try:
            await asyncio.to_thread(_import_console)
        except ImportError as e:  # the broker matters more than its console
            logging.getLogger("nerve.console").warning("web console not started: %s", e)
        else:
            from nerve.console.server import start_embedded

            if not stopping:
                console = await start_embedded(broker, **console_opts)
    await broker.serve_forever()
    if stopping:
        try:
            await stopping[0]
        except Exception as e:
            # Not marked clean: the next start recovers the logs from their recovery point.
            # A disk fault (full, EIO) is one line; anything else is a bug: its traceback.
            logging.getLogger("nerve").error(
                "shutdown failed: %s; the data dir is not marked clean, the next start "
                "recovers it", e, exc_info=None if isinstance(e, OSError) else e)
            raise SystemExit(1) from None
    logging.getLogger("nerve").info("stopped cleanly")


async def _start_metrics(broker: Any, opts: dict[str, Any]) -> Any:
    """The metrics endpoint, or None: the default port being taken is a warning (a second
    broker on one machine still starts); a port asked for that cannot be had is ListenError."""
    from nerve.metrics import DEFAULT_METRICS_PORT, MetricsServer

    port = opts["port"]
    server = MetricsServer(broker, opts["host"],
                           DEFAULT_METRICS_PORT if port is None else port)
    try:
        await server.start()
    except OSError as e:
        if port is not None:
            await broker.stop()
            raise ListenError(f"cannot serve metrics on {opts['host']}:{port}: "
                              f"{e.strerror or e}") from None
        logging.getLogger("nerve.metrics").warning(
            "metrics not served: %s:%d: %s (--metrics-port picks another)", opts["host"],
            DEFAULT_METRICS_PORT, e.strerror or e)
        return None
    click.echo(f"nerve metrics on http://{opts['host']}:{server.port}/metrics")
    return server


# ---- `nerve topics|produce|consume|groups|console` (nerve/tools)
from nerve.tools.commands import COMMANDS  # noqa: E402

for _command in COMMANDS:
    main.add_command(_command)

from nerve.tools.users import users  # noqa: E402  (nerve users create|list|delete)

main.add_command(users)

from nerve.apps.demo import demo  # noqa: E402  (nerve demo shop|rides, nerve/apps)

main.add_command(demo)

if __name__ == "__main__":
    main()
