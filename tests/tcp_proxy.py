"""A TCP proxy in front of a real PostgreSQL server, to inject network faults in tests.

The database stays real: the proxy only forwards bytes, and can close its port (the server
becomes unreachable), cut every connection, or cut a connection exactly when the server answers
a statement (the server did the work; the client never hears of it).
"""

from __future__ import annotations

import re
import socket
import threading
from contextlib import suppress
from urllib.parse import urlparse, urlunparse

BUFFER_BYTES = 65_536
# A CommandComplete message of a SELECT: type "C", int32 length, "SELECT <rows>\0".
_SELECT_COMPLETE = re.compile(rb"C\x00\x00\x00.SELECT \d+\x00", re.DOTALL)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` (a free one unless given) to the server of ``url``; a
    context manager."""

    def __init__(self, url: str, *, port: int = 0) -> None:
        parsed = urlparse(url)
        self._url = parsed
        self._target = (parsed.hostname or "127.0.0.1", parsed.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut_at_select = False
        self._close_after_cut = False
        self.cuts = 0
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        """The server's URL with the proxy's host and port."""
        netloc = f"{self._url.username or 'postgres'}@127.0.0.1:{self.port}"
        return urlunparse(self._url._replace(netloc=netloc))

    def cut_at_next_select_result(self, *, then_close: bool = False) -> None:
        """Drops the connection that next receives a SELECT's result, instead of the result.

        ``then_close``: the port closes and every connection is cut at that moment too (the
        server is gone for good).
        """
        with self._lock:
            self._cut_at_select = True
            self._close_after_cut = then_close

    def cut_all(self) -> None:
        """Closes every connection through the proxy (the port stays open)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def close(self) -> None:
        """Closes the port (connecting is then refused) and every connection."""
        self._close_port()
        self._accepting.join(timeout=5)
        self.cut_all()

    def _close_port(self) -> None:
        # shutdown() first: close() alone leaves the port listening while a thread waits in
        # accept() on it (the kernel keeps the socket until accept() returns).
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the port was closed
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for source, sink, watch in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, watch, client, server), daemon=True
                ).start()

    def _pipe(
        self,
        source: socket.socket,
        sink: socket.socket,
        watch: bool,
        client: socket.socket,
        server: socket.socket,
    ) -> None:
        try:
            while data := source.recv(BUFFER_BYTES):
                if watch and self._cut_at_select and _SELECT_COMPLETE.search(data):
                    with self._lock:
                        cut, self._cut_at_select = self._cut_at_select, False
                    if cut:
                        self.cuts += 1
                        if self._close_after_cut:
                            self._close_port()
                            self.cut_all()
                        break
                sink.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()
