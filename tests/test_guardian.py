"""The guardian: no process of a batch outlives the orchestrator, even when the orchestrator is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from orchestrator_pex import guardian
from tests.support import procs

REPO = os.path.dirname(os.path.dirname(guardian.__file__))

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") and os.environ.get("CI") != "true",
                                reason="process scan needs /proc")

# A stand-in orchestrator: starts the guardian, spawns instance groups (each with a grandchild, one of which escapes
# its group with setsid), registers them, reports pids, then waits to be killed (or closes cleanly on "close").
ORCH = r"""
import os, subprocess, sys, time
from orchestrator_pex import guardian
g = guardian.start(grace=1.0, subreaper=True)
child = "import os,subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(600)']); " \
        "subprocess.Popen([sys.executable,'-c','import os,time; os.setsid(); time.sleep(600)']); time.sleep(600)"
procs = []
for _ in range(3):
    p = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    g.register(p.pid)
    procs.append(p)
print("ready", g.pid, " ".join(str(p.pid) for p in procs), flush=True)
if sys.stdin.readline().strip() == "close":
    g.close()
    print("closed", flush=True)
    sys.stdin.readline()
"""


def marked_pids(marker):
    """Live processes carrying ``marker`` (``TEST_GUARD_MARK=<hex>``) in their environment."""
    return procs.pids_with_env(*marker.split("=", 1))


def wait_until_gone(marker, timeout=20.0):
    try:
        procs.wait_until(lambda: not marked_pids(marker), f"the processes marked {marker} to end", timeout=timeout)
    except AssertionError:
        pass  # the caller asserts on what is left, and names it
    return marked_pids(marker)


def start_orchestrator():
    marker = f"TEST_GUARD_MARK={uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=REPO, TEST_GUARD_MARK=marker.split("=", 1)[1])
    proc = subprocess.Popen([sys.executable, "-c", ORCH], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            text=True)
    line = proc.stdout.readline().split()
    assert line and line[0] == "ready", line
    # 1 orchestrator + 3 instances * 3 processes each carry the test marker (guardian too: it inherits env)
    procs.wait_until(lambda: len(marked_pids(marker)) >= 11, "the orchestrator, its guardian and 9 instance processes",
                     timeout=20)
    return proc, marker, int(line[1])


def test_sigkilled_orchestrator_leaves_no_process_behind():
    proc, marker, guardian_pid = start_orchestrator()
    proc.kill()
    proc.wait(timeout=30)
    assert wait_until_gone(marker) == []


def test_orchestrator_group_kill_does_not_take_the_guardian_but_cleanup_happens():
    proc, marker, guardian_pid = start_orchestrator()
    assert os.getpgid(guardian_pid) != os.getpgid(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert wait_until_gone(marker) == []


def test_clean_close_kills_leftovers_and_waits_for_guardian():
    proc, marker, guardian_pid = start_orchestrator()
    proc.stdin.write("close\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "closed"
    # after close() returned, only the stand-in orchestrator itself may remain
    assert marked_pids(marker) == [proc.pid]
    proc.stdin.close()
    proc.wait(timeout=30)


def test_unregistered_group_is_not_killed():
    g = guardian.start(grace=0.5, subreaper=False)
    try:
        keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                                  env={k: v for k, v in os.environ.items() if k != guardian.MARKER_ENV})
        g.register(keeper.pid)
        g.unregister(keeper.pid)
    finally:
        g.close()
    try:
        assert keeper.poll() is None
    finally:
        keeper.kill()
        keeper.wait()
    assert guardian.MARKER_ENV not in os.environ


def test_marker_is_inherited_by_children_started_after_start():
    g = guardian.start(grace=0.5, subreaper=False)
    try:
        out = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{guardian.MARKER_ENV}'])"],
                             capture_output=True, text=True, timeout=30)
        assert g.marker == f"{guardian.MARKER_ENV}={out.stdout.strip()}"
    finally:
        g.close()
    assert g.proc.returncode == 0


LOCKED_ORCH = r"""
import subprocess, sys, time
from orchestrator_pex import guardian, lock
held = lock.try_acquire(sys.argv[1])
g = guardian.start(grace=1.0, keep_fds=(held.fd,))
p = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('armed', flush=True); time.sleep(600)"], start_new_session=True, stdout=subprocess.PIPE)
assert p.stdout.readline() == b"armed\n"
g.register(p.pid)
print("ready", p.pid, flush=True)
time.sleep(600)
"""


def test_guardian_keeps_the_batch_locked_until_stragglers_are_dead(tmp_path):
    from orchestrator_pex import lock

    path = str(tmp_path / "batch.lock")
    proc = subprocess.Popen([sys.executable, "-c", LOCKED_ORCH, path], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))
    line = proc.stdout.readline().split()
    assert line[:1] == ["ready"], line
    straggler = int(line[1])
    proc.kill()
    proc.wait(timeout=30)
    # the orchestrator is dead but its straggler ignores SIGTERM: the guardian still holds the lock
    assert lock.try_acquire(path) is None
    handle = procs.wait_until(lambda: lock.try_acquire(path), "the guardian to release the lock", timeout=20)
    handle.release()
    assert procs.is_zombie_or_gone(straggler)  # the lock was released only after the straggler died


def test_subreaper_reaps_orphaned_zombies_only():
    code = r"""
import os, subprocess, sys, time
from orchestrator_pex import guardian, procfs
g = guardian.start(grace=0.5, subreaper=True)
assert g.subreaper
# an instance whose child outlives it: the child is re-parented to us and exits -> our zombie
leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
                           "'import time; time.sleep(0.3)']); print('x', flush=True)"], start_new_session=True,
                          stdout=subprocess.PIPE)
assert leader.stdout.readline() == b"x\n"
g.register(leader.pid)
leader.wait()
g.unregister(leader.pid)
deadline = time.monotonic() + 30  # poll until the orphaned grandchild (0.3 s) has exited: it is then our zombie
while not [p for p in procfs.children() if getattr(procfs.stat(p), "state", "?") == "Z"]:
    assert time.monotonic() < deadline, "the orphaned grandchild never became our zombie"
    time.sleep(0.02)
zombies = [p for p in procfs.children() if getattr(procfs.stat(p), "state", "?") == "Z"]
reaped = g.reap_orphans()
left = [p for p in procfs.children() if getattr(procfs.stat(p), "state", "?") == "Z"]
g.close()
print(len(zombies), reaped, len(left))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "0"]
