"""Open segment and index files, bounded: an LRU cache of file handles shared by the process.

Kafka keeps every segment's log open and maps its indexes lazily; with thousands of partitions
that needs a file limit of hundreds of thousands. Here a file is opened on first use (a read of
an old segment, an append to the active one) and the least recently used handles are closed
once more than `capacity` are open, so the number of partitions is not bounded by the file
limit. The cache is process-wide because RLIMIT_NOFILE is.

Pinning: a `FileHandle` closes its descriptor when the last reference to it goes, not when the
cache drops it. Whoever uses a descriptor holds the handle object, never only its number: a
connection sending a fetch region (pread, or sendfile across awaits), a header walk in
progress, a flush fsyncing in a worker thread. Eviction then only stops new users from finding
it. What waits to be used (a fetch answer's regions, a flush token) holds the `CachedFile`,
not a handle, so a fetch of thousands of partitions pins one descriptor at a time, not
thousands. Every cache operation runs on the event loop (or before it starts); `peek` and a
handle's last release may happen in any thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("nerve.storage")

# Never fewer cached handles than this, however low the limit (a partition being written
# wants three: its active log and the two index files).
MIN_CAPACITY = 16
# On EMFILE/ENFILE the cache closes this share of its idle handles and retries once.
_SHED_SHARE = 4
_WARN_INTERVAL_S = 10.0


def open_file_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE; RLIM_INFINITY hard limits are reported as the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = soft if soft != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY:
        soft = hard
    return soft, hard


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Kafka's start scripts expect of the
    operator). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = open_file_limit()[0]
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:  # e.g. above fs.nr_open
            log.warning("could not raise the open file limit from %d to %d: %s", soft,
                        target, e)
    return before, open_file_limit()[0]


def default_capacity(soft_limit: int | None = None) -> int:
    """Half the file limit for log files; the other half stays for sockets and the rest."""
    limit = open_file_limit()[0] if soft_limit is None else soft_limit
    return max(limit // 2, MIN_CAPACITY)


class FileHandle:
    """One open descriptor; closed when the last reference to this object goes."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"FileHandle({self.fd})"


class CachedFile:
    """A file the cache may keep open: its path (renames update it) and open flags."""

    __slots__ = ("_handle", "cache", "flags", "path", "retired")

    def __init__(self, cache: HandleCache, path: Path, flags: int = os.O_RDONLY) -> None:
        self.cache = cache
        self.path = path
        self.flags = flags
        self.retired = False  # deleted: opened on demand for late readers, never cached
        self._handle: FileHandle | None = None  # set iff this file is in the cache

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def handle(self) -> FileHandle:
        """The open handle, opening the file if the cache closed it. Keep the returned object
        (not just its fd) for as long as the descriptor is used."""
        h = self._handle
        if h is None:
            if self.retired:
                return FileHandle(os.open(self.path, os.O_RDONLY))
            return self.cache.open(self)
        self.cache.touch(self)
        return h

    def peek(self) -> FileHandle | None:
        """The cached handle if there is one, without touching the cache (any thread)."""
        return self._handle

    def retire(self) -> None:
        self.retired = True
        self.release()

    def create(self, flags: int) -> FileHandle:
        """Open with one-time extra flags (O_CREAT | O_TRUNC for a new file)."""
        self.release()
        return self.cache.open(self, flags)

    def reopen(self, flags: int) -> None:
        """Later opens use `flags`; an open handle with other flags is dropped."""
        if flags != self.flags:
            self.flags = flags
            self.release()

    def release(self) -> None:
        """Drop the cache's reference; the fd closes once no reader holds the handle."""
        if self._handle is not None:
            self.cache.discard(self)


class HandleCache:
    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = max(capacity if capacity is not None else default_capacity(),
                            MIN_CAPACITY)
        self._lru: OrderedDict[CachedFile, None] = OrderedDict()
        self.opens = 0
        self.evictions = 0
        self._warned_at = 0.0

    def __len__(self) -> int:
        return len(self._lru)

    def resize(self, capacity: int) -> None:
        self.capacity = max(capacity, MIN_CAPACITY)
        while len(self._lru) > self.capacity:
            self._evict_oldest()

    def touch(self, f: CachedFile) -> None:
        self._lru.move_to_end(f)

    def open(self, f: CachedFile, extra_flags: int = 0) -> FileHandle:
        while len(self._lru) >= self.capacity:
            self._evict_oldest()
        try:
            fd = os.open(f.path, f.flags | extra_flags, 0o644)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE) or not self._lru:
                raise
            # Sockets (or pinned handles) took the rest of the limit: give some back, retry.
            shed = max(len(self._lru) // _SHED_SHARE, 1)
            now = time.monotonic()
            if now - self._warned_at >= _WARN_INTERVAL_S:
                self._warned_at = now
                log.warning("out of file descriptors (%s): closing %d of %d cached log "
                            "files", e.strerror, shed, len(self._lru))
            for _ in range(shed):
                self._evict_oldest()
            fd = os.open(f.path, f.flags | extra_flags, 0o644)
        self.opens += 1
        h = FileHandle(fd)
        f._handle = h
        self._lru[f] = None
        return h

    def discard(self, f: CachedFile) -> None:
        if f in self._lru:
            del self._lru[f]
            f._handle = None

    def _evict_oldest(self) -> None:
        f, _ = self._lru.popitem(last=False)
        f._handle = None
        self.evictions += 1

    def clear(self) -> None:
        while self._lru:
            self._evict_oldest()


_shared: HandleCache | None = None


def shared_cache() -> HandleCache:
    """The process's cache (created on first use, sized from the file limit at that time)."""
    global _shared
    if _shared is None:
        _shared = HandleCache()
    return _shared
