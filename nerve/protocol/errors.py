"""Kafka error codes: kio's generated `ErrorCode` enum (Kafka's numbers and names)."""

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode"]
