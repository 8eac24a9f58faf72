"""Click commands registered by nerve.cli: `nerve topics|produce|consume|groups|cluster|console|
log`. Each group lives in its own module; what they share is in nerve.tools.common."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nerve.tools.cluster import cluster
from nerve.tools.common import _bootstrap_options, _cluster, _tool_errors
from nerve.tools.consume import consume
from nerve.tools.groups import groups
from nerve.tools.produce import produce
from nerve.tools.topics import topics


# ============================================================================ console
@click.command("console")
@_bootstrap_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", type=int, default=8080, show_default=True)
@click.option("--read-only", is_flag=True, help="Hide every action (produce, reset, delete).")
@click.option("--password", envvar="NERVE_CONSOLE_PASSWORD", default=None,
              help="HTTP basic auth password (any user name); required for a writable "
                   "console on a non-loopback --host. Prefer the env variable.")
@click.option("--allowed-hosts", envvar="NERVE_CONSOLE_ALLOWED_HOSTS", default="",
              help="Comma-separated extra Host names the console answers to.")
@_tool_errors
def console(bootstrap: str, timeout: float, host: str, port: int, read_only: bool,
            password: str | None, allowed_hosts: str) -> None:
    """Run the web console for any Kafka cluster (nerve or Apache Kafka)."""
    from nerve.console.server import run_standalone

    cluster = _cluster(bootstrap, timeout, client_id="nerve-console")
    cluster.metadata()  # fail now, with one line, if the cluster is unreachable
    run_standalone(cluster, host, port, read_only, password or None,
                   tuple(allowed_hosts.split(",")))


# ---- nerve log dump|verify (nerve/tools/logtool.py): files of a stopped broker, no network


@click.group("log")
def log_() -> None:
    """Look into segment files (like kafka-dump-log), check a data dir."""


@log_.command("dump")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--print-data-log", is_flag=True,
              help="Also print each record: offset, timestamp, key, payload, header keys.")
@_tool_errors
def log_dump(paths: tuple[Path, ...], print_data_log: bool) -> None:
    """Print the batches of .log files (and the entries of .index/.timeindex files)."""
    from nerve.tools.logtool import broker_running, dump

    for path in paths:
        if broker_running(path.resolve().parent.parent):
            click.echo(f"warning: a broker is running on {path.resolve().parent.parent}: "
                       f"{path.name} may change while it is read", err=True)
        dump(path, print_data_log, click.echo)


@log_.command("verify")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A stopped broker's data dir.")
@_tool_errors
def log_verify(data_dir: Path) -> None:
    """Check every segment's batches (CRC-32C included) and indexes; exit 1 on damage.

    Refuses (exit 2) a data dir a running broker holds."""
    from nerve.storage.errors import DataDirLockedError
    from nerve.tools.logtool import verify

    try:
        result = verify(data_dir, click.echo)
    except DataDirLockedError as e:
        click.echo(f"Error: {e}; stop the broker first", err=True)
        sys.exit(2)
    state = f"{result.problems} problem(s)" if result.problems else "no damage"
    click.echo(f"checked {result.partitions} partition(s), {result.segments} segment(s), "
               f"{result.batches} batch(es): {state}", err=bool(result.problems))
    if result.problems:
        sys.exit(1)


COMMANDS = [topics, produce, consume, groups, cluster, console, log_]
