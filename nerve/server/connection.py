"""One client connection: bytes in, frames to the dispatcher in order, bytes out.

Kafka clients pipeline requests (librdkafka sends several at once) and rely on answers in
request order, so each connection runs one worker that handles its frames one at a time.
A handler may defer its answer (Produce acks=all until its fsync): the worker then moves on
to the next request, and a sender task writes the answers in request order as they become
ready. Reading pauses while too many frames wait, and the worker waits while the socket's
write buffer is above its high-water mark or too many answers are pending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
from typing import TYPE_CHECKING, Any

from nerve.handlers.dispatch import CloseConnection, Dispatcher
from nerve.protocol.framing import FrameDecoder, FramingError

if TYPE_CHECKING:
    from nerve.server.buffers import ReadBufferPool
    from nerve.storage.log import FileRegion

log = logging.getLogger("nerve.server")

MAX_QUEUED_FRAMES = 64
MAX_PENDING_RESPONSES = 32
# File regions at least this large go out with os.sendfile (zero-copy); smaller ones are read
# into a pooled buffer (buffers.py) and sent with the headers in one writev. Measured here on
# loopback (librdkafka, 1 KiB records, 1 MiB per partition per fetch), consumed records/s:
#   pread + writev, direct:      1 partition 260-686k, 8 partitions 468-584k
#   os.sendfile >= 64 KiB:        1 partition 156-162k, 8 partitions 287-452k
#   asyncio writelines / loop.sendfile: 130-300k
# Measured, not explained: under strace each os.sendfile of a ~1 MiB region took ~340 us,
# no cheaper than pread + writev, and it needs one call per region where one writev takes
# the whole answer. It is kept for the rare huge region, where not copying 16 MiB into the
# process matters more.
SENDFILE_MIN_BYTES = 16 * 1024 * 1024
_IOV_MAX = 1024
_ids = itertools.count(1)


class KafkaConnection(asyncio.Protocol):
    def __init__(
        self,
        dispatcher: Dispatcher,
        max_frame_bytes: int,
        connections: set[KafkaConnection],
        buffers: ReadBufferPool,
    ) -> None:
        self.dispatcher = dispatcher
        self._buffers = buffers  # the broker's, shared by its connections
        self.decoder = FrameDecoder(max_frame_bytes)
        self.connections = connections
        self.connection_id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self._frames: collections.deque[bytes] = collections.deque()
        self._wakeup: asyncio.Event = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        # Answers not yet written, in request order: parts, None (no answer), or futures.
        self._outbox: collections.deque[Any] = collections.deque()
        self._outbox_space = asyncio.Event()
        self._outbox_space.set()
        self._sender: asyncio.Task[None] | None = None
        self._handling = False
        self.idle = asyncio.Event()  # set while nothing is handled or waiting to be answered
        self.idle.set()

    # ---- asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but offer the same methods.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self.connections.add(self)
        self._worker = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self.decoder.receive_data(data)
        try:
            while (frame := self.decoder.next_frame()) is not None:
                self._frames.append(frame)
        except FramingError as e:
            self.close(f"framing error: {e}")
            return
        if self._frames:
            self._wakeup.set()
            if len(self._frames) >= MAX_QUEUED_FRAMES and not self._reading_paused:
                assert self.transport is not None
                self.transport.pause_reading()
                self._reading_paused = True

    def connection_lost(self, exc: Exception | None) -> None:
        # Stays in `connections` until the worker ends, so shutdown can wait for it.
        self._closing = True
        if self._out_fd is not None:
            # The dup keeps the socket open: close it, and fail a send waiting on it.
            asyncio.get_running_loop().remove_writer(self._out_fd)
            os.close(self._out_fd)
            self._out_fd = None
            self._direct_disabled = True
            if self._write_waiter is not None and not self._write_waiter.done():
                self._write_waiter.set_exception(ConnectionError("connection lost"))
        self._can_write.set()
        self._wakeup.set()
        if self._worker is not None and self.idle.is_set():
            self._worker.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # ---- worker
    async def _run(self) -> None:
        try:
            while not self._closing:
                if not self._frames:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame = self._frames.popleft()
                if self._reading_paused and len(self._frames) < MAX_QUEUED_FRAMES // 2:
                    assert self.transport is not None
                    self.transport.resume_reading()
                    self._reading_paused = False
                self.idle.clear()
                self._handling = True
                try:
                    result = await self.dispatcher.handle(
                        frame, self.peer[0], self.peer[1], self.connection_id
                    )
                finally:
                    self._handling = False
                if self._outbox or isinstance(result, asyncio.Future):
                    self._queue_answer(result)
                    if len(self._outbox) >= MAX_PENDING_RESPONSES:
                        self._outbox_space.clear()
                        await self._outbox_space.wait()
                    continue
                await self._deliver(result)
                self.idle.set()
        except CloseConnection as e:
            self.close(str(e))
        except (asyncio.CancelledError, Exception) as e:
            self._close_after(e)
        finally:
            self.connections.discard(self)

    def _queue_answer(self, result: Any) -> None:
        self._outbox.append(result)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_in_order())

    async def _send_in_order(self) -> None:
        """Write queued answers in request order, waiting for deferred ones to be ready."""
        try:
            while self._outbox:
                item = self._outbox[0]
                await self._deliver(await item if isinstance(item, asyncio.Future) else item)
                # Popped only once written: while the outbox is not empty, the worker queues
                # behind it instead of writing, so answers never interleave.
                self._outbox.popleft()
                if len(self._outbox) < MAX_PENDING_RESPONSES:
                    self._outbox_space.set()
        except (asyncio.CancelledError, Exception) as e:
            self._close_after(e)
        finally:
            if not self._handling:
                self.idle.set()
            self._outbox_space.set()

    def _close_after(self, exc: asyncio.CancelledError | Exception) -> None:
        """Close this connection after the worker or the sender ended with `exc`."""
        if not isinstance(exc, asyncio.CancelledError | ConnectionError):
            log.error("closing connection %s from %s:%s after an internal error",
                      self.connection_id, *self.peer, exc_info=exc)
        self.close(None)

    async def _deliver(self, parts: list[bytes | FileRegion] | None) -> None:
        """Write one answer (None: the request gets none), then respect back-pressure."""
        if parts is None or self._closing:
            return
        await self._send(parts)
        if not self._can_write.is_set():
            await self._can_write.wait()

    async def _send(self, parts: list[bytes | FileRegion]) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() == 0 and self._direct_fd() is not None:
            await self._send_direct(parts)
            return
        # Something is still buffered in the transport: queue behind it, in order.
        transport.writelines(
            [p if isinstance(p, bytes | bytearray) else p.read_bytes() for p in parts]
        )

    # ---- direct writes: scatter-gather and zero-copy, bypassing the transport's buffer
    #
    # asyncio's writelines() joins every chunk into one bytes object and buffers what the
    # socket does not take, two copies of every record byte; loop.sendfile() first waits for
    # the buffer to drain. When the transport has nothing buffered, its socket is ours to
    # write: os.writev for header bytes, os.sendfile for file regions, both on a dup of the
    # socket fd (the transport owns the original's selector registration), waiting for
    # writability with add_writer on the dup.

    _out_fd: int | None = None
    _direct_disabled = False
    _write_waiter: asyncio.Future[None] | None = None

    def _direct_fd(self) -> int | None:
        if self._out_fd is None and not self._direct_disabled:
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                self._direct_disabled = True
                return None
            self._out_fd = os.dup(sock.fileno())
        return self._out_fd

    async def _send_direct(self, parts: list[bytes | FileRegion]) -> None:
        fd = self._out_fd
        assert fd is not None
        # Regions under the sendfile threshold are read into one borrowed buffer, given back
        # once the whole answer is written (nothing reads it after that).
        to_read = sum(p.size for p in parts
                      if not isinstance(p, bytes | bytearray) and p.size < SENDFILE_MIN_BYTES)
        buf = self._buffers.acquire(to_read) if to_read else None
        try:
            free = memoryview(buf) if buf is not None else memoryview(b"")
            pending: list[bytes | bytearray | memoryview] = []
            for p in parts:
                if isinstance(p, bytes | bytearray):
                    pending.append(p)
                elif p.size < SENDFILE_MIN_BYTES:
                    chunk, free = free[: p.size], free[p.size:]
                    p.read_into(chunk)
                    pending.append(chunk)
                else:
                    if pending:
                        await self._writev_all(fd, pending)
                        pending = []
                    await self._sendfile_all(fd, p)
            if pending:
                await self._writev_all(fd, pending)
        finally:
            if buf is not None:
                self._buffers.release(buf)

    async def _writev_all(self, fd: int, chunks: list[bytes | bytearray | memoryview]) -> None:
        views = collections.deque(memoryview(c) for c in chunks if len(c))
        while views:
            try:
                sent = os.writev(fd, list(itertools.islice(views, _IOV_MAX)))
            except BlockingIOError:
                await self._writable(fd)
                continue
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    views.popleft()
                else:
                    views[0] = head[sent:]
                    sent = 0

    async def _sendfile_all(self, fd: int, region: FileRegion) -> None:
        offset, left = region.position, region.size
        while left:
            try:
                sent = os.sendfile(fd, region.fd, offset, left)
            except BlockingIOError:
                await self._writable(fd)
                continue
            if sent == 0:  # the file ended early: never leave a half-sent frame behind
                raise ConnectionError(f"segment file ended {left} bytes before the region")
            offset += sent
            left -= sent

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, lambda: waiter.done() or waiter.set_result(None))
        self._write_waiter = waiter
        try:
            await waiter
        finally:
            self._write_waiter = None
            if not self._direct_disabled:
                loop.remove_writer(fd)

    async def shutdown(self) -> None:
        """Close and wait for the worker to end (broker shutdown, after draining)."""
        self.close(None)
        for task in (self._worker, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def close(self, reason: str | None) -> None:
        if reason:
            log.warning("closing connection %s from %s:%s: %s",
                        self.connection_id, self.peer[0], self.peer[1], reason)
        self._closing = True
        if self.transport is not None:
            self.transport.close()
