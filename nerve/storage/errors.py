"""Storage errors. Handlers map them to Kafka error codes; storage never knows those codes."""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base of every error raised by nerve.storage."""


class DataDirLockedError(StorageError):
    """Another process holds the data dir's lock (a second broker on the same directory)."""


class OffsetOutOfRangeError(StorageError):
    """Kafka's OFFSET_OUT_OF_RANGE (1)."""


class TopicExistsError(StorageError):
    """Kafka's TOPIC_ALREADY_EXISTS (36)."""


class UnknownTopicError(StorageError):
    """Kafka's UNKNOWN_TOPIC_OR_PARTITION (3)."""


class InvalidTopicError(StorageError):
    """Kafka's INVALID_TOPIC_EXCEPTION (17): bad name, or a name colliding on '.' vs '_'."""


class InvalidPartitionsError(StorageError):
    """Kafka's INVALID_PARTITIONS (37)."""


class CorruptLogError(StorageError):
    """A read reached a damaged place of a segment: Kafka's CORRUPT_MESSAGE (2)."""

    def __init__(self, partition: str, file: str, damage: Any) -> None:
        super().__init__(f"{partition}: damaged data in {file} at {damage.describe()}")
        self.damage = damage  # a nerve.storage.scan.Damage


class KafkaStorageError(StorageError):
    """A disk operation failed (no space, no permission, EIO, no file descriptor) and was
    rolled back: Kafka's KAFKA_STORAGE_ERROR (56). Retriable: the same append may succeed
    once the disk takes writes again."""


class PartitionLimitError(StorageError):
    """More partitions than max.partitions allows: Kafka's POLICY_VIOLATION (44), the code
    Kafka gives its own partition-count limit (too many partitions in one CreateTopics)."""


class LogCreationError(KafkaStorageError):
    """Creating a partition's files failed (disk full, permissions, out of descriptors); what
    the request had created was removed again: Kafka's KAFKA_STORAGE_ERROR (56)."""


class RecordTooLargeError(StorageError):
    """A batch above the topic's max.message.bytes: Kafka's MESSAGE_TOO_LARGE (10)."""


class DuplicateSequenceError(StorageError):
    """A retried idempotent batch that is already in the log.

    Kafka answers such a retry with success and the ORIGINAL offsets, which these attributes
    carry (log_append_time is -1 for CreateTime topics).
    """

    def __init__(self, base_offset: int, log_append_time: int, message: str = "",
                 last_offset: int = -1) -> None:
        super().__init__(message or f"duplicate batch, originally at offset {base_offset}")
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.log_append_time = log_append_time


class OutOfOrderSequenceError(StorageError):
    """Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER (45)."""


class InvalidProducerEpochError(StorageError):
    """Epoch older than the last seen for this producer id: Kafka's INVALID_PRODUCER_EPOCH (47)."""


class UnknownProducerIdError(StorageError):
    """Kafka's UNKNOWN_PRODUCER_ID (59). Unused: Kafka 4 accepts unknown producers."""
