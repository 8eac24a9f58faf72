"""What every `nerve` tool command shares: the bootstrap options, errors, tables, JSON, and how
bytes are shown (text when UTF-8, else hex or base64).

Tables for people, `--json` for scripts. Every failure a person can act on is one line on
stderr ("Error: cannot reach broker at 127.0.0.1:9092") and exit code 1; usage errors exit 2.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nerve.tools.base import DEFAULT_BOOTSTRAP, ToolError

if TYPE_CHECKING:
    from nerve.tools.kafka import Cluster


def _cluster(bootstrap: str, timeout: float, client_id: str = "nerve-cli") -> Cluster:
    # Imported on use: `nerve serve` should not pay for confluent-kafka at start-up.
    from nerve.tools.kafka import Cluster as _Cluster

    ctx = click.get_current_context(silent=True)
    config_file = ctx.meta.get("nerve.command_config") if ctx is not None else None
    client_config = None
    if config_file:
        from nerve.tools.client_config import load_command_config

        client_config = load_command_config(config_file)
    return _Cluster(bootstrap, timeout, client_id, client_config)


def _remember_command_config(ctx: click.Context, _param: Any, value: str | None) -> None:
    if value:
        ctx.meta["nerve.command_config"] = value


F = TypeVar("F", bound=Callable[..., Any])


def _bootstrap_options(fn: F) -> F:
    fn = click.option("--timeout", type=float, default=5.0, show_default=True,
                      help="Seconds to wait for the broker.")(fn)
    fn = click.option("--command-config", envvar="NERVE_COMMAND_CONFIG", metavar="FILE",
                      type=click.Path(exists=True, dir_okay=False), expose_value=False,
                      callback=_remember_command_config,
                      help="Kafka client properties for a secured cluster (security.protocol, "
                           "sasl.mechanism, sasl.jaas.config, ssl.truststore.location, ...), "
                           "as Kafka's tools take them.")(fn)
    fn = click.option("--bootstrap-server", "-b", "bootstrap", envvar="NERVE_BOOTSTRAP_SERVER",
                      default=DEFAULT_BOOTSTRAP, show_default=True, metavar="HOST:PORT",
                      help="Kafka bootstrap address (env NERVE_BOOTSTRAP_SERVER).")(fn)
    return fn


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(fn)


def _tool_errors(fn: F) -> F:
    """ToolError -> one line on stderr and exit 1 (click's ClickException)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolError as e:
            raise click.ClickException(str(e)) from None

    return wrapper  # type: ignore[return-value]


def _kv(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint=what)
        out[k] = v
    return out


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


# ---------------------------------------------------------------------------- text
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\"}


def unescape(s: str) -> str:
    """kcat's escapes in a format or delimiter: \\t \\n \\r \\0 \\\\ (others stay as written)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), s)


BINARY_CHOICES = ("hex", "base64")


def show(b: bytes | None, binary: str = "hex") -> tuple[str | None, str]:
    """Bytes for people and JSON: (text, "utf-8") when they decode, else (hex or base64,
    that name). Never lossy: the bytes can be recovered from what is printed."""
    if b is None:
        return None, "utf-8"
    try:
        return b.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        if binary == "base64":
            return base64.b64encode(b).decode("ascii"), "base64"
        return b.hex(), "hex"


# ---------------------------------------------------------------------------- names
def is_pattern(name: str) -> bool:
    """`^...` is a regex (as in librdkafka subscriptions); `*`, `?` or `[` make a glob."""
    return name.startswith("^") or any(c in name for c in "*?[")


def match_topics(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """Topics named by literal names, `^regex` or globs; internal ones only when literal."""
    names = sorted(names)
    out: list[str] = []
    for pat in patterns:
        if not is_pattern(pat):
            hits = [pat]
        elif pat.startswith("^"):
            try:
                rx = re.compile(pat)
            except re.error as e:
                raise ToolError(f"bad topic regex {pat!r}: {e}") from None
            hits = [n for n in names if rx.search(n) and not n.startswith("__")]
        else:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pat) and not n.startswith("__")]
        out += [h for h in hits if h not in out]
    return out


def parse_partitions(spec: str, what: str = "--topic") -> tuple[str, list[int] | None]:
    """`topic` or `topic:0,2,5` (Kafka's kafka-consumer-groups partition selection)."""
    topic, sep, parts = spec.rpartition(":")
    if not sep:
        return spec, None
    try:
        return topic, sorted({int(p) for p in parts.split(",") if p.strip()})
    except ValueError:
        raise click.BadParameter(f"expected TOPIC or TOPIC:P1,P2, got {spec!r}",
                                 param_hint=what) from None
