"""One run per batch at a time: an exclusive ``flock`` on a lock file derived from the batch file's path.

Where the lock lives: by default ``$ORCHESTRATOR_PEX_LOCK_DIR`` or ``<tmp>/orchestrator-pex-<uid>/`` (mode 0700), file
``<batch stem>-<sha256 of the batch's absolute real path, 16 hex>.lock``. It depends on the batch file only, not on
``--results-dir``: two runs of the same batch exclude each other wherever they write results, and a ``resume``
takes the lock of the batch its run came from. ``--lock PATH`` names the file explicitly (e.g. to make two different
batch files that drive the same repositories exclude each other).

Semantics: :func:`acquire` takes ``fcntl.flock(LOCK_EX)`` on the file (the same lock the ``flock(1)`` tool takes), so
the lock vanishes with the holding process however it dies; there is no stale-lock cleanup to get wrong. The holder
writes ``pid=... started_at=... argv=...`` into the file for the message a second run prints. A second run fails at
once with :class:`LockHeld` (exit 75) naming that pid, without touching anything of the first run; with
``wait_seconds`` it polls for that long first. The lock file is never deleted (deleting a flock file races with
a new holder); after locking, the holder checks the path still names the file it locked (a tmp cleaner may have
removed it) and retries if not.

The descriptor is inheritable on request (:attr:`LockHandle.fd`), so the crash guardian can hold the lock until every
process of a killed run is gone (see :mod:`orchestrator_pex.guardian`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sys
import tempfile
import time
from typing import Iterator, Optional

from orchestrator_pex.errors import LockHeld, UsageError

POLL_SECONDS = 0.1


def default_lock_dir() -> str:
    env = os.environ.get("ORCHESTRATOR_PEX_LOCK_DIR")
    if env:
        return env
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"orchestrator-pex-{uid}")


def lock_path_for(batch_path: str, lock_dir: Optional[str] = None, variant: Optional[str] = None) -> str:
    """The lock file for a batch file (see the module docstring).

    ``variant`` separates runs of the same file that may legitimately run side by side (e.g. ``"shard-1-of-4"``:
    shards of one batch on one host); the same variant always maps to the same file.
    """
    real = os.path.realpath(os.path.abspath(batch_path))
    key = real if not variant else f"{real}\0{variant}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(real))[0] or "batch"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:40]
    return os.path.join(lock_dir or default_lock_dir(), f"{stem}-{digest}.lock")


class LockHandle:
    """A held lock: ``path`` and the open descriptor ``fd`` carrying the flock."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor of the open file releases the flock
            self.fd = -1


def holder_description(path: str) -> str:
    """What is known of the process holding ``path``: the pid it wrote, else the pid /proc/locks shows."""
    info = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            info = f.read(4096).strip()
    except OSError:
        pass
    fields = dict(part.split("=", 1) for part in info.split() if "=" in part)
    pid = fields.get("pid") or _pid_from_proc_locks(path)
    if not pid:
        return "another process (pid unknown)"
    text = f"pid {pid}"
    if fields.get("started_at"):
        text += f", since {fields['started_at']}"
    return text


def _pid_from_proc_locks(path: str) -> Optional[str]:
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        if "FLOCK" in parts and "->" not in parts and len(parts) >= 6 and parts[-3] == want:
            return parts[-4]
    return None


def _open_lock_file(path: str) -> int:
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _check_private_dir(directory)
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0),
                       0o600)
    except OSError as exc:
        raise UsageError(path, "", f"cannot create the batch lock file: {exc.strerror or exc}") from None


def _check_private_dir(directory: str) -> None:
    """The default lock directory sits in a shared tmp: refuse one another user owns or can write (or a symlink)."""
    if directory != default_lock_dir() or os.environ.get("ORCHESTRATOR_PEX_LOCK_DIR") or not hasattr(os, "getuid"):
        return
    problem = untrusted(directory, directory=True, allow_root=False)
    if problem:
        raise UsageError(directory, "", f"the lock directory is not a private directory of this user ({problem}); "
                         "remove it or set ORCHESTRATOR_PEX_LOCK_DIR")


def untrusted(path: str, *, directory: bool, allow_root: bool = True) -> Optional[str]:
    """Why ``path`` cannot be trusted not to have been written by another local user, or None if it can.

    The one implementation of the check the lock directory and ``resume`` (run directory, batch copy, journal,
    results.json, raw logs) apply: the path itself (``lstat``, not followed) must not be a symlink, must be a
    directory (``directory``) or a regular file, must be owned by the running user (or root, with ``allow_root``),
    and must not be group- or world-writable. A missing path raises ``OSError``.
    """
    import stat

    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if directory and not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not hasattr(os, "getuid"):  # pragma: no cover - POSIX only
        return None
    owners = (os.getuid(), 0) if allow_root else (os.getuid(),)
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()}){' or root' if allow_root else ''}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by other users (mode {mode:o})"
    return None


def try_acquire(path: str) -> Optional[LockHandle]:
    """Take the lock without waiting: a handle, or None when another process holds it."""
    import fcntl

    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise UsageError(path, "", f"cannot lock: {exc.strerror or exc}") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if not same:  # the file was removed or replaced after we opened it: lock the new one
            os.close(fd)
            continue
        _write_holder(fd)
        return LockHandle(path, fd)


def _write_holder(fd: int) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    argv = " ".join(a.replace(" ", "_") for a in sys.argv[:4])[:200]
    text = f"pid={os.getpid()} started_at={stamp} argv={argv}\n".encode("utf-8", "replace")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError:
        pass  # the holder note is informative only


@contextlib.contextmanager
def acquire(path: str, wait_seconds: Optional[float] = None) -> Iterator[LockHandle]:
    """Hold the exclusive lock on ``path`` for the ``with`` block.

    ``wait_seconds`` None or 0: fail at once with LockHeld (exit 75) if held. Otherwise poll up to that many seconds.
    """
    deadline = None if not wait_seconds else time.monotonic() + float(wait_seconds)
    while True:
        handle = try_acquire(path)
        if handle is not None:
            break
        if deadline is None or time.monotonic() >= deadline:
            waited = f" after waiting {wait_seconds:g}s" if deadline is not None else ""
            raise LockHeld(path, "", f"another run of this batch is in progress ({holder_description(path)}){waited}; "
                           "nothing was started. Use --wait-lock SECONDS to wait for it")
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    try:
        yield handle
    finally:
        handle.release()


def wait_seconds(text: str) -> float:
    """``--wait-lock`` value: a finite number of seconds in [0, MAX_WAIT_SECONDS] (NaN, inf, negative refused)."""
    from orchestrator_pex.limits import MAX_WAIT_SECONDS, float_argument

    convert = float_argument(0.0, MAX_WAIT_SECONDS, f"a number of seconds from 0 to {MAX_WAIT_SECONDS:g}")
    return convert(text)


def add_lock_arguments(parser) -> None:
    """``--lock PATH`` and ``--wait-lock SECONDS`` for commands that run a batch."""
    parser.add_argument("--lock", metavar="PATH",
                        help="lock file to use instead of the one derived from the batch path")
    parser.add_argument(
        "--wait-lock",
        metavar="SECONDS",
        type=wait_seconds,
        default=None,
        help="if another run of this batch holds the lock, wait up to SECONDS for it instead of exiting with 75",
    )


def lock_for(explicit: Optional[str], batch_path: str, variant: Optional[str] = None) -> str:
    """The lock file a command uses: ``explicit`` (``--lock``) if given, else the one derived from ``batch_path``
    (and variant)."""
    return os.path.abspath(explicit) if explicit else lock_path_for(batch_path, variant=variant)
