"""One client connection: bytes in, frames to the dispatcher in order, bytes out.

Reading (a BufferedProtocol): the loop reads each socket into the broker's one read buffer;
complete small frames are copied out, a large frame gets a buffer of its exact size that the
socket then fills directly. Every frame is counted against the broker's request memory budget
(`queued.max.request.bytes`, memory.py) until its handler returns; past the budget, or with
`MAX_QUEUED_FRAMES` read ahead, the connection stops reading its socket.

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
import struct
from typing import TYPE_CHECKING, Any

from nerve import trace
from nerve.handlers.dispatch import CloseConnection, Dispatcher
from nerve.protocol.framing import FramingError

if TYPE_CHECKING:
    from nerve.server.buffers import ReadBufferPool
    from nerve.server.memory import RequestMemoryPool
    from nerve.storage.log import FileRegion

log = logging.getLogger("nerve.server")

# Requests read ahead of the one being handled, per connection (reading pauses at the bound;
# what one read brought beyond it waits unframed), and answers waiting to be written.
MAX_QUEUED_FRAMES = 64
MAX_PENDING_RESPONSES = 32
# The broker's shared read buffer (asyncio reads at most 256 KiB at a time too).
READ_BUFFER_BYTES = 256 * 1024
# An incomplete frame at least this large gets a buffer of its exact size, filled straight
# from the socket: its bytes are held once, never grown or copied. Smaller ones are copied
# out of the read buffer (one copy, as asyncio's own bytes would cost).
LARGE_FRAME_BYTES = 64 * 1024
# Fair service: a connection whose requests never make its worker wait (Metadata, ListOffsets,
# answers the socket takes at once) yields to the loop after this much time, so one client
# pipelining thousands of requests takes turns with the others instead of running them all.
FAIR_SLICE_S = 0.002
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
_I32 = struct.Struct(">i")
_ids = itertools.count(1)


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(
        self,
        dispatcher: Dispatcher,
        max_frame_bytes: int,
        connections: set[KafkaConnection],
        buffers: ReadBufferPool,
        memory: RequestMemoryPool,
        read_buffer: bytearray,
        security: Any = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.security = security  # the listener's ListenerSecurity (None: plain PLAINTEXT)
        self.session: Any = None  # its SaslSession: who this client is, once made
        self._buffers = buffers  # the broker's, shared by its connections
        self._memory = memory  # queued.max.request.bytes, shared by the broker's connections
        self._max_frame = max_frame_bytes
        # The broker's read buffer, shared by its connections: the loop reads one socket at a
        # time into it and buffer_updated() copies out what it keeps before returning.
        self._scratch = memoryview(read_buffer)
        self._carry = bytearray()  # read but not yet framed: a partial frame, or frames beyond
        # the queue's bound. A large frame is read straight into its own buffer instead:
        self._big: bytearray | None = None
        self._big_view: memoryview | None = None
        self._big_filled = 0
        self._reserved = 0  # bytes reserved for the next large frame, before it is allocated
        self._pool_waiter: Any = None
        self.connections = connections
        self.connection_id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("?", 0)
        self.on_lost: Any = None  # the listener's connection count
        self._loop = asyncio.get_event_loop()
        self.last_active = self._loop.time()  # a request read or an answer written (idle reaper)
        self._frames: collections.deque[bytes | memoryview] = collections.deque()
        # NERVE_TRACE_SLOW_MS only: when each queued frame was read, and the stages of each
        # queued answer (nerve/trace.py).
        self._frame_times: collections.deque[float] = collections.deque()
        self._answer_traces: collections.deque[trace.Stages | None] = collections.deque()
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
        sec = self.security
        if sec is not None:
            principal = None
            if sec.tls:
                # TLS traffic must go through the transport: no direct writev/sendfile.
                self._direct_disabled = True
                ssl_object = transport.get_extra_info("ssl_object")
                cert = ssl_object.getpeercert() if ssl_object is not None else None
                if sec.protocol == "SSL":
                    principal = sec.principal_mapper.principal(cert)
                    if cert:
                        log.info("connection %s from %s:%s: TLS client certificate, principal "
                                 "%s", self.connection_id, *self.peer, principal)
            self.session = sec.new_session(principal)
        self.connections.add(self)
        self._worker = self._loop.create_task(self._run())

    # ---- reading: frames are held once, and only as many as the budget allows
    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big_view is not None:
            return self._big_view[self._big_filled:]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._big_view is not None:
                self._big_filled += nbytes
                if self._big_filled == len(self._big_view):
                    self._frames.append(self._big_view.toreadonly())
                    if trace.ENABLED:
                        self._frame_times.append(trace.now())
                    self._big = self._big_view = None
                    self.last_active = self._loop.time()
            elif self._carry:
                self._carry += self._scratch[:nbytes]
                self._frame_carry()
            else:
                data = self._scratch[:nbytes]
                pos = self._frame_from(data)
                if pos < nbytes:
                    self._carry = bytearray(data[pos:])
        except FramingError as e:
            self.close(f"framing error: {e}")
            return
        self._after_read()

    def _frame_carry(self) -> None:
        with memoryview(self._carry) as view:
            pos = self._frame_from(view)
        if pos:
            del self._carry[:pos]

    def _frame_from(self, buf: memoryview) -> int:
        """Take the complete frames at the start of `buf` (while the queue has room); return
        how far they reach. A large incomplete frame gets its own buffer (budget allowing),
        which takes what `buf` has of it and is then filled straight from the socket."""
        frames = self._frames
        end_of_data = len(buf)
        pos = 0
        taken = 0
        while len(frames) < MAX_QUEUED_FRAMES and end_of_data - pos >= 4:
            (size,) = _I32.unpack_from(buf, pos)
            if size < 0 or size > self._max_frame:
                raise FramingError(
                    f"frame of {size} bytes is outside 0..{self._max_frame} "
                    "(socket.request.max.bytes)")
            end = pos + 4 + size
            if end > end_of_data:
                if size >= LARGE_FRAME_BYTES and self._start_large(size, buf[pos + 4:]):
                    pos = end_of_data
                break
            frames.append(bytes(buf[pos + 4:end]))
            if trace.ENABLED:
                self._frame_times.append(trace.now())
            taken += size
            pos = end
        if taken:
            self._memory.take(taken)
            self.last_active = self._loop.time()
        return pos

    def _start_large(self, size: int, head: memoryview) -> bool:
        if self._reserved != size:
            if self._pool_waiter is not None:
                return False
            if not self._memory.try_reserve(size):
                self._pool_waiter = self._memory.wait(size, self._large_admitted)
                return False
        self._reserved = 0
        self._big = bytearray(size)
        self._big_view = memoryview(self._big)
        self._big_view[: len(head)] = head
        self._big_filled = len(head)
        return True

    def _large_admitted(self) -> None:
        # The pool reserved the size of the frame at the head of the carry for us.
        self._pool_waiter = None
        self._reserved = _I32.unpack_from(self._carry, 0)[0]
        self._frame_more()

    def _room_admitted(self) -> None:
        self._pool_waiter = None
        self._frame_more()

    def _frame_more(self) -> None:
        """Frame what the carry still holds, then read on if the queue and budget allow."""
        if self._closing:
            return
        if self._carry and self._big_view is None:
            try:
                self._frame_carry()
            except FramingError as e:
                self.close(f"framing error: {e}")
                return
        self._after_read()

    def _after_read(self) -> None:
        if self._frames:
            self._wakeup.set()
        # A frame being filled has its bytes reserved already: it reads on, or it would hold
        # them while waiting for others that wait for them.
        if self._pool_waiter is None and self._big_view is None and not self._closing \
                and self._memory.should_pause():
            self._pool_waiter = self._memory.wait(0, self._room_admitted)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read while the queue has room and the budget is not waited for."""
        transport = self.transport
        if transport is None or self._closing:
            return
        if self._reading_paused:
            if self._pool_waiter is None and len(self._frames) < MAX_QUEUED_FRAMES // 2:
                transport.resume_reading()
                self._reading_paused = False
        elif self._pool_waiter is not None or len(self._frames) >= MAX_QUEUED_FRAMES:
            transport.pause_reading()
            self._reading_paused = True

    def _drop_read_state(self) -> None:
        """Give back every byte this connection holds (it is closed)."""
        held = sum(len(f) for f in self._frames) + self._reserved
        if self._big_view is not None:
            held += len(self._big_view)
        self._frames.clear()
        self._frame_times.clear()
        self._big = self._big_view = None
        self._reserved = 0
        self._carry = bytearray()
        if self._pool_waiter is not None:
            self._memory.cancel(self._pool_waiter)
            self._pool_waiter = None
        if held:
            self._memory.release(held)

    def eof_received(self) -> bool | None:
        return None  # close (Kafka clients never half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        # Stays in `connections` until the worker ends, so shutdown can wait for it.
        self._closing = True
        self._drop_read_state()
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost()
        if self._out_fd is not None:
            # The dup keeps the socket open: close it, and fail a send waiting on it.
            self._loop.remove_writer(self._out_fd)
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
        self.last_active = self._loop.time()

    # ---- worker
    async def _run(self) -> None:
        loop = self._loop
        memory = self._memory
        slice_start = loop.time()
        try:
            while not self._closing:
                if not self._frames:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    slice_start = loop.time()
                    continue
                frame = self._frames.popleft()
                stages = trace.begin(self._frame_times.popleft()) if trace.ENABLED else None
                if len(self._frames) < MAX_QUEUED_FRAMES // 2 and (
                        self._reading_paused or self._carry):
                    self._frame_more()
                self.idle.clear()
                self._handling = True
                session = self.session
                try:
                    if session is not None and session.raw_mode:
                        result = self._raw_sasl_token(frame)
                    else:
                        result = await self.dispatcher.handle(
                            frame, self.peer[0], self.peer[1], self.connection_id,
                            session=session,
                        )
                finally:
                    self._handling = False
                    memory.release(len(frame))
                    del frame
                if self._outbox or isinstance(result, asyncio.Future):
                    self._queue_answer(result, stages)
                    if len(self._outbox) >= MAX_PENDING_RESPONSES:
                        self._outbox_space.clear()
                        await self._outbox_space.wait()
                else:
                    await self._deliver(result)
                    if stages is not None:
                        trace.finish(stages, self.connection_id)
                    self.idle.set()
                if session is not None and session.close_reason is not None:
                    # Kafka closes after a refused handshake or a failed authentication,
                    # once the answer that says why is written.
                    if self._sender is not None:
                        await asyncio.shield(self._sender)
                    self.close(session.close_reason)
                    break
                mute_s = self.dispatcher.take_mute(self.connection_id)
                if mute_s > 0:  # a quota throttle: Kafka mutes the channel this long
                    await asyncio.sleep(mute_s)
                if self._frames:
                    now = loop.time()
                    if now - slice_start >= FAIR_SLICE_S:
                        await asyncio.sleep(0)
                        slice_start = loop.time()
        except CloseConnection as e:
            self.close(str(e))
        except (asyncio.CancelledError, Exception) as e:
            self._close_after(e)
        finally:
            self.connections.discard(self)

    def _raw_sasl_token(self, frame: bytes | memoryview) -> list[bytes | FileRegion] | None:
        """After a v0 SaslHandshake the client sends bare SASL tokens (no request header) and
        expects bare tokens back; a failure closes the connection without an answer."""
        from nerve.security.sasl import AuthenticationFailed

        try:
            answer, _, _ = self.session.authenticate(bytes(frame))
        except AuthenticationFailed:
            return None
        return [_I32.pack(len(answer)), answer]

    def _queue_answer(self, result: Any, stages: trace.Stages | None) -> None:
        self._outbox.append(result)
        if trace.ENABLED:
            self._answer_traces.append(stages)
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send_in_order())

    async def _send_in_order(self) -> None:
        """Write queued answers in request order, waiting for deferred ones to be ready."""
        try:
            while self._outbox:
                item = self._outbox[0]
                if isinstance(item, asyncio.Future):
                    item = await item
                    if trace.ENABLED and self._answer_traces:
                        stages = self._answer_traces[0]
                        if stages is not None:
                            stages.append(("ready", trace.now()))
                await self._deliver(item)
                # Popped only once written: while the outbox is not empty, the worker queues
                # behind it instead of writing, so answers never interleave.
                self._outbox.popleft()
                if trace.ENABLED and self._answer_traces:
                    trace.finish(self._answer_traces.popleft(), self.connection_id)
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
        self.last_active = self._loop.time()
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
            try:
                self._out_fd = os.dup(sock.fileno())
            except OSError:  # EMFILE: this connection writes through its transport
                self._direct_disabled = True
                return None
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
        source = region.open()  # held: the file stays open across the awaits below
        while left:
            try:
                sent = os.sendfile(fd, source.fd, offset, left)
            except BlockingIOError:
                await self._writable(fd)
                continue
            if sent == 0:  # the file ended early: never leave a half-sent frame behind
                raise ConnectionError(f"segment file ended {left} bytes before the region")
            offset += sent
            left -= sent

    async def _writable(self, fd: int) -> None:
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, lambda: waiter.done() or waiter.set_result(None))
        self._write_waiter = waiter
        try:
            await waiter
            self.last_active = loop.time()
        finally:
            self._write_waiter = None
            if not self._direct_disabled:
                loop.remove_writer(fd)

    @property
    def busy(self) -> bool:
        """A request is being handled, or reading waits for the memory budget."""
        return self._handling or self._pool_waiter is not None

    def close_idle(self, idle_s: float) -> None:
        if self._closing:
            return
        log.info("closing connection %s from %s:%s: idle for %d ms (connections.max.idle.ms)",
                 self.connection_id, self.peer[0], self.peer[1], idle_s * 1000)
        self.close(None)

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
