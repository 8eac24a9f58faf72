"""Keeping CPython's garbage collector out of the answer times.

A full (generation 2) collection walks every object the collector tracks, holding the GIL:
every request in flight waits, and an fsync thread whose fsync has returned cannot hand its
result back. Measured here (loaded 2-core machine, tests aside): ~35 ms for a fresh broker
(~40k objects: modules, kio's schema classes), 65 ms at 1,000 partitions, 170 ms at 5,000.
With the durable produce path at a few milliseconds, such a pause was the p99 spike of the
paced benchmark (a 35 ms "gc generation 2" next to 45-60 ms answers in the trace log).

Objects that live as long as the broker are moved out of the collector's sight with
`gc.freeze()` once they exist: after start-up, and after topics or partitions are created
(their logs, segments and indexes). Later collections then walk only what is newer. A cycle
of garbage frozen this way (something closed after the freeze) is never collected, which is
why freezing happens at those moments only, after a full collection.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("nerve.heap")

# Creating fewer partitions than this does not freeze (each freeze is a full collection).
SETTLE_MIN_PARTITIONS = 50


def settle(reason: str) -> None:
    """Collect what is garbage now, then freeze every survivor (see the module doc)."""
    t = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug("heap settled (%s) in %.1f ms: %d objects frozen", reason,
              (time.perf_counter() - t) * 1e3, gc.get_freeze_count())
