"""End-to-end fixtures: the real Claude Code CLI (pinned, from npm) against the mock Anthropic API.

* ``claude_bin`` (session): runs ``scripts/install-claude`` and returns the native ``claude`` path. The tests are
  skipped -- with that reason -- only when npm is missing; any other install failure fails them.
* ``mock_api``: a fresh :class:`MockAnthropic` on 127.0.0.1 (per test module), so request counts are exact.
* ``run_orchestrator(batch_path, *args, env=...)``: ``python -m orchestrator_pex run BATCH --json --results-dir``
  from the repository root; returns :class:`E2ERun` (exit code, parsed document, stderr).
* helpers to read what the CLI itself reported (its ``result`` events) from an instance's stdout log.

Environment: every CLI gets ``ANTHROPIC_BASE_URL`` (the mock), ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``,
``CLAUDE_CODE_MAX_RETRIES=1`` (the CLI's own retry of 429/529 would otherwise back off for minutes; with 1 the
401/529 transcripts match the reference) and its own temporary ``HOME`` (the CLI writes ``~/.claude.json`` and
``~/.claude/``). Inherited ``ANTHROPIC_*``/``CLAUDE_*`` variables are dropped so a developer's real credentials or
config never reach the mock or the logs. The orchestrator process itself also gets a temporary HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.support import mock_anthropic, mock_gemini, mock_openai

ROOT = Path(__file__).resolve().parents[2]
INSTALL_CLAUDE = ROOT / "scripts" / "install-claude"
MOCK_PATH = ROOT / "tests" / "support" / "mock_anthropic.py"
CLAUDE_VERSION = "2.1.330"


MockAnthropic = mock_anthropic.MockAnthropic
_THIS_MODULE = sys.modules[__name__]  # tests.e2e.conftest (the test folders are packages: no name clash)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives the real Claude Code CLI (installed from npm) against the mock API")


@pytest.fixture(scope="session")
def e2e():
    """This module (helpers: write_batch, cli_base_env, read_events, cli_report, ...), as a fixture."""
    return _THIS_MODULE


@pytest.fixture(scope="session")
def claude_bin() -> str:
    """Absolute path of the pinned real ``claude`` executable (installed once into the user cache)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot install the real Claude Code CLI for end-to-end tests")
    proc = subprocess.run([str(INSTALL_CLAUDE)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == 2 and "npm is not installed" in proc.stderr:
        pytest.skip("npm is not installed: cannot install the real Claude Code CLI for end-to-end tests")
    assert proc.returncode == 0, f"scripts/install-claude failed ({proc.returncode}):\n{proc.stderr}"
    path = proc.stdout.strip().splitlines()[-1]
    assert os.path.isabs(path) and os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="module")
def mock_api():
    with MockAnthropic() as mock:
        yield mock


@pytest.fixture(scope="session")
def api_key() -> str:
    """A recognisable fake API key: it must never show up in results or logs."""
    return f"sk-ant-e2e-{uuid.uuid4().hex}"


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This process's environment minus ANTHROPIC_*/CLAUDE_* and orchestrator settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "ORCHESTRATOR_PEX_", "OPENAI_", "CODEX_", "GEMINI_",
                                "GOOGLE_"))}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TERM"] = "dumb"
    env.update(extra or {})
    return env


