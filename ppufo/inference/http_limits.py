"""Slow-client protection for the waitress server behind ppufo-serve (docs/deploy.md, "Slow clients").

waitress reads each request whole on its I/O thread before a worker sees it, so a slow client never
holds a predictor; but its own limits are not enough against slow clients:

* ``channel_timeout`` counts inactivity only: a client that sends one header byte every few seconds
  is never timed out;
* at ``connection_limit`` it stops accepting, so a few hundred idle or trickling sockets lock every
  other client out until they go.

``GuardedServer`` (a waitress ``TcpWSGIServer``) adds, on the same I/O thread:

* a deadline per request, independent of activity: the request line and headers must arrive within
  ``header_timeout`` seconds and the whole request within ``request_timeout``, counted from its first
  byte (from the connection's opening for its first request); past it the client gets a 408 and the
  connection is closed;
* a cap on the connections open from one client address (``per_client``; 0 = no cap): the ones
  above it get a 429 and are closed at once;
* at the connection limit it keeps accepting and makes room: it closes the connection that has held
  its slot longest without delivering a request -- idle since its last answer (keep-alive), silent
  since it opened, or still sending its request (that one gets a 503). Only when every connection
  has a request in the workers' hands is the new one refused (503). A client that sends its request
  at once therefore never waits behind slow or idle ones.

``StrictParser`` answers a chunk size that cannot fit the body limit, or a Content-Length too long to
be a number, with an error at once instead of waiting for the bytes.
"""
import json
import logging
import socket
import time
from http import HTTPStatus

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.receiver import ChunkedReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import BadRequest

log = logging.getLogger("ppufo.serve")

MAX_LENGTH_DIGITS = 19  # a Content-Length or chunk size longer than this is no body we could take
SWEEP_SECONDS = 0.25  # how often the deadlines are checked (the I/O loop wakes at least every second)
LOG_EVERY = 10.0  # seconds between two log lines about refused or closed connections
LINGER_SECONDS = 1.0  # a refused connection is read (and dropped) this long so that its answer is seen
MAX_LINGERING = 256  # more refused connections than this at once are closed without lingering


def error_json(code, message):
    """The JSON body every refusal carries: ``{"error": "<reason>: <message>"}``."""
    return json.dumps({"error": f"{HTTPStatus(code).phrase}: {message}"}).encode()


def _answer(sock, code, message):
    """Best effort, never blocking: one small JSON answer (the caller closes the socket)."""
    body = error_json(code, message)
    head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.setblocking(False)
        sock.send(head + body)
    except OSError:
        pass


class _StrictChunkedReceiver(ChunkedReceiver):
    """waitress's chunked receiver, but a chunk size that cannot fit in the body limit (e.g.
    ``FFFFFFFFFFFFFFFFFFFF``) or a size line that never ends is an error at once, not a wait."""

    def __init__(self, buf, max_body):
        super().__init__(buf)
        self.max_body = max_body

    def received(self, s):
        n = super().received(s)
        if self.error is None and not self.all_chunks_received:
            if len(self.control_line) > MAX_LENGTH_DIGITS + 1024:  # size + any chunk extension
                self.error = BadRequest("Invalid chunk size: the chunk size line is too long")
            elif len(self.buf) + self.chunk_remainder >= self.max_body:
                self.error = BadRequest(f"Invalid chunk size: the chunk would take the body over the limit "
                                        f"of {self.max_body - 1} bytes")
            if self.error is not None:
                self.all_chunks_received = True
        return n


class StrictParser(HTTPRequestParser):
    def parse_header(self, header_plus):
        try:
            super().parse_header(header_plus)
        except ValueError as e:  # int() of a Content-Length over Python's 4300-digit limit
            if isinstance(e, ParsingError):
                raise
            raise ParsingError("Content-Length is invalid") from None
        if len(self.headers.get("CONTENT_LENGTH", "")) > MAX_LENGTH_DIGITS:
            raise ParsingError("Content-Length is invalid")
        if self.chunked:  # nothing of the body has been read yet
            self.body_rcv = _StrictChunkedReceiver(self.body_rcv.buf, self.adj.max_request_body_size)


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (malformed request or Content-Length 400, body over the limit 413,
    unhandled 500) in the same JSON shape as the application's."""

    def execute(self):
        e = self.request.error
        message = e.body
        if e.code == 413:
            message = f"request body over the limit of {self.channel.adj.max_request_body_size - 1} bytes"
        body = error_json(e.code, message)
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    """A waitress channel that knows when its current request started (None: idle between requests)
    and that the server can close with an answer (``close_soon``)."""

    error_task_class = JsonErrorTask
    parser_class = StrictParser
    closing = None  # (code, message) to answer before closing, or (None, None): close, once writable

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        self.request_started = self.creation_time  # the first request's clock runs from the opening

    def received(self, data):
        if self.request_started is None and data:
            self.request_started = time.time()
        ok = super().received(data)
        if self.request is None:  # every request received so far is complete
            self.request_started = None
        return ok

    @property
    def busy(self):
        """A complete request is queued or being answered (a worker owns the channel)."""
        return bool(self.requests)

    @property
    def receiving(self):
        """Part of a request has arrived."""
        return self.request is not None and not self.busy

    @property
    def waiting_since(self):
        """Since when this connection has held its slot without a complete request: the start of the
        request arriving (the opening, for a first one), or the end of the last answer; None when it
        cannot be closed to make room (a worker owns it, or its answer is still being sent)."""
        if self.busy or self.total_outbufs_len:
            return None
        return self.request_started if self.request_started is not None else self.last_activity

    @property
    def leaving(self):
        """Marked to close: it no longer counts against the limits."""
        return self.closing is not None or self.will_close

    def overdue(self, now):
        """The reason this channel's request is past its deadline, or None."""
        if self.busy or self.leaving or self.request_started is None:
            return None
        limits, age = self.server.limits, now - self.request_started
        if not (self.request is not None and self.request.headers_finished) and age > limits.header_timeout:
            return f"request line and headers not received within {limits.header_timeout:g} s"
        if age > limits.request_timeout:
            return f"request not received in full within {limits.request_timeout:g} s"
        return None

    def close_soon(self, code=None, message=None):
        """Stop reading; at this channel's next write event answer ``code`` (if given) and close. Not
        at once: closing it while another socket's event is handled would free its descriptor for a
        new connection, and the events still pending for the old one would reach the new one."""
        self.closing = (code, message)

    def readable(self):
        return self.closing is None and super().readable()

    def handle_read(self):
        if self.closing is None:  # marked after this loop's poll: read nothing more
            super().handle_read()

    def writable(self):
        return self.closing is not None or super().writable()

    def handle_write(self):
        if self.closing is None:
            return super().handle_write()
        code, message = self.closing
        if code is not None:
            self.server.answer_and_close(self.socket.dup(), code, message)
        self.handle_close()


