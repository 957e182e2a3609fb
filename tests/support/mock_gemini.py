"""A stdlib-only mock of the Gemini API on 127.0.0.1, for driving the *real* Gemini CLI.

Point gemini 0.61.0 at it with ``GOOGLE_GEMINI_BASE_URL=<base_url>`` and ``GEMINI_API_KEY=<anything>``; headless it
also needs ``GEMINI_CLI_TRUST_WORKSPACE=true`` and ``$HOME/.gemini/settings.json`` selecting the auth type
(:func:`write_settings`).

Behaviour (modelled on tests/data/reference/README.md): ``POST /v1beta/models/<model>:generateContent`` and
``:streamGenerateContent?alt=sse`` (Server-Sent Events, one ``data:`` chunk per part) answer with
``usageMetadata`` (``promptTokenCount`` includes ``cachedContentTokenCount``; ``candidatesTokenCount`` excludes
``thoughtsTokenCount``; ``totalTokenCount`` = prompt + candidates + thoughts + ``toolUsePromptTokenCount``):

* a routing request (asks for JSON: ``responseMimeType`` ``application/json``) gets ``{"reasoning",
  "model_choice": "flash", "complexity_reasoning", "complexity_score": 10}`` (flash, for either classifier),
  usage 100 / 0 / 5 / 0, total 105;
* mode ``text``: "All done.", usage prompt 1200, cached 300, candidates 40, thoughts 10, total 1250;
* mode ``tool`` (default): while the conversation holds no ``functionResponse``, the text "Running it." plus a
  ``functionCall`` — ``run_shell_command`` ``echo tool-ran`` when the request offers that tool (``--approval-mode
  yolo``), else ``list_directory`` ``.`` — usage 1000 / 200 / 30 / 5, total 1035; after it "The command printed
  tool-ran.", usage 1100 / 1000 / 12 / 3 + tool-use prompt 7, total 1122;
* modes ``401 429 500 503``: that status with a Google error body.

Markers in the user text (``[mock:text]``, ``[mock:401]`` ...) override the default per request.
:attr:`MockGemini.records` holds one dict per request (model, method, status, mode); headers and bodies are never
recorded (only whether an API key header was present).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional

from tests.support.mock_http import JsonHandler, MockServer

MODES = ("text", "tool", "401", "429", "500", "503")
# prompt, cached, candidates, thoughts, tool-use prompt
ROUTER = (100, 0, 5, 0, 0)
TEXT = (1200, 300, 40, 10, 0)
TOOL = ((1000, 200, 30, 5, 0), (1100, 1000, 12, 3, 7))
_MARKER = re.compile(r"\[mock:([a-z0-9]+)\]")
_ERRORS = {401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key. (mock)"),
           429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota). (mock)"),
           500: ("INTERNAL", "An internal error has occurred. (mock)"),
           503: ("UNAVAILABLE", "The model is overloaded. Please try again later. (mock)")}
_PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")


def usage(numbers) -> Dict[str, int]:
    prompt, cached, candidates, thoughts, tool = numbers
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts + tool}
    if cached:
        meta["cachedContentTokenCount"] = cached
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if tool:
        meta["toolUsePromptTokenCount"] = tool
    return meta


def write_settings(home: str, max_attempts: Optional[int] = None) -> str:
    """``HOME/.gemini/settings.json`` selecting API-key auth (and bounding the CLI's retries); returns its path."""
    settings: Dict[str, Any] = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    if max_attempts is not None:
        settings["general"] = {"maxAttempts": max_attempts}
    path = os.path.join(home, ".gemini", "settings.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings, f)
    return path


class MockGemini(MockServer):
    """The mock (see the module docstring); ``mode`` is the default behaviour, one of :data:`MODES`."""

    def __init__(self, mode: str = "tool", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, MODES, mode, host, port, name="mock-gemini")


def _user_texts(body: Dict[str, Any]) -> List[str]:
    return [p["text"] for c in body.get("contents") or [] if isinstance(c, dict) and c.get("role") == "user"
            for p in c.get("parts") or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _answered(body: Dict[str, Any]) -> bool:
    return any(isinstance(p, dict) and "functionResponse" in p
               for c in body.get("contents") or [] if isinstance(c, dict) for p in c.get("parts") or [])


def _offered(body: Dict[str, Any]) -> List[str]:
    return [d.get("name") for t in body.get("tools") or [] if isinstance(t, dict)
            for d in t.get("functionDeclarations") or [] if isinstance(d, dict)]


class _Handler(JsonHandler):
    mock: MockGemini

    def do_GET(self) -> None:
        self.mock.record(method="GET", path=self.path, status=200)
        self.send_json(200, {"models": []})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        found = _PATH.match(path)
        if not found:
            self.mock.record(method="POST", path=path, status=404)
            self.send_json(404, {"error": {"code": 404, "message": "not found (mock)", "status": "NOT_FOUND"}})
            return
        model, method = found.groups()
        markers = [m for t in _user_texts(body) for m in _MARKER.findall(t) if m in MODES]
        mode = markers[-1] if markers else self.mock.mode
        config = body.get("generationConfig") or {}
        routing = config.get("responseMimeType") == "application/json"
        record = dict(method=method, model=model, mode="router" if routing else mode,
                      has_api_key=bool(self.headers.get("x-goog-api-key") or "key=" in self.path))
        if mode.isdigit() and not routing:
            status = int(mode)
            self.mock.record(status=status, **record)
            code, message = _ERRORS[status]
            self.send_json(status, {"error": {"code": status, "message": message, "status": code}})
            return
        self.mock.record(status=200, **record)
        if routing:
            # both router classifiers of 0.61.0 read their keys from the one answer (unknown keys are ignored)
            parts: List[Dict[str, Any]] = [{"text": json.dumps({
                "reasoning": "A simple task (mock).", "model_choice": "flash",
                "complexity_reasoning": "A simple task (mock).", "complexity_score": 10})}]
            numbers = ROUTER
        elif mode == "text":
            parts, numbers = [{"text": "All done."}], TEXT
        elif not _answered(body):
            if "run_shell_command" in _offered(body):
                call = {"name": "run_shell_command", "args": {"command": "echo tool-ran",
                                                              "description": "Echo a marker"}}
            else:
                call = {"name": "list_directory", "args": {"dir_path": "."}}
            parts, numbers = [{"text": "Running it."}, {"functionCall": call}], TOOL[0]
        else:
            parts, numbers = [{"text": "The command printed tool-ran."}], TOOL[1]
        if method == "generateContent":
            self.send_json(200, {"candidates": [{"content": {"role": "model", "parts": parts},
                                                  "finishReason": "STOP", "index": 0}],
                                  "usageMetadata": usage(numbers), "modelVersion": model})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            chunk: Dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0,
                                                     **({"finishReason": "STOP"} if last else {})}],
                                     "modelVersion": model}
            if last:
                chunk["usageMetadata"] = usage(numbers)
            self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            self.wfile.flush()
        self.close_connection = True
