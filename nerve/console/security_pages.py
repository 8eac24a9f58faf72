# ruff: noqa: E501  (HTML templates read better unwrapped)
"""The console's users, ACLs and quotas pages: standard Kafka admin APIs, so they work against
nerve and Apache Kafka alike, as the logged-in principal.

- Users: DescribeUserScramCredentials / AlterUserScramCredentials (confluent-kafka).
- ACLs: DescribeAcls (with filters) / CreateAcls / DeleteAcls (confluent-kafka).
- Quotas: DescribeClientQuotas / AlterClientQuotas (nerve/tools/wire.py: librdkafka has no
  client-quota API), per user and/or client id, default entities included.
A refusal from the cluster (CLUSTER_AUTHORIZATION_FAILED, ...) is shown as a message on the
page; every write goes through the app's write guard (read-only console and role: 403).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from nerve.console import pages
from nerve.console.pages import h
from nerve.tools.base import ToolError

RESOURCE_TYPES = ("TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID")
PATTERN_TYPES = ("LITERAL", "PREFIXED")
OPERATIONS = ("ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
              "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE")
PERMISSIONS = ("ALLOW", "DENY")
QUOTA_KEYS = ("producer_byte_rate", "consumer_byte_rate", "request_percentage")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# The client-id/user "default" entity: its name is null on the wire.
DEFAULT = "<default>"


def _kafka_text(e: BaseException) -> str:
    err = e.args[0] if e.args else e
    if hasattr(err, "name") and hasattr(err, "str"):
        return f"{err.name()}: {err.str()}"
    return str(err)


def _result(fut: Any, timeout: float) -> Any:
    from confluent_kafka import KafkaException

    try:
        return fut.result(timeout=max(timeout * 2, 10))
    except KafkaException as e:
        raise ToolError(_kafka_text(e)) from None
    except TimeoutError:
        raise ToolError("the cluster did not answer in time") from None


def _select(name: str, options: tuple[str, ...], chosen: str = "", any_: bool = False) -> str:
    opts = (['<option value="">any</option>'] if any_ else []) + [
        f'<option{" selected" if o == chosen else ""}>{h(o)}</option>' for o in options]
    return f'<select name="{name}">{"".join(opts)}</select>'


def _err(e: str | None) -> str:
    return f'<p class="error" role="alert">{h(e)}</p>' if e else ""


def _wire(cluster: Any) -> Any:
    from nerve.tools.wire import KafkaWire

    return KafkaWire(cluster.bootstrap, getattr(cluster, "client_config", {}),
                     timeout=max(cluster.timeout, 5))


# ---------------------------------------------------------------------------- users
def list_users(cluster: Any) -> dict[str, list[tuple[str, int]]]:
    from nerve.tools.users import _describe

    return _describe(cluster, None)


def upsert_user(cluster: Any, name: str, password: str, mechanisms: list[str],
                iterations: int) -> None:
    from confluent_kafka.admin import ScramCredentialInfo, UserScramCredentialUpsertion

    from nerve.tools.users import _mech

    ups = [UserScramCredentialUpsertion(name, ScramCredentialInfo(_mech(m), iterations),
                                        password.encode()) for m in mechanisms]
    for fut in cluster.admin.alter_user_scram_credentials(ups).values():
        _result(fut, cluster.timeout)


def delete_user(cluster: Any, name: str, mechanisms: list[str]) -> None:
    from confluent_kafka.admin import UserScramCredentialDeletion

    from nerve.tools.users import _mech

    if not mechanisms:
        mechanisms = [m for m, _ in list_users(cluster).get(name, [])]
    if not mechanisms:
        raise ToolError(f"user {name} has no SCRAM credentials")
    for fut in cluster.admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(name, _mech(m)) for m in mechanisms]).values():
        _result(fut, cluster.timeout)


def users_page(ctx: pages.Ctx, users: dict[str, list[tuple[str, int]]] | None,
               error: str | None, msg: str | None) -> str:
    rows = "".join(
        f'<tr><td>{h(u)}</td><td>{h(", ".join(f"{m} ({i} iterations)" for m, i in creds))}</td>'
        + ("" if ctx.read_only else
           f'<td><form method="post" action="/security/users/delete" data-confirm="Delete user {h(u)}?">'
           f'<input type="hidden" name="name" value="{h(u)}"><button class="danger">Delete</button></form></td>')
        + "</tr>" for u, creds in (users or {}).items()) or (
        '<tr><td colspan="3" class="empty">no SCRAM users</td></tr>' if users is not None else "")
    mech_boxes = "".join(f'<label><input type="checkbox" name="mechanism" value="{m}" checked> {m}</label>'
                         for m in SCRAM)
    forms = "" if ctx.read_only else f"""
