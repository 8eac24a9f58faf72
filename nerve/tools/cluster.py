"""`nerve cluster info`: brokers, controller, topics, partitions and leaders (kcat -L,
rpk cluster info)."""

from __future__ import annotations

import click

from nerve.tools.common import _bootstrap_options, _cluster, _dump, _json_option, _tool_errors
from nerve.tools.common import table as _table


@click.group("cluster")
def cluster() -> None:
    """What the cluster is made of."""


@cluster.command("info")
@_bootstrap_options
@_json_option
@click.option("--internal", is_flag=True, help="Include internal topics (__...).")
@_tool_errors
def cluster_info(bootstrap: str, timeout: float, as_json: bool, internal: bool) -> None:
    """Cluster id, brokers (and which is the controller), topics with partition leaders."""
    from nerve.tools.ops import cluster_info as info_of

    info = info_of(_cluster(bootstrap, timeout))
    if not internal:
        info["topics"] = [t for t in info["topics"] if not t["internal"]]
    if as_json:
        _dump(info)
        return
    click.echo(f"Cluster: {info['cluster_id']}  controller: {info['controller_id']}  "
               f"brokers: {len(info['brokers'])}  topics: {len(info['topics'])}")
    click.echo(_table(["BROKER", "HOST", "PORT", "CONTROLLER"],
                      [[b["id"], b["host"], b["port"], "*" if b["controller"] else ""]
                       for b in info["brokers"]]))
    click.echo("")
    click.echo(_table(["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"],
                      [[t["name"], p["partition"], p["leader"],
                        ",".join(map(str, p["replicas"])), ",".join(map(str, p["isr"]))]
                       for t in info["topics"] for p in t["partitions"]]))
