"""A stdlib-only mock of the Anthropic Messages API on 127.0.0.1, for driving the *real* Claude Code CLI.

Point the CLI at it with ``ANTHROPIC_BASE_URL=<base_url>`` and ``ANTHROPIC_API_KEY=<anything>``.

Behaviour (modelled on tests/data/reference/README.md):

* Every model answer reports usage input 1200, cache creation 300, cache read 5000 (``message_start``).
* Mode ``tool`` (default): an answer to a conversation holding fewer than N ``tool_result`` blocks (N = 1, or
  ``[mock:tools=N]``) is a text block "Let me run it." plus a Bash ``tool_use`` (``echo tool-ran``), output 40,
  stop_reason ``tool_use``; once N tool results are present the answer is the text "All done.", output 9,
  stop_reason ``end_turn``. The decision is made from the request alone (stateless), so any number of concurrent
  conversations can share one server. With the real CLI 2.1.330 a default run totals input 2400, cache creation
  600, cache read 10000, output 49, i.e. $0.013185 for claude-sonnet-4-5.
* Mode ``text``: always the text "All done.", output 9.
* Modes ``400 401 403 404 413 429 500 529``: that HTTP status with an Anthropic error JSON body
  ``{"type":"error","error":{"type":<authentication_error|rate_limit_error|overloaded_error|...>,
  "message":"mock <type>"},"request_id":...}`` and a ``request-id`` header; 429 adds ``retry-after: 1`` and
  ``anthropic-ratelimit-requests-*`` headers. As in the reference transcripts, no ``x-should-retry`` header is
  sent, so the CLI retries (``system``/``api_retry`` events) up to ``CLAUDE_CODE_MAX_RETRIES`` (default 10, with
  exponential backoff: minutes!) -- set ``CLAUDE_CODE_MAX_RETRIES=1`` in the CLI's environment to reproduce the
  reference 401/529 transcripts in ~1.5 s. ``noretry`` (``[mock:noretry]`` / ``--noretry``) adds
  ``x-should-retry: false``, which makes the CLI give up on the first error without any api_retry event.
* Mode ``hang``: never answers (until the server stops). Mode ``stall``: sends headers and ``message_start``,
  then nothing more (a stream that stalls mid-answer). ``[mock:hang_after=N]``: answer normally until the
  conversation holds N tool results, then hang (e.g. N=1: the tool-use answer arrives, the final one never does).
* A delay (seconds) before each model answer: ``delay=`` argument / ``--delay`` / ``[mock:delay=S]``.

Per-request choice: markers in the *user* text of the conversation override the server defaults, so one
server serves a mixed batch: ``[mock:text]``, ``[mock:tool]``, ``[mock:tools=3]``, ``[mock:401]``,
``[mock:429]``, ``[mock:529]``, ``[mock:500]``, ``[mock:hang]``, ``[mock:stall]``, ``[mock:delay=3]``,
``[mock:noretry]``, ``[mock:hang_after=1]``
(several may be combined, e.g. ``[mock:text] [mock:delay=0.5]``). Markers persist through the conversation
because the CLI resends the whole conversation on each request.

Required key: ``MockAnthropic(api_key=KEY)`` (script: ``--api-key-file F``, the key read from a file so it is in no
argv) answers every ``POST`` with 401 ``authentication_error`` (and ``x-should-retry: false``) unless the request's
``x-api-key`` header, or ``authorization: Bearer ...``, equals KEY; records then carry ``key_ok`` and
:attr:`MockAnthropic.counts` ``rejected_key``. Without it any key (or none) is accepted.

Other endpoints: ``POST /v1/messages/count_tokens`` -> ``{"input_tokens": 1200}``; ``GET /v1/models`` -> an
empty model list; any other GET/HEAD -> 200 ``{}``; other POSTs -> 404 ``not_found_error``. Non-streaming
``/v1/messages`` requests (``"stream"`` absent/false) get the same answer as one JSON message.

Counting: :attr:`MockAnthropic.counts` (a snapshot dict: ``total``, ``messages``, ``count_tokens``, ``other``,
``status:<code>``, ``mode:<mode>``) and :attr:`MockAnthropic.records` (one dict per request). Request
headers and bodies are never recorded (only whether an ``x-api-key``/``authorization`` header was present), so
API keys cannot leak into test output.

Module use::

    with MockAnthropic(delay=0) as mock:
        env["ANTHROPIC_BASE_URL"] = mock.base_url

Script use (benches)::

    python tests/support/mock_anthropic.py --port-file F [--delay S] [--mode tool|text|401|...] [--port P]

writes the port to F (atomically) once listening, prints the base URL on stdout, and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

USAGE_INPUT = 1200
USAGE_CACHE_CREATION = 300
USAGE_CACHE_READ = 5000
OUTPUT_TOOL_ANSWER = 40
OUTPUT_TEXT_ANSWER = 9
TOOL_COMMAND = "echo tool-ran"
TOOL_TEXT = "Let me run it."
FINAL_TEXT = "All done."

# HTTP status -> Anthropic error type
ERRORS: Dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
MODES = ("tool", "text", "hang", "stall") + tuple(str(s) for s in ERRORS)
_MARKER = re.compile(r"\[mock:([a-z0-9_]+)(?:=([0-9.]+))?\]")


class Behaviour:
    """What to do for one /v1/messages request: mode, delay (s), number of tool rounds."""

    __slots__ = ("mode", "delay", "tools", "noretry", "hang_after")

    def __init__(self, mode: str, delay: float, tools: int, noretry: bool = False,
                 hang_after: Optional[int] = None) -> None:
        self.mode, self.delay, self.tools, self.noretry = mode, delay, tools, noretry
        self.hang_after = hang_after


def _user_texts(body: Dict[str, Any]) -> List[str]:
    """All text the user side of the conversation carries (string contents and text blocks)."""
    out: List[str] = []
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text":
                    out.append(str(block.get("text", "")))
    return out


def _tool_results(body: Dict[str, Any]) -> int:
    """Number of tool_result blocks in the conversation (how many tool rounds already happened)."""
    n = 0
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            n += sum(1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    return n


def choose(body: Dict[str, Any], default: Behaviour) -> Behaviour:
    """Resolve the behaviour for a request: server defaults overridden by ``[mock:...]`` markers."""
    mode, delay, tools, noretry = default.mode, default.delay, default.tools, default.noretry
    hang_after = default.hang_after
    for text in _user_texts(body):
        for name, value in _MARKER.findall(text):
            if name == "delay" and value:
                delay = float(value)
            elif name == "tools" and value:
                mode, tools = "tool", int(float(value))
            elif name == "noretry":
                noretry = True
            elif name == "hang_after" and value:
                hang_after = int(float(value))
            elif name in MODES:
                mode = name
    if hang_after is not None and _tool_results(body) >= hang_after:
        mode = "hang"
    return Behaviour(mode, delay, tools, noretry, hang_after)


def _usage(output: int) -> Dict[str, int]:
    return {
        "input_tokens": USAGE_INPUT,
        "cache_creation_input_tokens": USAGE_CACHE_CREATION,
        "cache_read_input_tokens": USAGE_CACHE_READ,
        "output_tokens": output,
    }


class MockAnthropic:
    """The mock server. ``start()`` returns ``base_url``; ``stop()`` wakes sleeping handlers and shuts down."""

    def __init__(self, mode: str = "tool", delay: float = 0.0, tools: int = 1, noretry: bool = False,
                 host: str = "127.0.0.1", port: int = 0, api_key: Optional[str] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self.api_key = api_key
        self.default = Behaviour(mode, float(delay), int(tools), bool(noretry))
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = {}
        self._records: List[Dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"mock": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-anthropic", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MockAnthropic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- accounting ------------------------------------------------------------------------------------------
    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(self, kind: str, **fields: Any) -> None:
        with self._lock:
            for key in ("total", kind) + tuple(f"{k}:{v}" for k, v in fields.items() if k in ("status", "mode")):
                self._counts[key] = self._counts.get(key, 0) + 1
            self._records.append(dict(kind=kind, t=time.time(), **fields))

    @property
    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def records(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records]

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._records.clear()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; returns False when interrupted by stop()."""
        return not self._stopping.wait(seconds) if seconds > 0 else not self._stopping.is_set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-anthropic/1"
    mock: MockAnthropic  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("MOCK_ANTHROPIC_VERBOSE"):
            sys.stderr.write("mock-anthropic: " + (format % args) + "\n")

    # -- plumbing --------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, obj: Any, extra: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_mock_{self.mock.next_id()}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, name: str, payload: Dict[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    # -- verbs -----------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.mock.record("other", method="HEAD", path=self.path, status=200)
        self._send_json(200, {})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.mock.record("other", method="GET", path=self.path, status=200)
        if path.rstrip("/") == "/v1/models":
            self._send_json(200, {"data": [], "has_more": False, "first_id": None, "last_id": None})
        else:
            self._send_json(200, {})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self.mock.record("other", method="POST", path=self.path, status=400)
            self._send_json(400, _error_body("invalid_request_error", f"mock: bad JSON: {exc}"))
            return
        if not self._key_ok():
            self.mock.record("rejected_key", method="POST", path=self.path, status=401, key_ok=False)
            self._send_json(401, _error_body("authentication_error", "mock: invalid x-api-key"),
                            {"x-should-retry": "false"})
            return
        if path == "/v1/messages/count_tokens":
            self.mock.record("count_tokens", method="POST", path=self.path, status=200)
            self._send_json(200, {"input_tokens": USAGE_INPUT})
        elif path == "/v1/messages":
            self._messages(body)
        else:
            self.mock.record("other", method="POST", path=self.path, status=404)
            self._send_json(404, _error_body("not_found_error", f"mock: no route {path}"))

    def _key_ok(self) -> bool:
        want = self.mock.api_key
        if not want:
            return True
        auth = self.headers.get("authorization") or ""
        return self.headers.get("x-api-key") == want or auth == f"Bearer {want}"

    # -- /v1/messages ----------------------------------------------------------------------------------------
    def _messages(self, body: Dict[str, Any]) -> None:
        b = choose(body, self.mock.default)
        model = str(body.get("model") or "claude-sonnet-4-5")
        stream = bool(body.get("stream"))
        rounds = _tool_results(body)
        status = int(b.mode) if b.mode.isdigit() else 200
        self.mock.record("messages", method="POST", path=self.path, status=status, mode=b.mode, model=model,
                         stream=stream, delay=b.delay, tool_rounds=rounds,
                         has_api_key=bool(self.headers.get("x-api-key") or self.headers.get("authorization")),
                         key_ok=self._key_ok())
        if not self.mock.sleep(b.delay):
            return
        if b.mode == "hang":
            self.mock.sleep(10 ** 6)
            self.close_connection = True
            return
        if status != 200:
            self._error(status, b.noretry)
            return
        tool = b.mode in ("tool", "stall") and rounds < b.tools
        msg_id = f"msg_mock_{self.mock.next_id()}"
        blocks: List[Dict[str, Any]] = [{"type": "text", "text": TOOL_TEXT if tool else FINAL_TEXT}]
        if tool:
            blocks.append({"type": "tool_use", "id": f"toolu_mock_{self.mock.next_id()}", "name": "Bash",
                           "input": {"command": TOOL_COMMAND, "description": "Echo"}})
        output = OUTPUT_TOOL_ANSWER if tool else OUTPUT_TEXT_ANSWER
        stop_reason = "tool_use" if tool else "end_turn"
        if not stream:
            self._send_json(200, {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                  "content": blocks, "stop_reason": stop_reason, "stop_sequence": None,
                                  "usage": _usage(output)})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", f"req_mock_{self.mock.next_id()}")
        self.end_headers()
        try:
            self._event("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": _usage(1)}})
            if b.mode == "stall":
                self.mock.sleep(10 ** 6)
                self.close_connection = True
                return
            self._event("ping", {"type": "ping"})
            for index, block in enumerate(blocks):
                if block["type"] == "text":
                    self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {"type": "text", "text": ""}})
                    self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "text_delta", "text": block["text"]}})
                else:
                    start = dict(block, input={})
                    self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": start})
                    partial = json.dumps(block["input"])
                    for piece in (partial[: len(partial) // 2], partial[len(partial) // 2:]):
                        self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                            "delta": {"type": "input_json_delta",
                                                                      "partial_json": piece}})
                self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            self._event("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                          "usage": {"output_tokens": output}})
            self._event("message_stop", {"type": "message_stop"})
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _error(self, status: int, noretry: bool) -> None:
        etype = ERRORS.get(status, "api_error")
        headers: Dict[str, str] = {}
        if noretry:
            headers["x-should-retry"] = "false"
        if status == 429:
            headers.update({"retry-after": "1",
                            "anthropic-ratelimit-requests-limit": "50",
                            "anthropic-ratelimit-requests-remaining": "0",
                            "anthropic-ratelimit-requests-reset": "1970-01-01T00:00:00Z"})
        self._send_json(status, _error_body(etype, f"mock {etype}"), headers)


def _error_body(etype: str, message: str) -> Dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_mock_error"}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--port-file", help="write the listening port here (atomically) once ready")
    ap.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (default: any free port)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each model answer")
    ap.add_argument("--mode", default="tool", choices=MODES, help="default behaviour (markers override)")
    ap.add_argument("--tools", type=int, default=1, help="tool rounds per conversation in tool mode")
    ap.add_argument("--noretry", action="store_true", help="send x-should-retry: false with error answers")
    ap.add_argument("--api-key-file", help="401 unless x-api-key equals the key in this file (first line)")
    args = ap.parse_args(argv)
    api_key = None
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as fh:
            api_key = fh.readline().strip() or None
    mock = MockAnthropic(mode=args.mode, delay=args.delay, tools=args.tools, noretry=args.noretry,
                         port=args.port, api_key=api_key)
    mock.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{mock.port}\n")
        os.replace(tmp, args.port_file)
    print(mock.base_url, flush=True)
    while not done.wait(0.5):
        pass
    mock.stop()
    print(json.dumps(mock.counts, sort_keys=True), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