<section class="action-panel"><h2>Create a user or change a password</h2>
<form method="post" action="/security/users" class="grid">
<label>User <input name="name" required></label>
<label>Password <input name="password" type="password" required autocomplete="new-password"></label>
<label>Iterations <input name="iterations" type="number" min="4096" max="16384" value="8192"></label>
<fieldset>{mech_boxes}</fieldset>
<button>Save</button></form></section>"""
    body = f"""<h1>Users</h1>
<p>SCRAM credentials (DescribeUserScramCredentials): mechanisms and iterations, never passwords.
PLAIN users listed in a broker's JAAS config are not part of it.</p>{_err(error)}
<table><thead><tr><th>user</th><th>mechanisms</th><th></th></tr></thead><tbody>{rows}</tbody></table>{forms}"""
    return pages.layout(ctx, "Users", body, "users", msg)


# ---------------------------------------------------------------------------- ACLs
# Over nerve/tools/wire.py with Kafka's enum numbers: librdkafka's DescribeAcls drops the
# top-level error (CLUSTER_AUTHORIZATION_FAILED came back as "no ACLs").
def _enum(cls: Any, value: str, default: str) -> int:
    try:
        return int(cls[(value or default).upper()])
    except KeyError:
        raise ToolError(f"unknown {cls.__name__} {value!r}") from None


def _acl_filter(f: dict[str, str], exact: bool = False) -> dict[str, Any]:
    from nerve.security.acl import AclOperation, PatternType, ResourceType
    from nerve.security.acl import Permission as AclPermissionType

    return {"resource_type_filter": _enum(ResourceType, f.get("resource_type", ""), "ANY"),
            "resource_name_filter": f.get("name") or None,
            "pattern_type_filter": _enum(PatternType, f.get("pattern", ""),
                                         "LITERAL" if exact else "ANY"),
            "principal_filter": f.get("principal") or None, "host_filter": f.get("host") or None,
            "operation": _enum(AclOperation, f.get("operation", ""), "ANY"),
            "permission_type": _enum(AclPermissionType, f.get("permission", ""), "ANY")}


def _acl_row(resource: Any, acl: Any) -> dict[str, str]:
    from nerve.security.acl import AclOperation, PatternType, ResourceType
    from nerve.security.acl import Permission as AclPermissionType

    def name(cls: Any, v: int) -> str:
        return cls(int(v)).name if int(v) in cls._value2member_map_ else str(int(v))

    return {"resource_type": name(ResourceType, resource.resource_type),
            "name": resource.resource_name,
            "pattern": name(PatternType, resource.pattern_type), "principal": acl.principal,
            "host": acl.host, "operation": name(AclOperation, acl.operation),
            "permission": name(AclPermissionType, acl.permission_type)}


def list_acls(cluster: Any, f: dict[str, str]) -> list[dict[str, str]]:
    from nerve.tools.wire import error_text

    with _wire(cluster) as c:
        r = c.call(29, 1, **_acl_filter(f))
    if r.error_code:
        raise ToolError(error_text(r.error_code, r.error_message))
    rows = [_acl_row(res, acl) for res in r.resources for acl in res.acls]
    return sorted(rows, key=lambda r: tuple(r.values()))


def create_acl(cluster: Any, f: dict[str, str]) -> None:
    from nerve.tools.wire import error_text

    flt = _acl_filter(f, exact=True)
    principal = f.get("principal", "").strip()
    if not principal.startswith("User:") or len(principal) == 5:
        raise ToolError("the principal is User:<name> (or User:* for everyone)")
    name = f.get("name", "").strip() or (
        "kafka-cluster" if f.get("resource_type", "").upper() == "CLUSTER" else "")
    if not name:
        raise ToolError("give the resource's name (or prefix)")
    if 1 in (flt["resource_type_filter"], flt["operation"], flt["permission_type"]):
        raise ToolError("an ACL names its resource type, operation and permission (not ANY)")
    with _wire(cluster) as c:
        r = c.call(30, 1, creations=[{
            "resource_type": flt["resource_type_filter"], "resource_name": name,
            "resource_pattern_type": flt["pattern_type_filter"], "principal": principal,
            "host": f.get("host") or "*", "operation": flt["operation"],
            "permission_type": flt["permission_type"]}])
    for result in r.results:
        if result.error_code:
            raise ToolError(error_text(result.error_code, result.error_message))


def delete_acl(cluster: Any, f: dict[str, str]) -> int:
    from nerve.tools.wire import error_text

    for field in ("resource_type", "name", "pattern", "principal", "host", "operation",
                  "permission"):
        if not f.get(field):
            raise ToolError(f"deleting an ACL needs its {field}")
    with _wire(cluster) as c:
        r = c.call(31, 1, filters=[_acl_filter(f, exact=True)])
    deleted = 0
    for result in r.filter_results:
        if result.error_code:
            raise ToolError(error_text(result.error_code, result.error_message))
        deleted += len(result.matching_acls)
    return deleted


def acls_page(ctx: pages.Ctx, acls: list[dict[str, str]] | None, flt: dict[str, str],
              error: str | None, msg: str | None) -> str:
    def delete_form(a: dict[str, str]) -> str:
        if ctx.read_only:
            return ""
        hidden = "".join(f'<input type="hidden" name="{k}" value="{h(v)}">' for k, v in a.items())
        return (f'<td><form method="post" action="/security/acls/delete" data-confirm="Delete this ACL?">'
                f'{hidden}<button class="danger">Delete</button></form></td>')

    rows = "".join(
        f'<tr><td>{h(a["resource_type"])}</td><td>{h(a["name"])}</td><td>{h(a["pattern"])}</td>'
        f'<td>{h(a["principal"])}</td><td>{h(a["host"])}</td><td>{h(a["operation"])}</td>'
        f'<td>{h(a["permission"])}</td>{delete_form(a)}</tr>' for a in acls or []) or (
        '<tr><td colspan="8" class="empty">no ACLs match</td></tr>' if acls is not None else "")
    filters = f"""<form method="get" action="/security/acls" class="grid filters">
