"""Runtime through the real command line: every outcome of one instance, process clean-up, raw logs, odd output.

One batch (``run --json``) holds an instance per behaviour and runs once for the module; each test reads its own
instance's record. Every process of the batch carries ``ORCH_TEST_MARKER=<unique>`` in its environment, so after
the run a scan of ``/proc/*/environ`` proves that nothing the batch started is left alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import procs
from tests.support.batches import sim

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "support" / "fake_claude"
HUGE = 6_000_000  # over the 4 MiB line cap, small enough to stay quick
WRITE_FILE = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read()); sys.stdout.flush()"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, make_cli_env):
    base = tmp_path_factory.mktemp("runtime")
    marker = f"m{os.urandom(8).hex()}"
    payload = (b"first line\r\n" + bytes(range(256)) + b"\n" + os.urandom(5 << 20) + b"\n{\"type\":\"result\"\n"
               + b"\xff\xfe last line without newline")
    (base / "payload.bin").write_bytes(payload)
    batch = f"""
claude = {json.dumps(str(FAKE))}
concurrency = 20
grace_period = 0.5
[retry]
backoff = 0.05
[defaults]
timeout = 20
env = {{ ORCH_TEST_MARKER = "{marker}" }}
""" + "".join([
        sim("ok", "tool-use"),
        sim("crash", "crash"),
        sim("quiet", "quiet-exit"),
        sim("maxturns", "tool-use", "max_turns = 1\nallowed_tools = [\"Bash\"]"),
        sim("hang", "hang", "timeout = 1"),
        sim("silent", "silent", "stall_timeout = 0.7"),
        # these must get as far as ignoring SIGTERM / spawning before their timeout, even on a loaded machine
        sim("stubborn", "hang-ignore-term", "timeout = 2"),
        sim("child", "spawn-child", "timeout = 2"),
        sim("child-stubborn", "spawn-child", "timeout = 2", AGENT_SIM_CHILD_IGNORE_TERM="1"),
        sim("garbage", "garbage"),
        sim("truncated", "truncated"),
        sim("huge", "huge-line", AGENT_SIM_HUGE_BYTES=str(HUGE)),
        sim("exit-override", "tool-use", AGENT_SIM_EXIT="7"),
    ]) + f"""