def cli_base_env(mock_url: str) -> Dict[str, str]:
    """What every real CLI instance needs to talk to the mock (non-secret; goes into the batch's env table)."""
    return {
        "ANTHROPIC_BASE_URL": mock_url,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def toml_str(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def write_batch(path: Path, top: Dict[str, Any], defaults: Dict[str, Any], instances: List[Dict[str, Any]]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    lines.append("[defaults]")
    lines += [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    for inst in instances:
        lines.append("[[instances]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in inst.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class E2ERun:
    """A finished ``run --json``: ``code``, ``doc`` (parsed stdout or None), ``stderr`` text, ``records`` by name."""

    def __init__(self, proc: subprocess.CompletedProcess, results_dir: Path) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.results_dir = results_dir
        self.e2e = _THIS_MODULE  # the helpers, for code that only holds a run
        try:
            self.doc = json.loads(proc.stdout)
        except ValueError:
            self.doc = None

    def explain(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.stdout[:4000]}\n--- stderr ---\n{self.stderr[-6000:]}"

    @property
    def records(self) -> Dict[str, Dict[str, Any]]:
        assert self.doc is not None, "stdout is not a JSON results document:\n" + self.explain()
        return {r["name"]: r for r in self.doc["instances"]}

    @property
    def run_dir(self) -> Path:
        assert self.doc is not None, self.explain()
        return self.results_dir / self.doc["run_id"]

    def log_path(self, record: Dict[str, Any], key: str = "stdout_log") -> Path:
        p = Path(record[key])
        return p if p.is_absolute() else self.run_dir / p


@pytest.fixture(scope="module")
def run_orchestrator(tmp_path_factory, api_key: str):
    """``run_orchestrator(batch, *args, timeout=300)`` -> :class:`E2ERun` (cwd = repository root)."""
    base = tmp_path_factory.mktemp("orch")
    home = base / "orchestrator-home"
    home.mkdir()

    def run(batch: Path, *args: str, timeout: float = 300) -> E2ERun:
        results = base / f"runs-{uuid.uuid4().hex[:8]}"
        env = clean_env({"HOME": str(home), "ANTHROPIC_API_KEY": api_key, "OPENAI_API_KEY": api_key,
                         "GEMINI_API_KEY": api_key})
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--json", "--results-dir", str(results),
             *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        return E2ERun(proc, results)

    return run


# -- what the CLI itself said -------------------------------------------------------------------------------------


def read_events(path: Path) -> List[Dict[str, Any]]:
    """Every JSON object line of a stream-json log (all attempts, in order)."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    return events


def cli_report(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The numbers the CLI reported: ``result`` events summed over attempts, the last one's identity fields,
    the model of the last ``system/init``, and tool_use blocks (de-duplicated by id) per tool name."""
    results = [e for e in events if e.get("type") == "result"]
    inits = [e for e in events if e.get("type") == "system" and e.get("subtype") == "init"]
    tokens = {"input": 0, "output": 0, "cache_creation": 0, "cache_read": 0}
    for r in results:
        u = r.get("usage") or {}
        tokens["input"] += u.get("input_tokens", 0)
        tokens["output"] += u.get("output_tokens", 0)
        tokens["cache_creation"] += u.get("cache_creation_input_tokens", 0)
        tokens["cache_read"] += u.get("cache_read_input_tokens", 0)
    tokens["total"] = sum(tokens.values())
    tool_ids: Dict[str, str] = {}
    for e in events:
        if e.get("type") != "assistant":
            continue
        for block in (e.get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                tool_ids[block["id"]] = block["name"]
    last = results[-1] if results else {}
    return {
        "results": len(results),
        "attempts_seen": len(inits),
        "tokens": tokens,
        "cost_usd": round(sum(r.get("total_cost_usd") or 0.0 for r in results), 6),
        "num_turns": last.get("num_turns"),
        "session_id": last.get("session_id"),
        "is_error": last.get("is_error"),
        "api_error_status": last.get("api_error_status"),
        "result": last.get("result"),
        "model_usage": sorted((last.get("modelUsage") or {}).keys()),
        "model": inits[-1].get("model") if inits else None,
        "tools": dict(sorted(Counter(tool_ids.values()).items())),
    }


# -- Codex CLI and Gemini CLI (issue 12) ----------------------------------------------------------------------------

INSTALL_NPM_AGENT = ROOT / "scripts" / "install-npm-agent"




def _install_npm_agent(agent: str) -> str:
    """The pinned real ``agent`` CLI (scripts/install-npm-agent); skipped only without npm, and never under CI."""
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"npm is not installed: the real {agent} CLI cannot be installed (CI=true: no skipping)")
        pytest.skip(f"npm is not installed: cannot install the real {agent} CLI for end-to-end tests")
    proc = subprocess.run([str(INSTALL_NPM_AGENT), agent], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/install-npm-agent {agent} failed ({proc.returncode}):\n{proc.stderr}"
    path = proc.stdout.strip().splitlines()[-1]
    assert os.path.isabs(path) and os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return _install_npm_agent("codex")


@pytest.fixture(scope="session")
def gemini_bin() -> str:
    return _install_npm_agent("gemini")


@pytest.fixture(scope="module")
def mock_openai_api():
    with mock_openai.MockOpenAI() as mock:
        yield mock


@pytest.fixture(scope="module")
def mock_gemini_api():
    with mock_gemini.MockGemini() as mock:
        yield mock


def codex_instance(home: Path, mock_url: str, name: str, prompt: str, **kw: Any) -> Dict[str, Any]:
    """A Codex instance for the mock: its own existing CODEX_HOME whose config bounds the CLI's own retries."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text("[model_providers.orchestrator]\nrequest_max_retries = 0\n"
                                      "stream_max_retries = 0\n", encoding="utf-8")
    env = dict(kw.pop("env", {}), HOME=str(home), CODEX_HOME=str(home), OPENAI_BASE_URL=f"{mock_url}/v1")
    return {"name": name, "agent": "codex", "prompt": prompt, "permission_mode": "bypassPermissions", "env": env,
            **kw}


def gemini_instance(home: Path, mock_url: str, name: str, prompt: str, **kw: Any) -> Dict[str, Any]:
    """A Gemini instance for the mock: its own HOME whose settings select API-key auth and one attempt per call."""
    home.mkdir(parents=True)
    mock_gemini.write_settings(str(home), max_attempts=1)
    env = dict(kw.pop("env", {}), HOME=str(home), GOOGLE_GEMINI_BASE_URL=mock_url)
    return {"name": name, "agent": "gemini", "prompt": prompt, "env": env, **kw}


def run_agent_batch(run_orchestrator: Any, mock: Any, make_instance: Any, work: Path, agent: str, binary: str,
                    defaults: Dict[str, Any], instances: List[Any]) -> E2ERun:
    """Run one batch of ``agent`` instances against ``mock`` and return the run, ``mock_records`` attached.

    ``instances`` are ``(name, prompt, options)``; each becomes ``make_instance(work/homes/NAME, mock URL, name,
    prompt, **options)`` (:func:`codex_instance`, :func:`gemini_instance`). One instance at a time (a 401, placed
    last, must not stop a retried one by racing it) and a short ``[retry]`` back-off. The run must have written its
    results document."""
    url = mock.base_url
    batch = write_batch(work / f"{agent}.toml", {agent: binary, "agent": agent, "concurrency": 1}, defaults,
                        [make_instance(work / "homes" / name, url, name, prompt, **options)
                         for name, prompt, options in instances])
    with open(batch, "a", encoding="utf-8") as f:
        f.write("[retry]\nbackoff = 0.2\nbackoff_max = 1\n")
    run = run_orchestrator(batch)
    assert run.doc is not None, run.explain()
    run.mock_records = mock.records
    return run


def codex_report(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What Codex itself reported: its last ``turn.completed`` usage (a running total), thread, tools, failure."""
    done = [e for e in events if e.get("type") == "turn.completed"]
    failed = [e for e in events if e.get("type") == "turn.failed"]
    threads = [e for e in events if e.get("type") == "thread.started"]
    tools = Counter(e["item"]["type"] for e in events if e.get("type") == "item.completed"
                    and e["item"].get("type") in ("command_execution", "file_change", "web_search"))
    return {"usage": done[-1]["usage"] if done else None, "thread_id": threads[-1]["thread_id"] if threads else None,
            "attempts_seen": len(threads), "tools": dict(tools),
            "failure": failed[-1]["error"]["message"] if failed else None}


def gemini_report(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What Gemini CLI itself reported: its last ``result`` (status, stats), session and tool_use names."""
    results = [e for e in events if e.get("type") == "result"]
    inits = [e for e in events if e.get("type") == "init"]
    tools = Counter(e["tool_name"] for e in events if e.get("type") == "tool_use")
    last = results[-1] if results else {}
    return {"stats": last.get("stats"), "status": last.get("status"), "attempts_seen": len(inits),
            "session_id": inits[-1]["session_id"] if inits else None, "tools": dict(tools),
            "error": (last.get("error") or {}).get("message")}


def normalized_codex(usage: Dict[str, int]) -> Dict[str, int]:
    """Codex's usage in the orchestrator's disjoint schema (README "Accounting")."""
    cached, written = usage.get("cached_input_tokens", 0), usage.get("cache_write_input_tokens", 0)
    tokens = {"input": usage["input_tokens"] - cached - written, "output": usage["output_tokens"],
              "cache_creation": written, "cache_read": cached}
    tokens["total"] = sum(tokens.values())
    return tokens


def normalized_gemini(stats: Dict[str, int]) -> Dict[str, int]:
    """Gemini's stats in the orchestrator's disjoint schema (README "Accounting")."""
    tokens = {"input": stats["input_tokens"] - stats["cached"], "output": stats["total_tokens"] - stats["input_tokens"],
              "cache_creation": 0, "cache_read": stats["cached"]}
    tokens["total"] = sum(tokens.values())
    return tokens
