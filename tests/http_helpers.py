"""A real HTTP server on loopback for the tests that fetch URLs (each test module brings its handler)."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """For a fixture: `yield from serve(Handler)` gives the server's base URL and stops it afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