[[instances]]
name = "generic-ok"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(WRITE_FILE)}, {json.dumps(str(base / "payload.bin"))}]
[[instances]]
name = "unstartable"
argv = [{json.dumps(str(base / "bad-interpreter.sh"))}]
[[instances]]
name = "generic-fail"
argv = [{json.dumps(sys.executable)}, "-c", "import sys; print('about to fail', file=sys.stderr); sys.exit(5)"]
"""
    (base / "bad-interpreter.sh").write_text("#!/nonexistent/interpreter\n")  # passes preflight, cannot exec
    (base / "bad-interpreter.sh").chmod(0o755)
    path = base / "batch.toml"
    path.write_text(batch)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir", str(base / "runs")],
        cwd=base, env=make_cli_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
    )
    left = procs.pids_with_env("ORCH_TEST_MARKER", marker)
    doc = json.loads(proc.stdout)
    return {"proc": proc, "doc": doc, "by_name": {r["name"]: r for r in doc["instances"]}, "left": left,
            "payload": payload, "base": base}


@pytest.fixture
def rec(mixed, request):
    return lambda name: mixed["by_name"][name]


def test_run_exit_status_and_all_instances_recorded(mixed):
    assert mixed["proc"].returncode == 1, mixed["proc"].stderr.decode()
    assert len(mixed["doc"]["instances"]) == 16
    assert mixed["doc"]["status"] == "failed"


def test_succeeded_with_exact_accounting(rec):
    r = rec("ok")
    assert r["status"] == "succeeded" and r["exit_code"] == 0 and r["error"] is None
    assert r["tokens"] == {"input": 2400, "output": 49, "cache_creation": 600, "cache_read": 10000, "total": 13049}
    assert r["cost_usd"] == pytest.approx(0.013185) and r["cost_source"] == "result"
    assert r["tools"] == {"Bash": 1}
    assert r["model"] == "claude-sonnet-4-5" and r["num_turns"] == 2 and r["attempts"] == 1
    assert r["result"] == "Done: task ok"
    assert isinstance(r["session_id"], str) and len(r["session_id"]) == 36
    assert r["skipped_lines"] == 0


def test_crash_fails_with_exit_code_and_stderr_tail(rec):
    r = rec("crash")
    assert r["status"] == "failed"
    assert r["exit_code"] == 3
    assert r["error"].startswith("exit status 3: ") and "simulated crash" in r["error"]
    assert r["cost_source"] == "estimate" and r["cost_usd"] > 0  # no result event: estimated from the stream
    assert r["tokens"]["input"] == 1200 and r["tools"] == {"Bash": 1}
    assert "simulated crash" in Path(r["stderr_log"]).read_text()


def test_exit_zero_without_result_is_a_failure(rec):
    r = rec("quiet")
    assert r["status"] == "failed" and r["exit_code"] == 0
    assert r["error"] == "exited 0 without a result event"


def test_agent_error_result_is_a_failure(rec):
    r = rec("maxturns")
    assert r["status"] == "failed" and r["exit_code"] == 1
    assert r["num_turns"] == 1 and r["error"]


def test_nonzero_exit_after_result_is_a_failure(rec):
    r = rec("exit-override")
    assert r["status"] == "failed" and r["exit_code"] == 7
    assert r["tokens"]["total"] == 13049  # accounting is kept whatever the exit status


def test_timeout_terminates(rec):
    r = rec("hang")
    assert r["status"] == "timed-out"
    assert r["exit_code"] == -signal.SIGTERM


def test_stall_timeout(rec):
    r = rec("silent")
    assert r["status"] == "stalled"
    assert r["exit_code"] == -signal.SIGTERM
    assert r["tokens"]["total"] == 0


def test_sigterm_ignored_is_killed_after_grace(rec):
    r = rec("stubborn")
    assert r["status"] == "timed-out"
    assert r["exit_code"] == -signal.SIGKILL
    assert r["error"].startswith("timed out after") and "killed by SIGKILL" in r["error"]


def _child_pid(record) -> int:
    for line in Path(record["stdout_log"]).read_bytes().split(b"\n"):
        if b'"agent_sim_child"' in line:
            return json.loads(line)["pid"]
    raise AssertionError("no agent_sim_child event in the log")


@pytest.mark.parametrize("name", ["child", "child-stubborn"])
def test_grandchildren_are_ended(rec, pid_gone, name):
    r = rec(name)
    assert r["status"] == "timed-out"
    assert pid_gone(_child_pid(r))


def test_no_process_of_the_batch_remains(mixed):
    assert mixed["left"] == []


def test_garbage_lines_skipped_and_totals_kept(rec):
    r = rec("garbage")
    assert r["status"] == "succeeded"
    assert r["skipped_lines"] >= 3
    assert r["tokens"]["total"] == 13049 and r["tools"] == {"Bash": 1} and r["num_turns"] == 2


def test_truncated_line_skipped_and_never_counted(rec):
    r = rec("truncated")
    assert r["status"] == "succeeded"
    assert r["skipped_lines"] >= 1
    assert r["tokens"]["input"] == 2400  # the cut message's 999 input tokens are not counted


def test_huge_line_skipped_kept_in_raw_log(rec):
    r = rec("huge")
    assert r["status"] == "succeeded"
    assert r["skipped_lines"] == 1
    assert r["tokens"]["total"] == 13049 and r["tools"] == {"Bash": 1}
    size = os.path.getsize(r["stdout_log"])
    assert size > HUGE
    with open(r["stdout_log"], "rb") as f:
        for line in f:  # every line but the huge one is intact JSON
            if len(line) < (4 << 20):
                json.loads(line)


def test_generic_instance_raw_log_is_exact(mixed, rec):
    r = rec("generic-ok")
    assert r["status"] == "succeeded" and r["exit_code"] == 0
    assert Path(r["stdout_log"]).read_bytes() == mixed["payload"]
    assert r["tokens"]["total"] == 0 and r["cost_source"] is None and r["model"] is None


def test_generic_instance_fails_by_exit_code(rec):
    r = rec("generic-fail")
    assert r["status"] == "failed" and r["exit_code"] == 5
    assert r["error"] == "exit status 5: about to fail"
    assert Path(r["stderr_log"]).read_text() == "about to fail\n"


def test_program_that_cannot_start_fails_without_exit_code(rec):
    r = rec("unstartable")
    assert r["status"] == "failed" and r["exit_code"] is None and r["attempts"] == 1
    assert r["error"].startswith("cannot start ") and "bad-interpreter.sh" in r["error"]


def test_claude_raw_log_is_the_agent_stream(rec):
    r = rec("ok")
    lines = Path(r["stdout_log"]).read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline, nothing added
    events = [json.loads(line) for line in lines[:-1]]
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    assert events[-1]["type"] == "result" and events[-1]["result"] == r["result"]
    assert events[0]["session_id"] == r["session_id"]


def test_log_paths_live_in_the_run_dir(mixed):
    run_dir = mixed["doc"]["run_dir"]
    for r in mixed["doc"]["instances"]:
        assert r["stdout_log"] == os.path.join(run_dir, "logs", f"{r['name']}.stdout")
        assert r["stderr_log"] == os.path.join(run_dir, "logs", f"{r['name']}.stderr")
        assert os.path.isfile(r["stdout_log"]) and os.path.isfile(r["stderr_log"])


def test_unwritable_log_stops_only_that_instance(tmp_path, fake_claude, make_cli_env, marker, marked_pids):
    """A log write that fails (here: RLIMIT_FSIZE, as a full disk would) fails that instance with a clear error."""
    import resource

    path = tmp_path / "batch.toml"
    path.write_text(f'claude = {json.dumps(fake_claude)}\ngrace_period = 0.5\n'
                    f'[defaults]\nenv = {{ ORCH_TEST_MARKER = "{marker}" }}\n'
                    + sim("huge", "huge-line", AGENT_SIM_HUGE_BYTES="3000000") + sim("ok", "tool-use"))

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator_pex", "run", str(path), "--json", "--results-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env=make_cli_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
        preexec_fn=limit_file_size,
    )
    assert proc.returncode == 1, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    by_name = {r["name"]: r for r in doc["instances"]}
    assert by_name["huge"]["status"] == "cancelled"
    assert by_name["huge"]["error"].startswith("cannot write its stdout log: File too large")
    assert by_name["ok"]["status"] == "succeeded" and by_name["ok"]["tokens"]["total"] == 13049
    with open(os.path.join(doc["run_dir"], "results.json")) as f:
        assert json.load(f) == doc
    assert marked_pids(marker) == []
