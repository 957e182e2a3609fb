"""The batch lock: exclusive flock, clear LockHeld (exit 75) naming the holder, optional waiting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from orchestrator_pex import lock
from orchestrator_pex.errors import EXIT_LOCKED, LockHeld
from tests.support.components import missing

HOLD_SCRIPT = r"""
import sys, time
from orchestrator_pex import lock
with lock.acquire(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    d = tmp_path / "locks"
    monkeypatch.setenv("ORCHESTRATOR_PEX_LOCK_DIR", str(d))
    return d


def test_lock_path_depends_on_batch_path_only(tmp_path, lock_dir):
    a = tmp_path / "a" / "batch.toml"
    b = tmp_path / "b" / "batch.toml"
    assert lock.lock_path_for(str(a)) != lock.lock_path_for(str(b))
    assert lock.lock_path_for(str(a)) == lock.lock_path_for(os.path.join(str(tmp_path), "a", ".", "batch.toml"))
    assert os.path.dirname(lock.lock_path_for(str(a))) == str(lock_dir)
    assert os.path.basename(lock.lock_path_for(str(a))).startswith("batch-")
    shard1 = lock.lock_path_for(str(a), variant="shard-1-of-2")
    assert shard1 == lock.lock_path_for(str(a), variant="shard-1-of-2")
    assert len({lock.lock_path_for(str(a)), shard1, lock.lock_path_for(str(a), variant="shard-0-of-2")}) == 3


def test_second_acquire_in_other_process_fails_fast_with_holder_pid(tmp_path, lock_dir):
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    with lock.acquire(path):
        code = (
            "import sys\nfrom orchestrator_pex import lock, errors\n"
            "try:\n    lock.acquire(sys.argv[1]).__enter__()\n"
            "except errors.LockHeld as e:\n    print(e); sys.exit(e.exit_status)\n"
        )
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=30,
                             cwd=os.path.dirname(os.path.dirname(lock.__file__)))
        assert out.returncode == EXIT_LOCKED
        assert f"pid {os.getpid()}" in out.stdout
        assert "--wait-lock" in out.stdout
    # released: can take it again
    with lock.acquire(path):
        pass


def test_lock_is_visible_to_flock_binary(tmp_path, lock_dir):
    flock_bin = shutil.which("flock")
    if not flock_bin:
        missing("flock(1) not installed")
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    with lock.acquire(path):
        held = subprocess.run([flock_bin, "-n", path, "true"], timeout=30)
        assert held.returncode != 0
    free = subprocess.run([flock_bin, "-n", path, "true"], timeout=30)
    assert free.returncode == 0
    # and the other way round: flock(1) holding it makes us fail with LockHeld
    proc = subprocess.Popen([flock_bin, "-n", path, sys.executable, "-c",
                             "import sys; print('x', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"x\n"
        with pytest.raises(LockHeld) as info:
            with lock.acquire(path):
                pass
        assert info.value.exit_status == 75
        assert "another run of this batch" in str(info.value)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_lock_released_when_holder_is_sigkilled(tmp_path, lock_dir):
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(lock.__file__)))
    assert proc.stdout.readline() == b"locked\n"
    with pytest.raises(LockHeld) as info:
        with lock.acquire(path):
            pass
    assert f"pid {proc.pid}" in str(info.value)
    proc.kill()
    proc.wait(timeout=30)
    with lock.acquire(path) as handle:
        with open(handle.path) as f:
            assert f"pid={os.getpid()}" in f.read()


def test_wait_lock_waits_for_release(tmp_path, lock_dir):
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    first = lock.try_acquire(path)
    assert first is not None
    released = threading.Event()

    def release_later():
        time.sleep(0.3)
        released.set()
        first.release()

    t = threading.Thread(target=release_later)
    t.start()
    # flock locks are per open file description, so a second open in this process contends like another process
    with lock.acquire(path, wait_seconds=30):
        assert released.is_set()
    t.join()


def test_wait_lock_gives_up_after_timeout(tmp_path, lock_dir):
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    first = lock.try_acquire(path)
    try:
        with pytest.raises(LockHeld) as info:
            with lock.acquire(path, wait_seconds=0.2):
                pass
        assert "after waiting" in str(info.value)
    finally:
        first.release()


def test_removed_lock_file_is_recreated_not_shared(tmp_path, lock_dir):
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    with lock.acquire(path):
        os.unlink(path)  # e.g. a tmp cleaner
        with lock.acquire(path):  # a new file: cannot be protected, but must not crash
            assert os.path.exists(path)


def test_default_lock_dir_must_be_private(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_PEX_LOCK_DIR", raising=False)
    monkeypatch.setattr(lock.tempfile, "gettempdir", lambda: str(tmp_path))
    d = lock.default_lock_dir()
    path = lock.lock_path_for(str(tmp_path / "batch.toml"))
    with lock.acquire(path):  # created 0700, ours: fine
        pass
    os.chmod(d, 0o777)
    try:
        from orchestrator_pex.errors import UsageError

        with pytest.raises(UsageError, match="not a private directory"):
            with lock.acquire(path):
                pass
    finally:
        os.chmod(d, 0o700)
