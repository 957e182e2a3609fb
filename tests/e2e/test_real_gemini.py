"""The orchestrator driving the real Gemini CLI 0.61.0 (from npm) against the mock Gemini API.

The oracle is Gemini CLI itself: each record's tokens must equal, in the orchestrator's disjoint schema, the
``stats`` of its own final ``result`` event (total = the CLI's ``total_tokens``; ``agent_usage`` is ``stats``
verbatim); models, session and tools likewise. Absolute values pin tests/data/reference/gemini-0.61.0.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

ROUTED_TOOL = {"input": 1000, "output": 62, "cache_creation": 0, "cache_read": 1200, "total": 2262}
PINNED_TEXT = {"input": 900, "output": 50, "cache_creation": 0, "cache_read": 300, "total": 1250}
YOLO_TOOL = {"input": 900, "output": 57, "cache_creation": 0, "cache_read": 1200, "total": 2157}
PROMPT = "Run the shell command `echo tool-ran` and tell me what it printed."


@pytest.fixture(scope="module")
def gemini_run(e2e, gemini_bin, mock_gemini_api, run_orchestrator, tmp_path_factory):
    flash = {"model": "gemini-2.5-flash"}
    return e2e.run_agent_batch(
        run_orchestrator, mock_gemini_api, e2e.gemini_instance, tmp_path_factory.mktemp("gemini"), "gemini",
        gemini_bin, {"timeout": 120},
        [
            ("routed-tool", PROMPT, {}),
            ("pinned-text", "say hello [mock:text]", flash),
            ("yolo-shell", PROMPT, {**flash, "permission_mode": "bypassPermissions"}),
            ("server-error", "anything [mock:500]", {**flash, "retries": 1}),
            ("unauthorized", "anything [mock:401]", flash),  # last: a 401 stops further launches
        ],
    )


def test_gemini_numbers_equal_what_gemini_reported(e2e, gemini_run):
    records = gemini_run.records
    for name, expected in (("routed-tool", ROUTED_TOOL), ("pinned-text", PINNED_TEXT), ("yolo-shell", YOLO_TOOL)):
        record = records[name]
        assert record["status"] == "succeeded", gemini_run.explain()
        said = e2e.gemini_report(e2e.read_events(gemini_run.log_path(record)))
        assert said["status"] == "success"
        assert record["tokens"] == e2e.normalized_gemini(said["stats"]) == expected
        assert record["tokens"]["total"] == said["stats"]["total_tokens"]
        assert record["agent_usage"] == said["stats"]
        assert record["models"] == sorted(said["stats"]["models"])
        assert record["session_id"] == said["session_id"]
        assert record["tools"] == said["tools"]
        assert record["cost_source"] == "estimate"
    assert records["routed-tool"]["tools"] == {"list_directory": 1}
    assert len(records["routed-tool"]["models"]) == 2  # the router model is counted under its own name
    assert records["yolo-shell"]["tools"] == {"run_shell_command": 1}
    assert records["pinned-text"]["model"] == "gemini-2.5-flash"


def test_gemini_api_errors_are_typed_and_retried(e2e, gemini_run):
    records = gemini_run.records
    failed = records["server-error"]
    assert failed["status"] == "api-error" and failed["api_error_status"] == 500
    assert failed["attempts"] == 2 and failed["exit_code"] == 500 & 255
    denied = records["unauthorized"]
    assert denied["status"] == "api-error" and denied["api_error_status"] == 401 and denied["attempts"] == 1
    assert denied["tokens"]["total"] == 0
    assert all(r["has_api_key"] for r in gemini_run.mock_records if r.get("method") != "GET")


def test_gemini_versions_and_headless_env(gemini_run):
    assert gemini_run.doc["agent_versions"] == {"gemini": "0.61.0"}
    assert gemini_run.code == 1
