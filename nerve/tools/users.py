"""`nerve users create|list|delete`: SCRAM users over the Kafka protocol
(AlterUserScramCredentials / DescribeUserScramCredentials), against nerve or any Kafka."""

from __future__ import annotations

import json
from typing import Any

import click

from nerve.tools.base import ToolError
from nerve.tools.common import _bootstrap_options, _cluster, _json_option, _tool_errors, table

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def _mech(name: str) -> Any:
    from confluent_kafka.admin import ScramMechanism

    return ScramMechanism.SCRAM_SHA_256 if name == "SCRAM-SHA-256" else (
        ScramMechanism.SCRAM_SHA_512)


def _text(e: BaseException) -> str:
    err = e.args[0] if e.args else e
    return err.str() if hasattr(err, "str") else str(err)


def _wait(futures: dict[str, Any], timeout: float) -> None:
    from confluent_kafka import KafkaException

    for user, fut in futures.items():
        try:
            fut.result(timeout=max(timeout, 5))
        except KafkaException as e:
            raise ToolError(f"user {user}: {_text(e)}") from None


def _describe(cluster: Any, names: list[str] | None) -> dict[str, list[tuple[str, int]]]:
    from confluent_kafka import KafkaException

    admin = cluster.admin
    try:
        if names:
            found = {}
            for name, fut in admin.describe_user_scram_credentials(names).items():
                found[name] = fut.result(timeout=max(cluster.timeout, 5))
        else:
            found = admin.describe_user_scram_credentials().result(
                timeout=max(cluster.timeout, 5))
    except KafkaException as e:
        raise ToolError(_text(e)) from None
    return {name: sorted((str(i.mechanism).rsplit(".", 1)[-1].replace("_", "-"), i.iterations)
                         for i in d.scram_credential_infos)
            for name, d in sorted(found.items())}


@click.group()
def users() -> None:
    """SCRAM users (SASL/SCRAM and PLAIN log-ins)."""


@users.command("create")
@click.argument("name")
@_bootstrap_options
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="NERVE_USER_PASSWORD", help="Prompted for when not given.")
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(MECHANISMS),
              help="Default: both.")
@click.option("--iterations", type=click.IntRange(4096, 16384), default=4096,
              show_default=True)
@_tool_errors
def users_create(name: str, bootstrap: str, timeout: float, password: str,
                 mechanisms: tuple[str, ...], iterations: int) -> None:
    """Create a user, or set its password."""
    from confluent_kafka.admin import ScramCredentialInfo, UserScramCredentialUpsertion

    cluster = _cluster(bootstrap, timeout)
    ups = [UserScramCredentialUpsertion(name, ScramCredentialInfo(_mech(m), iterations),
                                        password.encode())
           for m in (mechanisms or MECHANISMS)]
    _wait(cluster.admin.alter_user_scram_credentials(ups), timeout)
    click.echo(f"user {name}: {', '.join(mechanisms or MECHANISMS)}")


@users.command("list")
@_bootstrap_options
@_json_option
@_tool_errors
def users_list(bootstrap: str, timeout: float, as_json: bool) -> None:
    """Users and their SCRAM mechanisms (never passwords)."""
    found = _describe(_cluster(bootstrap, timeout), None)
    if as_json:
        click.echo(json.dumps({u: [{"mechanism": m, "iterations": i} for m, i in c]
                               for u, c in found.items()}, indent=2))
        return
    click.echo(table(["USER", "MECHANISMS"], [
        [u, ", ".join(f"{m} ({i})" for m, i in c)] for u, c in found.items()]))


@users.command("delete")
@click.argument("name")
@_bootstrap_options
@click.option("--mechanism", "mechanisms", multiple=True, type=click.Choice(MECHANISMS),
              help="Default: every mechanism the user has.")
@_tool_errors
def users_delete(name: str, bootstrap: str, timeout: float,
                 mechanisms: tuple[str, ...]) -> None:
    """Delete a user's credentials."""
    from confluent_kafka.admin import UserScramCredentialDeletion

    cluster = _cluster(bootstrap, timeout)
    if not mechanisms:
        mechanisms = tuple(m for m, _ in _describe(cluster, [name]).get(name, []))
    _wait(cluster.admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(name, _mech(m)) for m in mechanisms]), timeout)
    click.echo(f"user {name}: deleted {', '.join(mechanisms)}")
