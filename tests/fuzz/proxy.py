"""A recording TCP proxy: forwards a Kafka client's bytes to a broker, keeps the request frames.

Clients learn the broker's address from Metadata, so the broker under the proxy runs with
`--advertised-host 127.0.0.2` and the proxy listens on 127.0.0.2 at the broker's port: every
connection a client opens, bootstrap or not, passes through it. Loopback only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable


class RecordingProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int],
                 on_frame: Callable[[bytes], None]) -> None:
        self.target = target
        self.on_frame = on_frame
        self._server = socket.create_server(listen)
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        buf = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if record:
                    buf += data
                    while len(buf) >= 4:
                        (size,) = struct.unpack_from(">i", buf)
                        if len(buf) < 4 + size:
                            break
                        self.on_frame(bytes(buf[4 : 4 + size]))
                        del buf[: 4 + size]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for s in self._sockets:
            s.close()
        for t in self._threads:
            t.join(timeout=5)
