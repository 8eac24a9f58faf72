"""pytest plugin (entry point `nerve`): a real broker for anyone's test suite.

    def test_orders(nerve_broker):
        producer = Producer({"bootstrap.servers": nerve_broker.bootstrap_servers})

The broker runs in-process on its own event loop thread, on a free port, with a temporary data
directory; it is shared by the tests of a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nerve.broker import Broker


@pytest.fixture(scope="session")
def nerve_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # Imported here: this plugin loads in every pytest run of anyone who installed nerve.
    from nerve.broker import Broker

    data_dir = tmp_path_factory.mktemp("nerve-data")
    with Broker(data_dir=data_dir, port=0, config={"group.initial.rebalance.delay.ms": "0"}) as b:
        yield b
