"""The console is no CSRF or DNS-rebinding target (issue 10, part 7), against a real `nerve serve`.

Forged posts (Origin null, no Origin, another Origin, a rebound Host, no CSRF token) change
nothing; the console's own forms still work (token round trip); a writable console on a
non-loopback address refuses to start without a password; the password is HTTP basic auth.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO_ROOT, NerveProcess, free_port
from tests.integration.test_console import make_topic, produce
from tests.integration.test_tools_cli import cli, ok

TOKEN_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def topics_of(bootstrap: str) -> set[str]:
    return set(ok(cli(bootstrap, "topics", "list")).split())


@pytest.fixture
def served(nerve_factory: Callable[..., NerveProcess]) -> tuple[NerveProcess, str]:
    port = free_port()
    return nerve_factory("--console-port", str(port)), f"http://127.0.0.1:{port}"


def test_forged_posts_are_refused_and_change_nothing(served: tuple[NerveProcess, str],
                                                     unique_topic: Callable[..., str]) -> None:
    broker, url = served
    topic = unique_topic()
    make_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, [b"keep me"])
    delete = f"{url}/topics/{topic}/delete"
    with httpx.Client(timeout=20) as http:
        # A victim's session: the attacker cannot read its token, only make the browser send
        # the cookie along.
        token = TOKEN_RE.findall(http.get(f"{url}/topics/{topic}").text)[0]
        forged = {
            "Origin null (sandboxed iframe)": ({"origin": "null"}, {"confirm": topic}),
            "no Origin, no Referer": ({}, {"confirm": topic}),
            "cross Origin": ({"origin": "http://evil.example"}, {"confirm": topic}),
            "cross Referer": ({"referer": "http://evil.example/x"}, {"confirm": topic}),
            "same Origin, no token": ({"origin": url}, {"confirm": topic}),
            "same Origin, wrong token": ({"origin": url}, {"confirm": topic, "csrf": "0" * 64}),
            "rebound Host": ({"host": f"evil.example:{url.rsplit(':', 1)[1]}",
                              "origin": f"http://evil.example:{url.rsplit(':', 1)[1]}"},
                             {"confirm": topic, "csrf": token}),
        }
        for why, (headers, data) in forged.items():
            r = http.post(delete, headers=headers, data=data)
            assert r.status_code in (403, 421), (why, r.status_code, r.text)
        # A token belongs to its session: another client's cookie does not go with it.
        with httpx.Client(timeout=20) as other:
            other.get(url + "/")
            r = other.post(delete, headers={"origin": url}, data={"confirm": topic,
                                                                  "csrf": token})
            assert r.status_code == 403
        # Offsets too: a forged reset of a group is refused.
        r = http.post(f"{url}/groups/g/reset", headers={"origin": "null"},
                      data={"to": "earliest", "execute": "1"})
        assert r.status_code == 403
        # A rebound Host cannot read pages either (the token would be in them).
        r = http.get(f"{url}/topics/{topic}", headers={"host": "evil.example"})
        assert r.status_code == 421 and "csrf" not in r.text
    assert topic in topics_of(broker.bootstrap)
    assert "Traceback" not in broker.log_text()


def test_own_forms_work_with_the_token_round_trip(served: tuple[NerveProcess, str],
                                                  unique_topic: Callable[..., str]) -> None:
    broker, url = served
    topic = unique_topic()
    with httpx.Client(base_url=url, timeout=20) as http:
        page = http.get("/")
        assert "nerve_console_session" in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"]
        token = TOKEN_RE.findall(page.text)[0]
        r = http.post("/topics", headers={"origin": url},
                      data={"name": topic, "partitions": "2", "csrf": token})
        assert r.status_code == 303, r.text
        page = http.get(f"/topics/{topic}")
        forms = page.text.count('method="post"')
        assert forms == 3 and len(TOKEN_RE.findall(page.text)) == forms  # each form has it
        # Referer (no Origin, as some browsers send for same-origin posts) is accepted too.
        r = http.post(f"/topics/{topic}/produce", headers={"referer": f"{url}/topics/{topic}"},
                      data={"value": "v", "csrf": token})
        assert r.status_code == 303, r.text
        r = http.post(f"/topics/{topic}/delete", headers={"origin": url},
                      data={"confirm": topic, "csrf": token})
        assert r.status_code == 303, r.text
        # localhost is one of the names a loopback console serves.
        port = url.rsplit(":", 1)[1]
        assert http.get(f"http://localhost:{port}/static/console.css").status_code == 200
    assert topic not in topics_of(broker.bootstrap)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_writable_console_on_non_loopback_host_needs_a_password(
        host: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nerve", "serve", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data"), "--console-host", host],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs --console-password" in lines[0], proc.stderr
    assert "serving Kafka protocol" not in proc.stdout and not (tmp_path / "data").exists()


def test_password_is_http_basic_auth(nerve_factory: Callable[..., NerveProcess],
                                     unique_topic: Callable[..., str]) -> None:
    port = free_port()
    broker = nerve_factory("--console-port", str(port), "--console-password", "s3cret")
    url = f"http://127.0.0.1:{port}"
    topic = unique_topic()
    for auth in (None, ("admin", "wrong"), ("admin", "s3cret0")):
        r = httpx.get(url + "/", auth=auth, timeout=20)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(url + "/metrics", auth=auth, timeout=20).status_code == 401
    with httpx.Client(base_url=url, timeout=20, auth=("any-user", "s3cret")) as http:
        token = TOKEN_RE.findall(http.get("/").text)[0]
        assert http.get("/static/console.js").status_code == 200
        r = http.post("/topics", headers={"origin": url}, data={"name": topic, "csrf": token})
        assert r.status_code == 303, r.text
    assert topic in topics_of(broker.bootstrap)
