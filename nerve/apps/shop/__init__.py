"""The web shop: a simulator of customers and three services reacting to what they do.

Topics (keyed by customer id, so one customer's views, orders and bug reports are in order and
co-partitioned): product-viewed, product-sold, bug-reported. Outputs: promotions (marketing,
keyed by customer), stock-low (inventory, keyed by product id), support-tickets (support).
"""

TOPICS: dict[str, int] = {
    "product-viewed": 6,
    "product-sold": 6,
    "bug-reported": 6,
    "promotions": 3,
    "stock-low": 3,
    "support-tickets": 3,
    # Every service's latency figures, once a second (the console's story page reads them).
    "shop-metrics": 1,
}
METRICS_TOPIC = "shop-metrics"
SERVICES = ("inventory", "marketing", "support")
PROMO_WINDOW_MS = 3000  # a view not followed by a purchase within this long earns a promo
INITIAL_STOCK = 40
LOW_STOCK = 30
