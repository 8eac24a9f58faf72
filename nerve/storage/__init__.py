"""Storage: partition logs of Kafka RecordBatch v2 bytes, in Kafka's on-disk layout.

Knows bytes, offsets and timestamps, never Kafka request/response messages.
"""

from nerve.storage.errors import (
    CorruptLogError,
    DataDirLockedError,
    DuplicateSequenceError,
    InvalidPartitionsError,
    InvalidProducerEpochError,
    InvalidTopicError,
    KafkaStorageError,
    LogCreationError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionLimitError,
    RecordTooLargeError,
    StorageError,
    TopicExistsError,
    UnknownProducerIdError,
    UnknownTopicError,
)
from nerve.storage.log import AppendInfo, FetchSlice, FileRegion, PartitionLog
from nerve.storage.log_manager import LogManager, TopicInfo

__all__ = [
    "AppendInfo",
    "CorruptLogError",
    "DataDirLockedError",
    "DuplicateSequenceError",
    "FetchSlice",
    "FileRegion",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidTopicError",
    "KafkaStorageError",
    "LogCreationError",
    "LogManager",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionLimitError",
    "PartitionLog",
    "RecordTooLargeError",
    "StorageError",
    "TopicExistsError",
    "TopicInfo",
    "UnknownProducerIdError",
    "UnknownTopicError",
]
