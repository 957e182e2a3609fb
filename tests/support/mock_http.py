"""What the stdlib mocks of the agents' APIs share (:mod:`tests.support.mock_openai`, :mod:`tests.support.mock_gemini`;
``mock_anthropic`` keeps its own copy: it also runs as a standalone script, ``python tests/support/mock_anthropic.py``).

:class:`MockServer` serves one handler class on 127.0.0.1 in a daemon thread (``start``/``stop`` or ``with``; port 0
picks a free one), hands each request a reference to itself as ``handler.mock`` and keeps :attr:`MockServer.records`,
one dict per request, under a lock. :class:`JsonHandler` is the request handler base: HTTP/1.1, no access log,
:meth:`JsonHandler.send_json` for a complete JSON answer. Request headers and bodies are never recorded by this
module; a mock records only what it chooses to.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Type


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler of a :class:`MockServer` (``self.mock``)."""

    protocol_version = "HTTP/1.1"
    mock: Any  # the MockServer subclass serving this handler

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class MockServer:
    """A mock API server whose requests ``handler`` serves; ``mode`` (one of ``modes``) is its default behaviour."""

    def __init__(self, handler: Type[JsonHandler], modes: Sequence[str], mode: str, host: str, port: int, *,
                 name: str) -> None:
        if mode not in modes:
            raise ValueError(f"unknown mode {mode!r}; expected one of {tuple(modes)}")
        self.mode = mode
        self.handler = handler
        self.thread_name = name
        self._addr = (host, port)
        self._lock = threading.Lock()
        self._records: List[Dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> str:
        """Start serving; the base URL (``http://127.0.0.1:PORT``)."""
        self._server = ThreadingHTTPServer(self._addr, type("Handler", (self.handler,), {"mock": self}))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def next_id(self) -> int:
        """1, 2, 3 ... across every request (ids of items the mock makes up)."""
        with self._lock:
            return next(self._ids)

    def record(self, **fields: Any) -> None:
        with self._lock:
            self._records.append(fields)

    @property
    def records(self) -> List[Dict[str, Any]]:
        """A copy of one dict per request so far."""
        with self._lock:
            return [dict(r) for r in self._records]
