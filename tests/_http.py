"""A local HTTP server on 127.0.0.1 for download tests: static files with HTTP Range support, plus handlers
that misbehave the ways real servers do (no Content-Length, 416 for every range, a resume at the wrong
offset, ranges ignored, a body cut short, a body that pauses half way)."""
from __future__ import annotations

import contextlib
import http.server
import re
import threading
from functools import partial
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support; records each request's path and Range header in ``log``.

    Subclasses change :meth:`respond` (what is sent for a file) or ``send_length`` (whether a
    Content-Length header is sent); every request is logged in ``RangeHandler.log`` whatever the handler."""

    log: list = []
    send_length = True

    def log_message(self, *a):
        pass

    def do_GET(self):
        RangeHandler.log.append((self.path, self.headers.get("Range")))
        p = Path(self.translate_path(self.path))
        if not p.is_file():
            return super().do_GET()                     # 404 (or a directory listing)
        self.respond(p.read_bytes(), self.headers.get("Range"))

    def respond(self, data: bytes, rng: str | None) -> None:
        """A correct server: 200 with the whole file, or 206 from the requested byte (416 past the end)."""
        if not rng:
            return self.send_body(200, data)
        start = range_start(rng)
        if start >= len(data):
            return self.send_error(416)
        self.send_body(206, data[start:], f"bytes {start}-{len(data) - 1}/{len(data)}")

    def send_body(self, status: int, body: bytes, content_range: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if self.send_length:
            self.send_header("Content-Length", str(len(body)))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()                              # HTTP/1.0: the connection closes after the body
        self.write_body(body)

    def write_body(self, body: bytes) -> None:
        self.wfile.write(body)


def range_start(rng: str) -> int:
    """The first byte of a ``Range: bytes=N-`` header."""
    return int(re.match(r"bytes=(\d+)-", rng).group(1))


@contextlib.contextmanager
def serve(root: Path, handler=None):
    """Serve ``root`` on 127.0.0.1 (a free port) with ``handler`` (default :class:`RangeHandler`); yields the
    base URL. ``RangeHandler.log`` starts empty."""
    RangeHandler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler or RangeHandler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class MisplacedRangeHandler(RangeHandler):
    """A broken server: answers a Range request with 206 but sends the file from byte 0."""

    def respond(self, data, rng):
        if not rng:
            return super().respond(data, rng)
        self.send_body(206, data, f"bytes 0-{len(data) - 1}/{len(data)}")


class NoLengthHandler(RangeHandler):
    """Range support, but no Content-Length header (the body ends when the connection closes)."""

    send_length = False


class TruncatingHandler(RangeHandler):
    """The connection closes after half of the body, although Content-Length announced all of it."""

    def write_body(self, body):
        self.wfile.write(body[: len(body) // 2])


class TruncatingNoLengthHandler(TruncatingHandler):
    """No Content-Length, and the connection closes after half of the body: the client cannot tell."""

    send_length = False


class Always416Handler(RangeHandler):
    """Answers every Range request with 416 (range not satisfiable), whatever the offset; a request
    without Range gets the whole file."""

    def respond(self, data, rng):
        if rng:
            return self.send_error(416)
        super().respond(data, rng)


class IgnoreRangeHandler(RangeHandler):
    """A server without range support: every request gets 200 and the whole file."""

    def respond(self, data, rng):
        super().respond(data, None)


class GatedHandler(RangeHandler):
    """Sends the first half of the body, sets ``half_sent`` and waits (up to 20 s) for ``go_on`` before
    sending the rest: a test looks at the client's files in the middle of a download. Call :meth:`reset`
    before each use."""

    half_sent = threading.Event()
    go_on = threading.Event()

    @classmethod
    def reset(cls):
        cls.half_sent = threading.Event()
        cls.go_on = threading.Event()

    def write_body(self, body):
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        GatedHandler.half_sent.set()
        GatedHandler.go_on.wait(20)
        self.wfile.write(body[half:])
