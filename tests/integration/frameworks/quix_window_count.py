"""Quix Streams windowed count for nerve's framework tests (tests/integration/test_quix_eos.py),
run with the interpreter of the test's own Quix Streams venv:

    python quix_window_count.py BOOTSTRAP GROUP STATE_DIR INPUT OUTPUT

Counts the records per key in 10 s tumbling windows (by record timestamp) and publishes each
window once it closes, with processing_guarantee="exactly-once".
"""

import logging
import sys
from datetime import timedelta

from quixstreams import Application


def main() -> None:
    bootstrap, group, state_dir, src, dst = sys.argv[1:6]
    app = Application(
        broker_address=bootstrap, consumer_group=group, state_dir=state_dir,
        auto_offset_reset="earliest", processing_guarantee="exactly-once",
        commit_interval=0.5, loglevel="INFO",
    )
    sdf = app.dataframe(app.topic(src, key_deserializer="str", value_deserializer="json"))
    sdf = sdf.tumbling_window(timedelta(seconds=10)).count().final()
    sdf.to_topic(app.topic(dst, key_serializer="str", value_serializer="json"))
    logging.getLogger("nerve.quix").warning("QUIX STARTING")
    app.run()


if __name__ == "__main__":
    main()