class Limits:
    """The slow-client settings (docs/deploy.md): seconds, seconds, connections (0 = no cap)."""

    def __init__(self, header_timeout=10.0, request_timeout=60.0, per_client=32):
        if not 0 < header_timeout <= request_timeout:
            raise ValueError(f"need 0 < header_timeout ({header_timeout}) <= request_timeout ({request_timeout})")
        if per_client < 0:
            raise ValueError(f"per_client must be >= 0 (0 = no cap), got {per_client}")
        self.header_timeout, self.request_timeout, self.per_client = header_timeout, request_timeout, per_client


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with the per-request deadlines, the per-address cap and room-making at the
    connection limit described at the top of this module. ``stats`` counts what it did."""

    channel_class = GuardedChannel

    def __init__(self, application, limits, host, port, threads, **adjustments):
        adj = Adjustments(host=host, port=port, threads=threads, asyncore_use_poll=True, **adjustments)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        self.limits = limits
        self.stats = {"timed_out": 0, "over_per_client": 0, "closed_idle": 0, "closed_slow": 0, "refused_busy": 0}
        self._logged, self._next_log, self._next_sweep = dict(self.stats), 0.0, 0.0
        self._lingering = []  # (deadline, socket) of answered refusals, see answer_and_close
        self.socket_map = {}  # this server's sockets (the listener and every channel), fd -> dispatcher
        super().__init__(application, map=self.socket_map, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])

    def open_connections(self):
        return sum(not c.leaving for c in list(self.active_channels.values()))

    def readable(self):
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            self.maintenance(now)  # waitress: close channels idle for channel_timeout
            for channel in list(self.active_channels.values()):
                reason = channel.overdue(now)
                if reason:
                    self.stats["timed_out"] += 1
                    channel.close_soon(408, reason)
            self._drain_lingering(now)
            self._log_stats(now)
        return self.accepting  # keep accepting at the limit: handle_accept makes room

    def handle_accept(self):
        try:
            pair = self.accept()
        except OSError:  # the client went away before accept (waitress ignores these too)
            return
        if pair is None:
            return
        conn, addr = pair
        refusal = self._admit(addr[0])
        if refusal:
            self.answer_and_close(conn, *refusal)
            return
        self.set_socket_options(conn)
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self.socket_map)

    def _admit(self, host):
        """None if a connection from ``host`` may open (room made if needed), else (code, message)."""
        channels = [c for c in self.active_channels.values() if not c.leaving]
        cap = self.limits.per_client
        if cap and sum(c.addr[0] == host for c in channels) >= cap:
            self.stats["over_per_client"] += 1
            return 429, f"{cap} connections are already open from {host}; close one or wait"
        if len(channels) < self.adj.connection_limit:
            return None
        waiting = [c for c in channels if c.waiting_since is not None]
        if waiting:
            victim = min(waiting, key=lambda c: c.waiting_since)
            if victim.receiving:
                self.stats["closed_slow"] += 1
                victim.close_soon(503, f"the server is at its connection limit ({self.adj.connection_limit}) and "
                                       "this request had been arriving longest; send it at once")
            else:
                self.stats["closed_idle"] += 1
                victim.close_soon()
            return None
        self.stats["refused_busy"] += 1
        return 503, f"all {self.adj.connection_limit} connections have requests being answered; retry shortly"

    def answer_and_close(self, sock, code, message):
        """Send the refusal, then close "lingering": stop sending, read and drop what the client still
        sends for up to LINGER_SECONDS. Closing at once with its request unread would make the kernel
        reset the connection, and the client would see a reset instead of the answer."""
        _answer(sock, code, message)
        try:
            if len(self._lingering) >= MAX_LINGERING:
                raise OSError("too many lingering connections")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._lingering.append((time.time() + LINGER_SECONDS, sock))

    def _drain_lingering(self, now):
        keep = []
        for deadline, sock in self._lingering:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:  # nothing more to read yet
                if now < deadline:
                    keep.append((deadline, sock))
                    continue
            except OSError:
                pass
            sock.close()  # the client closed (recv gave b""), reset, or its time is up
        self._lingering = keep

    def _log_stats(self, now):
        if now < self._next_log or self.stats == self._logged:
            return
        diff = {k: v - self._logged[k] for k, v in self.stats.items() if v != self._logged[k]}
        log.warning("slow-client guard: %s (%d connections open)",
                    ", ".join(f"{k} +{v}" for k, v in diff.items()), self.open_connections())
        self._logged, self._next_log = dict(self.stats), now + LOG_EVERY
