"""A local HTTP server on 127.0.0.1 for download tests: static files with HTTP Range support."""
from __future__ import annotations

import contextlib
import http.server
import threading
from functools import partial
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support; records each request's path and Range header in ``log``."""

    log: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        RangeHandler.log.append((self.path, self.headers.get("Range")))
        p = Path(self.translate_path(self.path))
        rng = self.headers.get("Range")
        if not p.is_file() or not rng:
            return super().do_GET()
        data = p.read_bytes()
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


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

    def do_GET(self):
        p = Path(self.translate_path(self.path))
        if not self.headers.get("Range") or not p.is_file():
            return super().do_GET()
        data = p.read_bytes()
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data)