<label>Resource type {_select("resource_type", RESOURCE_TYPES, flt.get("resource_type", ""), any_=True)}</label>
<label>Name <input name="name" value="{h(flt.get("name", ""))}" placeholder="any"></label>
<label>Pattern {_select("pattern", ("LITERAL", "PREFIXED", "MATCH"), flt.get("pattern", ""), any_=True)}</label>
<label>Principal <input name="principal" value="{h(flt.get("principal", ""))}" placeholder="User:alice"></label>
<label>Operation {_select("operation", OPERATIONS, flt.get("operation", ""), any_=True)}</label>
<label>Permission {_select("permission", PERMISSIONS, flt.get("permission", ""), any_=True)}</label>
<button>Filter</button></form>"""
    add = "" if ctx.read_only else f"""
<section class="action-panel"><h2>Add an ACL</h2>
<form method="post" action="/security/acls" class="grid">
<label>Resource type {_select("resource_type", RESOURCE_TYPES, "TOPIC")}</label>
<label>Name <input name="name" placeholder="orders (kafka-cluster for CLUSTER)"></label>
<label>Pattern {_select("pattern", PATTERN_TYPES, "LITERAL")}</label>
<label>Principal <input name="principal" required placeholder="User:alice"></label>
<label>Host <input name="host" value="*"></label>
<label>Operation {_select("operation", OPERATIONS, "READ")}</label>
<label>Permission {_select("permission", PERMISSIONS, "ALLOW")}</label>
<button>Add</button></form></section>"""
    body = f"""<h1>ACLs</h1>{_err(error)}{filters}
