"""A stdlib-only mock of the OpenAI Responses API on 127.0.0.1, for driving the *real* Codex CLI.

Point codex-cli 0.171.0 at it with a model provider (it ignores ``OPENAI_BASE_URL``): ``-c model_provider="mock"``,
``model_providers.mock.base_url = "<base_url>/v1"``, ``env_key = "OPENAI_API_KEY"``, ``wire_api = "responses"``
(orchestrator-pex writes these when an instance's ``env`` sets ``OPENAI_BASE_URL``), and an existing ``CODEX_HOME``.

Behaviour (modelled on tests/data/reference/README.md): ``POST /v1/responses`` with ``"stream": true`` answers with
Server-Sent Events ``response.created``, ``response.output_item.added``/``.done`` per output item, text deltas and
``response.completed`` whose ``usage`` follows the Responses API (``input_tokens`` includes
``input_tokens_details.cached_tokens`` and ``cache_write_tokens``; ``output_tokens`` includes
``output_tokens_details.reasoning_tokens``):

* mode ``text``: the message "All done.", usage input 1200, cached 300, cache write 100, output 40, reasoning 10;
* mode ``tool`` (default): while the request holds no ``function_call_output`` item, a function call
  ``exec_command`` ``{"cmd": "echo tool-ran"}`` (codex-cli 0.171.0 offers its tools inside a code-mode namespace
  but routes this call to its shell: a ``command_execution`` item), usage 1000 / 200 / 150 / 30 / 5; after it,
  the message "The command printed tool-ran.", usage 1100 / 1000 / 50 / 12 / 3;
* modes ``401 429 500 503``: that status with an OpenAI error body.

Per-request choice: markers in the request's text (``[mock:text]``, ``[mock:tool]``, ``[mock:401]`` ...) override
the default, so one server serves a mixed batch. Other paths: GET -> 200 ``{"data": []}``, POST -> 404.
:attr:`MockOpenAI.records` holds one dict per request (path, status, mode, tool names offered); request headers
and bodies are never recorded (only whether an ``authorization`` header was present).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any, Dict, List

from tests.support.mock_http import JsonHandler, MockServer

MODES = ("text", "tool", "401", "429", "500", "503")
TEXT_USAGE = (1200, 300, 100, 40, 10)  # input, cached, cache write, output, reasoning
TOOL_USAGE = ((1000, 200, 150, 30, 5), (1100, 1000, 50, 12, 3))
SHELL_TOOL = "exec_command"  # codex-cli 0.171.0 runs it as a shell command (a command_execution item)
_MARKER = re.compile(r"\[mock:([a-z0-9]+)\]")
_ERRORS = {401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: mock."),
           429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached (mock)."),
           500: ("server_error", None, "The server had an error (mock)."),
           503: ("server_error", None, "The engine is currently overloaded (mock).")}


def usage(numbers) -> Dict[str, Any]:
    inp, cached, written, out, reasoning = numbers
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def _texts(obj: Any) -> List[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [t for x in obj for t in _texts(x)]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() if k in ("input", "content", "text") for t in _texts(v)]
    return []


class MockOpenAI(MockServer):
    """The mock (see the module docstring); ``mode`` is the default behaviour, one of :data:`MODES`."""

    def __init__(self, mode: str = "tool", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, MODES, mode, host, port, name="mock-openai")


class _Handler(JsonHandler):
    mock: MockOpenAI

    def do_GET(self) -> None:
        self.mock.record(path=self.path, method="GET", status=200)
        self.send_json(200, {"object": "list", "data": []})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not path.endswith("/responses"):
            self.mock.record(path=self.path, method="POST", status=404)
            self.send_json(404, {"error": {"message": "not found (mock)", "type": "invalid_request_error"}})
            return
        markers = [m for t in _texts(body.get("input")) for m in _MARKER.findall(t) if m in MODES]
        mode = markers[-1] if markers else self.mock.mode
        offered = [t.get("name") or t.get("type") for t in body.get("tools") or [] if isinstance(t, dict)]
        record = dict(path=self.path, method="POST", mode=mode, tools=offered,
                      has_api_key=bool(self.headers.get("authorization")))
        if mode.isdigit():
            status = int(mode)
            etype, code, message = _ERRORS[status]
            self.mock.record(status=status, **record)
            self.send_json(status, {"error": {"message": message, "type": etype, "param": None, "code": code}})
            return
        self.mock.record(status=200, **record)
        items = body.get("input") or []
        answered = any(isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")
                       for i in items)
        shell = os.environ.get("MOCK_OPENAI_SHELL", SHELL_TOOL)
        if mode == "tool" and not answered:
            self._stream(self._function_call(shell), usage(TOOL_USAGE[0]))
        elif mode == "tool":
            self._stream(self._message("The command printed tool-ran."), usage(TOOL_USAGE[1]))
        else:
            self._stream(self._message("All done."), usage(TEXT_USAGE))

    def _message(self, text: str) -> Dict[str, Any]:
        return {"type": "message", "id": f"msg_mock_{self.mock.next_id()}", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}

    def _function_call(self, tool: str) -> Dict[str, Any]:
        if tool == "shell":
            arguments: Dict[str, Any] = {"command": ["bash", "-lc", "echo tool-ran"]}
        elif tool == "exec_command":
            arguments = {"cmd": "echo tool-ran"}
        else:
            arguments = {"command": "echo tool-ran"}
        return {"type": "function_call", "id": f"fc_mock_{self.mock.next_id()}", "status": "completed",
                "call_id": f"call_mock_{self.mock.next_id()}", "name": tool, "arguments": json.dumps(arguments)}

    def _stream(self, item: Dict[str, Any], use: Dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        rid = f"resp_mock_{self.mock.next_id()}"
        response = {"id": rid, "object": "response", "status": "in_progress", "output": []}
        seq = itertools.count()

        def event(kind: str, **payload: Any) -> None:
            data = json.dumps({"type": kind, "sequence_number": next(seq), **payload})
            self.wfile.write(f"event: {kind}\ndata: {data}\n\n".encode())
            self.wfile.flush()

        event("response.created", response=response)
        event("response.in_progress", response=response)
        event("response.output_item.added", output_index=0, item={**item, "status": "in_progress"})
        if item["type"] == "message":
            text = item["content"][0]["text"]
            event("response.content_part.added", item_id=item["id"], output_index=0, content_index=0,
                  part={"type": "output_text", "text": "", "annotations": []})
            event("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0, delta=text)
            event("response.output_text.done", item_id=item["id"], output_index=0, content_index=0, text=text)
            event("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                  part=item["content"][0])
        event("response.output_item.done", output_index=0, item=item)
        event("response.completed", response={**response, "status": "completed", "output": [item], "usage": use})
        self.close_connection = True
