"""One owner per data dir: an exclusive flock on `<data dir>/.lock` (Kafka's `.lock`).

Taken before anything in the data dir is read and held for the broker's life; the kernel
drops it when the process exits, however it exits (kill -9 included), so a stale lock file
never blocks a restart. The holder writes its pid into the file so that a second broker can
say who owns the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from nerve.storage.errors import DataDirLockedError

LOCK_FILE = ".lock"


class DataDirLock:
    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Create the data dir if needed and lock it; DataDirLockedError if another process
        holds the lock."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "a process whose pid is not written yet"
            raise DataDirLockedError(
                f"data dir {data_dir.resolve()} is in use by another nerve broker ({who}); "
                f"one broker per data dir") from None
        except BaseException:
            os.close(fd)
            raise
        # Ours now: replace whatever pid a previous owner left.
        with contextlib.suppress(OSError):  # a full disk must not stop the broker here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    def __del__(self) -> None:  # an owner dropped without release() (tests, errors)
        self.release()

    def release(self) -> None:
        """Unlock (closing the fd drops the flock). The file stays: it is only a name."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