<table><thead><tr><th>resource</th><th>name</th><th>pattern</th><th>principal</th><th>host</th>
<th>operation</th><th>permission</th><th></th></tr></thead><tbody>{rows}</tbody></table>{add}"""
    return pages.layout(ctx, "ACLs", body, "acls", msg)


# ---------------------------------------------------------------------------- quotas
def list_quotas(cluster: Any) -> list[dict[str, Any]]:
    from nerve.tools.wire import error_text

    with _wire(cluster) as c:
        r = c.call(48, 1, components=[], strict=False)
    if r.error_code:
        raise ToolError(error_text(r.error_code, r.error_message))
    rows = []
    for entry in r.entries or []:
        entity = {e.entity_type: (DEFAULT if e.entity_name is None else e.entity_name)
                  for e in entry.entity}
        rows.append({"user": entity.get("user"), "client-id": entity.get("client-id"),
                     "ip": entity.get("ip"),
                     "values": {v.key: v.value for v in entry.values}})
    return sorted(rows, key=lambda r: (str(r["user"]), str(r["client-id"]), str(r["ip"])))


def _entity_name(value: str) -> str | None:
    return None if value.strip() == DEFAULT else value.strip()


def alter_quota(cluster: Any, f: dict[str, str]) -> None:
    from nerve.tools.wire import error_text

    entity = [{"entity_type": t, "entity_name": _entity_name(f[t])}
              for t in ("user", "client-id") if f.get(t, "").strip()]
    if not entity:
        raise ToolError(f"give a user and/or a client id ({DEFAULT} for the default)")
    ops = []
    for key in QUOTA_KEYS:
        value = f.get(key, "").strip()
        if value == "-":
            ops.append({"key": key, "value": 0.0, "remove": True})
        elif value:
            try:
                ops.append({"key": key, "value": float(value), "remove": False})
            except ValueError:
                raise ToolError(f"{key} must be a number (or - to remove it)") from None
    if not ops:
        raise ToolError("set at least one quota (a number, or - to remove it)")
    with _wire(cluster) as c:
        r = c.call(49, 1, validate_only=False, entries=[{"entity": entity, "ops": ops}])
    for e in r.entries:
        if e.error_code:
            raise ToolError(error_text(e.error_code, e.error_message))


def quotas_page(ctx: pages.Ctx, quotas: list[dict[str, Any]] | None, error: str | None,
                msg: str | None) -> str:
    rows = "".join(
        f'<tr><td>{h(q["user"])}</td><td>{h(q["client-id"])}</td>'
        + "".join(f'<td class="num">{h(_num(q["values"].get(k)))}</td>' for k in QUOTA_KEYS)
        + "</tr>" for q in quotas or []) or (
        '<tr><td colspan="5" class="empty">no quotas</td></tr>' if quotas is not None else "")
    inputs = "".join(f'<label>{k} <input name="{k}" placeholder="unchanged (- removes)"></label>'
                     for k in QUOTA_KEYS)
    form = "" if ctx.read_only else f"""
<section class="action-panel"><h2>Set quotas</h2>
<form method="post" action="/security/quotas" class="grid">
<label>User <input name="user" placeholder="alice, or {h(DEFAULT)}"></label>
<label>Client id <input name="client-id" placeholder="app1, or {h(DEFAULT)}"></label>
{inputs}<button>Save</button></form></section>"""
    body = f"""<h1>Quotas</h1>
