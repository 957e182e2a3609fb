"""Shared fixtures: paths, running the CLI as a subprocess, and finding processes a batch left behind.

Kept small and generic on purpose (subfolders add their own conftest). Everything here starts real processes:
``python -m orchestrator_pex`` from this checkout, and ``tests/support/fake_claude`` as the agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from tests.support.procs import is_zombie_or_gone, kill_pids, pids_with_env

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLAUDE = ROOT / "tests" / "support" / "fake_claude"


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for ``python -m orchestrator_pex`` from this checkout (no inherited results dir)."""
    env = dict(os.environ)
    # `#!/usr/bin/env python3` agents (fake_claude) then start this interpreter directly, not through a pyenv shim
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("ORCHESTRATOR_PEX_RESULTS_DIR", None)
    env.setdefault("TERM", "dumb")
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def make_cli_env() -> Callable[..., Dict[str, str]]:
    """``make_cli_env(extra=None)``: the environment :func:`cli` uses, for tests that start processes themselves."""
    return cli_env


@pytest.fixture
def fake_claude() -> str:
    """Absolute path of the fake ``claude`` (agent-sim; scenario from ``AGENT_SIM_SCENARIO``)."""
    return str(FAKE_CLAUDE)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``cli(*args, env=None, timeout=60)``: run ``python -m orchestrator_pex ARGS`` in ``tmp_path``, capture bytes."""

    def run(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator_pex", *args], cwd=tmp_path, env=cli_env(env),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        )

    return run


@pytest.fixture
def write_batch(tmp_path: Path) -> Callable[..., Path]:
    """``write_batch(text, name="batch.toml")``: write a batch file into ``tmp_path``; ``{claude}`` is replaced by
    the quoted fake agent path (so TOML/JSON stay valid)."""

    def write(text: str, name: str = "batch.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{claude}", json.dumps(str(FAKE_CLAUDE))), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_batch(cli, tmp_path: Path) -> Callable[..., RunResult]:
    """``run_batch(batch_path, *extra_args)``: ``run BATCH --json --results-dir tmp/runs``; parse the document."""

    def run(batch: Path, *extra: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> RunResult:
        proc = cli("run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), *extra, env=env,
                   timeout=timeout)
        return RunResult(proc)

    return run


class RunResult:
    """A finished ``run --json``: ``code``, ``stdout``/``stderr`` bytes, ``doc`` (None if stdout is not JSON)."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.proc = proc
        self.code = proc.returncode
        self.stdout: bytes = proc.stdout
        self.stderr: bytes = proc.stderr
        try:
            self.doc = json.loads(proc.stdout)
        except ValueError:
            self.doc = None

    def inst(self, name: str) -> dict:
        assert self.doc is not None, f"no results document; stderr:\n{self.stderr.decode(errors='replace')}"
        for record in self.doc["instances"]:
            if record["name"] == name:
                return record
        raise KeyError(name)

    def statuses(self) -> Dict[str, str]:
        assert self.doc is not None, f"no results document; stderr:\n{self.stderr.decode(errors='replace')}"
        return {r["name"]: r["status"] for r in self.doc["instances"]}


@pytest.fixture
def marker():
    """A unique value for an env variable ``ORCH_TEST_MARKER`` set in a batch's env: find the batch's processes.

    Safety net: processes still carrying the marker when the test ends (it failed) are killed, one pid at a time.
    """
    value = f"m{uuid.uuid4().hex}"
    yield value
    kill_pids(pids_with_env("ORCH_TEST_MARKER", value))


@pytest.fixture
def marked_pids() -> Callable[[str], List[int]]:
    """``marked_pids(value)``: live processes whose environment has ``ORCH_TEST_MARKER=value``."""
    return lambda value: pids_with_env("ORCH_TEST_MARKER", value)


@pytest.fixture
def pid_gone() -> Callable[[int], bool]:
    """``pid_gone(pid)``: the process does not exist or is a zombie."""
    return is_zombie_or_gone


# -- every document a test produces is strict JSON and matches its schema ------------------------------------------

SCHEMAS = ROOT / "schemas"


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity (Python's json accepts them; strict JSON does not)."""

    def bad_constant(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=bad_constant)


def _validator(name: str):
    import jsonschema

    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def check_documents(base: Path) -> List[str]:
    """Validate every results document and journal under ``base`` written by the orchestrator; return problems."""
    problems: List[str] = []
    validators: Dict[str, object] = {}

    def validate(kind: str, value: object, where: str) -> None:
        if kind not in validators:
            validators[kind] = _validator(kind)
        for error in validators[kind].iter_errors(value):  # type: ignore[attr-defined]  # a jsonschema validator
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: {path or '(top)'}: {error.message[:300]}")

    for path in sorted(base.rglob("results.json")):
        try:
            doc = _strict_json(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if isinstance(doc, dict) and "orchestrator_version" in doc:  # written by a run (not a test's own fixture)
            validate("results", doc, str(path))
    for path in sorted(base.rglob("journal.jsonl")):
        lines = path.read_bytes().split(b"\n")
        events = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                events.append((number, _strict_json(line.decode("utf-8"))))
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(f"{path}:{number}: {exc}")
        if events and isinstance(events[0][1], dict) and "orchestrator_version" in events[0][1]:
            for number, event in events:
                validate("event", event, f"{path}:{number}")
    return problems


@pytest.fixture(autouse=True)
def _documents_are_valid(request):
    """After each test that used ``tmp_path``: every results.json and journal.jsonl the orchestrator wrote there
    parses as strict JSON and matches schemas/*.schema.json. Tests that damage documents on purpose are marked
    ``@pytest.mark.damages_documents``."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None or request.node.get_closest_marker("damages_documents"):
        return
    problems = check_documents(Path(tmp))
    assert not problems, ("documents that are not strict JSON or do not match schemas/ (a new field needs the "
                          "schema and the README updated):\n  " + "\n  ".join(problems[:20]))


def pytest_configure(config):
    config.addinivalue_line("markers", "damages_documents: the test corrupts results or journals on purpose")
