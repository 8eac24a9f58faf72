"""Shop simulator: customers view products, some buy them, a few report bugs.

    python -m nerve.apps.shop.simulator --bootstrap-server HOST:PORT --state-dir D \
        [--rate 50] [--duration 20]

Every event carries an `id` and a `ts` (ms). Events are keyed by customer id. A view is followed
by a purchase of that product (within half the promo window) with probability --buy-ratio;
otherwise the customer never buys it after that view (so marketing's promo is the right call).
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from nerve.apps.common import (
    Stopper,
    base_args,
    encode,
    log,
    now_ms,
    producer_config,
    write_json_atomic,
)
from nerve.apps.shop import PROMO_WINDOW_MS

PRODUCTS = [f"P-{i:03d}" for i in range(1, 21)]  # the smallest shop (up to 50 events/s)
CUSTOMERS = [f"C-{i:04d}" for i in range(1, 201)]


def catalogue(rate: float) -> tuple[list[str], list[str]]:
    """(customers, products) for `rate` events/s: 200 customers and 20 products up to 50
    events/s, then 4 customers and 0.4 products per event/s (at 2,000 events/s: 8,000
    customers, each active about once every 4 s, over 800 products)."""
    n_cust = max(len(CUSTOMERS), int(4 * rate))
    n_prod = max(len(PRODUCTS), int(0.4 * rate))
    return ([f"C-{i:05d}" if n_cust > 9999 else f"C-{i:04d}" for i in range(1, n_cust + 1)],
            [f"P-{i:03d}" for i in range(1, n_prod + 1)])


def main(argv: list[str] | None = None) -> None:
    ap = base_args("shop simulator")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds; 0 = until stopped")
    ap.add_argument("--buy-ratio", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    run(args.bootstrap_server, args.state_dir, args.rate, args.duration, args.buy_ratio,
        args.seed)


def run(bootstrap: str, state_dir: Path, rate: float, duration: float, buy_ratio: float,
        seed: int | None) -> None:
    rng = random.Random(seed)
    stopper = Stopper()
    state_dir.mkdir(parents=True, exist_ok=True)
    producer = Producer(producer_config(bootstrap, **{"client.id": "shop-simulator",
                                                     "linger.ms": 5}))
    customers, products = catalogue(rate)
    run_id = uuid.uuid4().hex[:6]
    counts = {"product-viewed": 0, "product-sold": 0, "bug-reported": 0}
    failed: list[str] = []
    seq = 0
    # (due monotonic time, tiebreak, customer, product): purchases decided at view time
    purchases: list[tuple[float, int, str, str]] = []

    def emit(topic: str, key: str, event: dict[str, object]) -> None:
        def cb(err: object, _m: object) -> None:
            if err is not None:
                failed.append(str(err))
        producer.produce(topic, key=key, value=encode(event), on_delivery=cb)
        counts[topic] += 1

    def next_id(prefix: str) -> str:
        nonlocal seq
        seq += 1
        return f"{prefix}-{run_id}-{seq}"

    start = time.monotonic()
    last_stats = 0.0
    interval = 1.0 / rate
    next_at = start
    log("shop-simulator", f"producing ~{rate:g} events/s to {bootstrap}: {len(customers)} "
                          f"customers, {len(products)} products")
    while not stopper.stopping and (duration <= 0 or time.monotonic() - start < duration):
        now = time.monotonic()
        while purchases and purchases[0][0] <= now:
            _, _, customer, product = heapq.heappop(purchases)
            items = [{"product": product, "qty": rng.randint(1, 3)}]
            if rng.random() < 0.3:  # a basket with one more product, not viewed
                other = rng.choice(products)
                if other != product:
                    items.append({"product": other, "qty": 1})
            emit("product-sold", customer,
                 {"id": next_id("order"), "ts": now_ms(), "customer": customer, "items": items})
        if now >= next_at:
            next_at += interval
            customer = rng.choice(customers)
            if rng.random() < 0.03:
                emit("bug-reported", customer,
                     {"id": next_id("bug"), "ts": now_ms(), "customer": customer,
                      "page": rng.choice(["/cart", "/checkout", "/search", "/product"]),
                      "message": "something went wrong"})
            else:
                product = rng.choice(products)
                emit("product-viewed", customer,
                     {"id": next_id("view"), "ts": now_ms(), "customer": customer,
                      "product": product})
                if rng.random() < buy_ratio:
                    due = now + rng.uniform(0.05, PROMO_WINDOW_MS / 2000)
                    heapq.heappush(purchases, (due, seq, customer, product))
        producer.poll(0)
        if now - last_stats > 0.5:
            write_json_atomic(state_dir / "stats.json",
                              {"service": "simulator", "produced": counts, "done": False})
            last_stats = now
        time.sleep(max(0.0, min(next_at, purchases[0][0] if purchases else next_at)
                       - time.monotonic()))
    # Purchases still pending are dropped: those customers did not buy (the promo is right).
    remaining = producer.flush(120)
    write_json_atomic(state_dir / "stats.json",
                      {"service": "simulator", "produced": counts, "done": True,
                       "undelivered": remaining, "failed": len(failed)})
    log("shop-simulator", f"done: {counts}, undelivered {remaining}, failed {len(failed)}")


if __name__ == "__main__":
    main()