<p>Client quotas (DescribeClientQuotas): bytes per second for producers and consumers, and the
share of request-handling time, per user and/or client id.</p>{_err(error)}
<table><thead><tr><th>user</th><th>client id</th>{"".join(f"<th>{k}</th>" for k in QUOTA_KEYS)}
</tr></thead><tbody>{rows}</tbody></table>{form}"""
    return pages.layout(ctx, "Quotas", body, "quotas", msg)


def _num(v: float | None) -> str | None:
    if v is None:
        return None
    return str(int(v)) if float(v).is_integer() else str(v)


# ---------------------------------------------------------------------------- routes
async def _form(request: Request) -> dict[str, list[str]]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


def _back(path: str, msg: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'msg': msg})}", status_code=303)


def routes(ctx: pages.Ctx, cluster: Any, guard_write: Callable[[Request], Response | None],
           error_page: Callable[[ToolError], Response]) -> list[Route]:
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def load(fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
        try:
            return await run(fn, cluster, *args), None
        except ToolError as e:
            return None, str(e)

    async def users(request: Request) -> Response:
        found, error = await load(list_users)
        return HTMLResponse(users_page(ctx, found, error, request.query_params.get("msg")))

    async def users_save(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = await _form(request)
        name, password = f.get("name", [""])[-1].strip(), f.get("password", [""])[-1]
        mechanisms = [m for m in f.get("mechanism", []) if m in SCRAM] or list(SCRAM)
        try:
            if not name or not password:
                raise ToolError("a user needs a name and a password")
            try:
                iterations = int(f.get("iterations", ["8192"])[-1] or 8192)
            except ValueError:
                raise ToolError("iterations must be a number") from None
            await run(upsert_user, cluster, name, password, mechanisms, iterations)
        except ToolError as e:
            return error_page(e)
        return _back("/security/users", f"saved user {name} ({', '.join(mechanisms)})")

    async def users_delete(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = await _form(request)
        name = f.get("name", [""])[-1].strip()
        try:
            await run(delete_user, cluster, name, [m for m in f.get("mechanism", []) if m in SCRAM])
        except ToolError as e:
            return error_page(e)
        return _back("/security/users", f"deleted user {name}")

    async def acls(request: Request) -> Response:
        flt = {k: v for k, v in request.query_params.items() if k != "msg"}
        found, error = await load(list_acls, flt)
        return HTMLResponse(acls_page(ctx, found, flt, error, request.query_params.get("msg")))

    async def acls_add(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = {k: v[-1].strip() for k, v in (await _form(request)).items()}
        try:
            await run(create_acl, cluster, f)
        except ToolError as e:
            return error_page(e)
        return _back("/security/acls", f"added: {f.get('principal')} {f.get('permission')} "
                                       f"{f.get('operation')} on {f.get('resource_type')} "
                                       f"{f.get('name') or 'kafka-cluster'}")

    async def acls_delete(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = {k: v[-1].strip() for k, v in (await _form(request)).items() if k != "csrf"}
        try:
            n = await run(delete_acl, cluster, f)
        except ToolError as e:
            return error_page(e)
        return _back("/security/acls", f"deleted {n} ACL(s)")

    async def quotas(request: Request) -> Response:
        found, error = await load(list_quotas)
        return HTMLResponse(quotas_page(ctx, found, error, request.query_params.get("msg")))

    async def quotas_save(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = {k: v[-1] for k, v in (await _form(request)).items()}
        try:
            await run(alter_quota, cluster, f)
        except ToolError as e:
            return error_page(e)
        return _back("/security/quotas", "quotas saved")

    return [
        Route("/security/users", users),
        Route("/security/users", users_save, methods=["POST"]),
        Route("/security/users/delete", users_delete, methods=["POST"]),
        Route("/security/acls", acls),
        Route("/security/acls", acls_add, methods=["POST"]),
        Route("/security/acls/delete", acls_delete, methods=["POST"]),
        Route("/security/quotas", quotas),
        Route("/security/quotas", quotas_save, methods=["POST"]),
    ]
