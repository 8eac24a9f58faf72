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
@click.option("--read-only-users", envvar="NERVE_CONSOLE_READ_ONLY_USERS", default="",
              metavar="USERS", help="With a SASL cluster: comma-separated users (alice or "
              "User:alice) who log in with the read-only role.")
@click.option("--sasl-mechanisms", envvar="NERVE_CONSOLE_SASL_MECHANISMS", default="",
              help="With a SASL cluster: mechanisms the login form offers (default: "
                   "sasl.mechanism of --command-config, else SCRAM-SHA-512).")
@click.option("--session-timeout", default=1800, show_default=True, type=click.IntRange(min=1),
              help="Seconds without a request after which a console login ends.")
@_tool_errors
def console(bootstrap: str, timeout: float, host: str, port: int, read_only: bool,
            password: str | None, allowed_hosts: str, read_only_users: str,
            sasl_mechanisms: str, session_timeout: int) -> None:
    """Run the web console for any Kafka cluster (nerve or Apache Kafka).

    When --command-config sets security.protocol=SASL_PLAINTEXT or SASL_SSL, the console asks
    each person to log in and acts as that Kafka user (TLS settings from the file; its own
    credentials, if any, are not used)."""
    from nerve.console.auth import Logins, LoginSettings, SessionCluster, needs_login, parse_users
    from nerve.console.server import run_standalone

    cluster = _cluster(bootstrap, timeout, client_id="nerve-console")
    logins = None
    if needs_login(cluster.client_config):
        logins = Logins(LoginSettings.from_client_config(
            bootstrap, cluster.client_config, sasl_mechanisms.split(","),
            read_only_users=parse_users(read_only_users), idle_timeout_s=session_timeout,
            timeout=timeout))
        cluster = SessionCluster(logins)  # type: ignore[assignment]
    else:
        cluster.metadata()  # fail now, with one line, if the cluster is unreachable
    run_standalone(cluster, host, port, read_only, password or None,
                   tuple(allowed_hosts.split(",")), logins)


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
