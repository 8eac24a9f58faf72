"""Fetch sessions (KIP-227) on the wire, nerve beside Apache Kafka: the story of
tests/compat/fetch_session_story.py (session ids, incremental answers, forgotten partitions,
INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_ID_NOT_FOUND) has Kafka's answers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import Broker
from tests.compat.fetch_session_story import EXPECTED, session_story

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def test_fetch_session_story(broker: Broker, unique: Any) -> None:
    assert session_story(broker.bootstrap, unique("fs")) == EXPECTED
