"""The console in a real browser: headless Chromium renders each page (JS included) while
traffic flows, and the screenshots are saved to docs/screenshots/ for the README.

Marked slow. Needs /usr/bin/chromium; with NERVE_BROWSER_TESTS=1 a missing one is installed
from Debian (apt-get), otherwise the test is skipped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import REPO_ROOT, NerveProcess, free_port

SHOTS = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
MAX_PNG_BYTES = 200 * 1024


def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("NERVE_BROWSER_TESTS") != "1":
            pytest.skip("no /usr/bin/chromium (set NERVE_BROWSER_TESTS=1 to apt-get it)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}", pytrace=False)
    return CHROMIUM


def screenshot(url: str, out: Path, profile: Path, wait_ms: int = 3000) -> None:
    """Headless Chromium: load `url`, let its scripts run `wait_ms`, save a 1280x900 PNG."""
    r = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--window-size=1280,900", f"--timeout={wait_ms}", f"--screenshot={out}", url],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and out.exists(), f"chromium failed:\n{r.stderr[-2000:]}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Traffic:
    """A small shop: orders and payments produced continuously, two consumer groups."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for f in admin.create_topics([NewTopic("orders", 3, 1), NewTopic("payments", 2, 1),
                                      NewTopic("audit-log", 1, 1)]).values():
            f.result(15)
        self.threads = [threading.Thread(target=fn, daemon=True)
                        for fn in (self._produce, self._billing)]
        for t in self.threads:
            t.start()

    def _produce(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "client.id": "checkout-service",
                      "linger.ms": 5})
        rnd = random.Random(7)
        i = 0
        while not self.stop.is_set():
            i += 1
            order = {"order_id": f"o-{1000 + i}", "customer": f"c-{rnd.randint(1, 40)}",
                     "items": [{"sku": f"SKU-{rnd.randint(1, 9)}", "qty": rnd.randint(1, 3)}],
                     "total_cents": rnd.randint(500, 20000)}
            p.produce("orders", key=order["customer"].encode(), value=json.dumps(order).encode(),
                      headers=[("source", b"checkout"), ("schema", b"order.v1")])
            if i % 3 == 0:
                p.produce("payments", key=order["order_id"].encode(),
                          value=json.dumps({"order_id": order["order_id"], "status": "captured"})
                          .encode())
            p.poll(0)
            time.sleep(rnd.uniform(0.01, 0.06))
        p.flush(10)

    def _billing(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "billing",
                      "client.id": "billing-service", "auto.offset.reset": "earliest"})
        c.subscribe(["orders", "payments"])
        while not self.stop.is_set():
            c.poll(0.2)
        c.close()

    def lagging_group(self) -> None:
        """'shipping' read a little of orders and stopped: it shows lag."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "shipping",
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition("orders", p, 5 * (p + 1)) for p in range(3)],
                 asynchronous=False)
        c.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


@pytest.fixture
def shop(nerve_factory: Callable[..., NerveProcess]) -> Iterator[tuple[str, Traffic]]:
    port = free_port()
    broker = nerve_factory("--console-port", str(port), "--set",
                           "group.initial.rebalance.delay.ms=0")
    traffic = Traffic(broker.bootstrap)
    traffic.start()
    yield f"http://127.0.0.1:{port}", traffic
    traffic.close()


@pytest.mark.slow
def test_screenshots_of_overview_topic_group_and_map(shop: tuple[str, Traffic],
                                                     tmp_path: Path) -> None:
    url, traffic = shop
    chromium()
    time.sleep(2)
    traffic.lagging_group()
    # Watch the overview for a while, so the live throughput chart has history to draw.
    with httpx.Client(base_url=url, timeout=30) as http, \
            http.stream("GET", "/events/overview") as resp:
        deadline = time.monotonic() + 15
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                break
            del line
    SHOTS.mkdir(parents=True, exist_ok=True)
    pages = {"overview": "/", "topic": "/topics/orders", "group": "/groups/shipping",
             "map": "/map"}
    for name, path in pages.items():
        out = tmp_path / f"{name}.png"
        screenshot(url + path, out, tmp_path / f"profile-{name}", 4000 if name == "overview"
                   else 2500)
        size = out.stat().st_size
        assert 5_000 < size <= MAX_PNG_BYTES, f"{name}.png is {size} bytes"
        shutil.copy(out, SHOTS / f"{name}.png")
    # The pages the browser saw really held the data.
    with httpx.Client(base_url=url, timeout=30) as http:
        assert "checkout" in http.get("/topics/orders").text
        assert 'class="num lag"' in http.get("/groups/shipping").text
