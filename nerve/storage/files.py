"""Kafka's on-disk names, and the small durable-write helpers storage shares."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SNAPSHOT_SUFFIX = ".snapshot"
DELETED_SUFFIX = ".deleted"
TMP_SUFFIX = ".tmp"
DELETE_DIR_SUFFIX = "-delete"

CATALOG_FILE = "topics.json"
CLEAN_SHUTDOWN_FILE = ".nerve_clean_shutdown"
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
# Per partition (Kafka keeps one per data dir; one per partition needs no cross-log write).
LOG_START_OFFSET_FILE = "log-start-offset-checkpoint"


def offset_prefix(offset: int) -> str:
    return f"{offset:020d}"


def log_path(directory: Path, base_offset: int) -> Path:
    return directory / (offset_prefix(base_offset) + LOG_SUFFIX)


def index_path(directory: Path, base_offset: int) -> Path:
    return directory / (offset_prefix(base_offset) + INDEX_SUFFIX)


def time_index_path(directory: Path, base_offset: int) -> Path:
    return directory / (offset_prefix(base_offset) + TIME_INDEX_SUFFIX)


def snapshot_path(directory: Path, offset: int) -> Path:
    return directory / (offset_prefix(offset) + SNAPSHOT_SUFFIX)


def parse_offset(name: str) -> int | None:
    """Base offset from a file name like 00000000000000000042.log, else None."""
    stem = name.split(".", 1)[0]
    if len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file by name; a file that has gone meanwhile needs no sync."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file by name (it must exist). Out of descriptors, sync(2) makes it durable all
    the same: a missing descriptor must not look like a failed fsync (lost data)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        os.sync()
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a torn one.

    durable=False skips the fsyncs (the caller syncs later, off the event loop): the rename
    still protects against a process crash.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # no half-written leftover (a full disk)
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_all(fd: int, position: int, size: int) -> bytes:
    """pread until `size` bytes or end of file."""
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, position)
        if not chunk:
            break
        chunks.append(chunk)
        position += len(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pread_into(fd: int, position: int, view: memoryview) -> int:
    """preadv until `view` is full or the file ends; returns the bytes read."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], position + done)
        if n == 0:
            break
        done += n
    return done


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
