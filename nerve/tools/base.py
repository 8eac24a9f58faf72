"""What the commands need before any Kafka client is imported (keeps `nerve serve` start fast)."""

from __future__ import annotations

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class ToolError(Exception):
    """An error to show as one line, e.g. "unknown topic 'x'"."""


class Unreachable(ToolError):
    pass


class UnknownTopic(ToolError):
    pass


class UnknownGroup(ToolError):
    pass


def text(b: bytes | None) -> str | None:
    """Bytes as text for people and JSON: UTF-8, undecodable bytes as \\x escapes."""
    return None if b is None else b.decode("utf-8", errors="backslashreplace")
