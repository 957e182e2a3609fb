"""The mock API itself: its wire format (no CLI needed), and -- with the real CLI -- that the CLI's transcripts have
the shape of the reference transcripts of Claude Code 2.1.330 (tests/data/reference/claude-code-2.1.330, a copy of
../shared/reference), whose essentials are written out here so the test does not depend on that directory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest


def _post(url, body, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "x-api-key": "k"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def _sse(text):
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _conv(text, tool_results=0):
    msgs = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    for i in range(tool_results):
        msgs.append({"role": "assistant",
                     "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {}}]})
        msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "x"}]})
    return {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 100, "messages": msgs}


def test_stream_tool_answer_then_text(e2e):
    with e2e.MockAnthropic() as mock:
        status, headers, body = _post(mock.base_url + "/v1/messages?beta=true", _conv("run echo"))
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        events = _sse(body)
        names = [n for n, _ in events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        start = events[0][1]["message"]
        assert start["usage"] == {"input_tokens": 1200, "cache_creation_input_tokens": 300,
                                  "cache_read_input_tokens": 5000, "output_tokens": 1}
        blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
        assert blocks == ["text", "tool_use"]
        partial = "".join(d["delta"]["partial_json"] for n, d in events
                          if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
        assert json.loads(partial)["command"] == "echo tool-ran"
        delta = events[-2][1]
        assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 40
        # after the tool result: text only, output 9
        _, _, body = _post(mock.base_url + "/v1/messages", _conv("run echo", tool_results=1))
        events = _sse(body)
        assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["text"]
        assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-2][1]["usage"]["output_tokens"] == 9
        assert mock.counts["messages"] == 2 and mock.counts["mode:tool"] == 2


@pytest.mark.parametrize("status,etype", [(401, "authentication_error"), (429, "rate_limit_error"),
                                          (529, "overloaded_error"), (500, "api_error")])
def test_error_markers(e2e, status, etype):
    with e2e.MockAnthropic() as mock:
        got, headers, body = _post(mock.base_url + "/v1/messages", _conv(f"x [mock:{status}]"))
        assert got == status
        assert json.loads(body)["type"] == "error" and json.loads(body)["error"]["type"] == etype
        assert headers.get("request-id")
        assert ("retry-after" in headers) == (status == 429)
        assert "x-should-retry" not in headers
        _, headers, _ = _post(mock.base_url + "/v1/messages", _conv(f"x [mock:{status}] [mock:noretry]"))
        assert headers.get("x-should-retry") == "false"
        assert mock.counts[f"status:{status}"] == 2


def test_text_json_count_tokens_and_probes(e2e):
    with e2e.MockAnthropic(mode="text") as mock:
        body = dict(_conv("hello"), stream=False)
        status, _, text = _post(mock.base_url + "/v1/messages", body)
        msg = json.loads(text)
        assert status == 200 and [b["type"] for b in msg["content"]] == ["text"]
        assert msg["usage"]["output_tokens"] == 9 and msg["stop_reason"] == "end_turn"
        assert json.loads(_post(mock.base_url + "/v1/messages/count_tokens", body)[2]) == {"input_tokens": 1200}
        with urllib.request.urlopen(mock.base_url + "/v1/models", timeout=5) as r:
            assert json.loads(r.read())["data"] == []
        assert _post(mock.base_url + "/nope", {})[0] == 404
        req = urllib.request.Request(mock.base_url + "/v1/messages", data=b"not json", method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 400
        assert mock.counts["count_tokens"] == 1 and mock.counts["messages"] == 1


def test_delay_marker_and_hang_released_by_stop(e2e):
    mock = e2e.MockAnthropic()
    mock.start()
    try:
        assert _post(mock.base_url + "/v1/messages", _conv("x [mock:text] [mock:delay=0.3]"))[0] == 200
        assert [(r["mode"], r["delay"]) for r in mock.records] == [("text", 0.3)]
        outcome = []
        t = threading.Thread(target=lambda: outcome.append(
            _safe(lambda: _post(mock.base_url + "/v1/messages", _conv("x [mock:hang]"), timeout=30))))
        t.start()
        while mock.counts.get("mode:hang", 0) == 0:
            time.sleep(0.02)
    finally:
        mock.stop()
    t.join(10)
    assert not t.is_alive() and outcome and outcome[0] == "error"  # stop() ends the hanging answer


def _safe(fn):
    try:
        fn()
        return "answered"
    except Exception:  # noqa: BLE001 - any failure to answer is the outcome being classified
        return "error"


def test_script_mode_port_file(e2e, tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, str(e2e.MOCK_PATH), "--port-file", str(port_file), "--mode", "text"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert proc.stdout.readline().strip() == url
        assert _post(url + "/v1/messages", _conv("hi"))[0] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert json.loads(err.strip().splitlines()[-1])["messages"] == 1


# -- the real CLI against the mock: transcript shapes of the reference ------------------------------------------

REFERENCE = {
    # prompt marker -> (event kinds, exit status, result fields)
    "tool": (["system/init", "assistant", "assistant", "user", "assistant", "result/success"], 0,
             {"is_error": False, "num_turns": 2, "total_cost_usd": 0.013185, "api_error_status": None,
              "usage": (2400, 600, 10000, 49)}),
    "401": (["system/init", "system/api_retry", "assistant", "result/success"], 1,
            {"is_error": True, "num_turns": 1, "total_cost_usd": 0, "api_error_status": 401,
             "usage": (0, 0, 0, 0)}),
    "529": (["system/init", "system/api_retry", "assistant", "result/success"], 1,
            {"is_error": True, "num_turns": 1, "total_cost_usd": 0, "api_error_status": 529,
             "usage": (0, 0, 0, 0)}),
}


@pytest.mark.e2e
@pytest.mark.parametrize("marker", sorted(REFERENCE))
def test_cli_transcript_has_reference_shape(e2e, claude_bin, marker):
    kinds, code, fields = REFERENCE[marker]
    with e2e.MockAnthropic() as mock, tempfile.TemporaryDirectory() as home:
        env = e2e.clean_env(dict(e2e.cli_base_env(mock.base_url), HOME=home, ANTHROPIC_API_KEY="dummy"))
        proc = subprocess.run([claude_bin, "-p", f"run echo [mock:{marker}]", "--output-format", "stream-json",
                               "--verbose", "--allowedTools", "Bash", "--model", "claude-sonnet-4-5"],
                              env=env, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    got = [e["type"] + (f"/{e['subtype']}" if e.get("subtype") else "") for e in events]
    assert (got, proc.returncode) == (kinds, code), proc.stderr[-2000:]
    result = events[-1]
    usage = result["usage"]
    assert (usage["input_tokens"], usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"],
            usage["output_tokens"]) == fields["usage"]
    for key in ("is_error", "num_turns", "api_error_status"):
        assert result[key] == fields[key], key
    assert result["total_cost_usd"] == pytest.approx(fields["total_cost_usd"], abs=1e-9)
    if marker != "tool":
        retry = events[1]
        assert retry["attempt"] == 1 and retry["max_retries"] == 1 and retry["error_status"] == int(marker)
        assert events[2]["is_api_error_message"] is True and events[2]["api_error_status"] == int(marker)
