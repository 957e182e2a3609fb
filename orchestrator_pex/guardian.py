"""No orphans: a tiny guardian process kills every process of the batch once the orchestrator is gone, however it died.

How it works. :func:`start` spawns ``python -I -S -c <GUARDIAN_SOURCE>`` (stdlib only, so it works from a PEX or a
checkout alike) in its own session, so signals sent to the orchestrator's process group (Ctrl-C, ``kill -- -PGID``)
do not reach it. The orchestrator keeps the write end of a pipe; the guardian holds only the read end. The
orchestrator writes ``+PGID`` when an instance's process group starts and ``-PGID`` once that group is gone. When the
guardian reads end-of-file, the orchestrator has closed the pipe (:meth:`Guardian.close`) or died (even by SIGKILL:
the kernel closes its descriptors). The guardian then:

1. sends SIGTERM (and SIGCONT, so stopped processes can act on it) to every registered process group, and to every
   process whose environment carries this run's marker ``ORCHESTRATOR_PEX_GUARD=<token>`` (Linux, via /proc; this
   catches descendants that left their process group with ``setsid``). :func:`start` puts the marker into
   ``os.environ``, so every process the orchestrator starts afterwards inherits it;
2. waits up to ``grace`` seconds for them to exit, then SIGKILLs whatever remains (rescanning, so processes forked
   meanwhile are caught too), and exits.

The guardian can also keep descriptors open (``keep_fds``): passing the batch lock's descriptor keeps the batch
locked until every process of a crashed run is dead, so a resume cannot race the old run's stragglers.

Linux ``PR_SET_CHILD_SUBREAPER`` (:func:`set_child_subreaper`, ``start(subreaper=True)``) is available but OFF by
default, deliberately: as a subreaper the orchestrator inherits every orphaned descendant, and an orphan that exits
stays a zombie member of its instance's process group until someone reaps it, so the runtime's "is the group
gone?" polling (``killpg(pgid, 0)``) waits out the whole grace period (measured: a timed-out instance whose agent
left a grandchild took 7 s instead of 2 s with ``grace_period = 3``). Orphans re-parented to init are reaped at once,
and descendants that escaped their group are still found through the environment marker, which is what the
subreaper would have been for. With ``subreaper=True``, :meth:`Guardian.reap_orphans` collects such zombies (only
those that cannot be an instance leader or a direct child of ours, so no other code's ``wait`` is robbed).

The guardian is watched too. The OOM killer (or an operator) may kill the guardian first; the orchestrator would
then run unguarded, and a later SIGKILL of the orchestrator would leave instances running with the lock free.
During a run, :meth:`Protection.watch` checks every :data:`WATCH_INTERVAL` seconds whether the guardian process is
still alive; if it died, :meth:`Guardian.replace_if_dead` starts a new one with the same marker and the same kept
descriptors (the batch lock) and registers every process group that is still live. If no new guardian can be
started, the watch raises :class:`GuardianLost` and the run's error boundary stops the batch (instances ended,
results written, exit 70). A kill of the guardian within the same ~quarter second as the orchestrator's own SIGKILL
is not covered (nothing is left to notice it); the environment marker still lets an operator find such stragglers.

macOS and other systems without /proc or prctl: the guardian still kills every registered process group on exit or
crash; descendants that moved to another process group or session are not found.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from orchestrator_pex import procfs

MARKER_ENV = "ORCHESTRATOR_PEX_GUARD"
DEFAULT_GRACE = 3.0
WATCH_INTERVAL = 0.25  #: seconds between two checks that the guardian is still alive (:meth:`Protection.watch`)


class GuardianLost(Exception):
    """The guardian died and could not be replaced: the batch must stop (an internal error of the run)."""

#: The guardian program. Argument: read fd, parent pid, marker ("KEY=token"), grace seconds. Stdlib only.
GUARDIAN_SOURCE = r'''
import os, signal, sys, time

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False

def live_groups(groups):
    """The groups with a member that is not a zombie (an unreaped zombie still answers killpg(pgid, 0))."""
    if not groups:
        return set()
    if not os.path.isdir("/proc"):
        return {g for g in groups if group_alive(g)}
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] not in (b"Z", b"X"):
            pgrp = int(fields[2])
            if pgrp in groups:
                found.add(pgrp)
    return found

def marked(marker, skip):
    found = []
    if not marker or not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if marker in env.split(b"\0") and alive(int(entry)):
            found.append(int(entry))
    return found

def signal_all(groups, pids, sig):
    for pgid in groups:
        for s in (sig, signal.SIGCONT) if sig != signal.SIGKILL else (sig,):
            try:
                os.killpg(pgid, s)
            except OSError:
                pass
    for pid in pids:
        for s in (sig, signal.SIGCONT) if sig != signal.SIGKILL else (sig,):
            try:
                os.kill(pid, s)
            except OSError:
                pass

def main():
    fd, parent, marker, grace = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(s, signal.SIG_IGN)
    groups, buf = set(), b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
        lines = buf.split(b"\n")
        buf = lines.pop()
        for line in lines:
            try:
                value = int(line[1:])
            except ValueError:
                continue
            if value <= 1:
                continue
            if line[:1] == b"+":
                groups.add(value)
            elif line[:1] == b"-":
                groups.discard(value)
    skip = {os.getpid(), parent, 1}
    groups = live_groups({g for g in groups if g not in skip})
    pids = marked(marker, skip)
    if not groups and not pids:
        return
    signal_all(groups, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        groups = live_groups(groups)
        pids = [p for p in pids if alive(p)]
        if not groups and not pids:
            break
        time.sleep(0.05)
    for _ in range(5):
        pids = marked(marker, skip)
        groups = live_groups(groups)
        if not groups and not pids:
            break
        signal_all(groups, pids, signal.SIGKILL)
        time.sleep(0.05)

main()
'''


def set_child_subreaper() -> bool:
    """Make this process the reaper of orphaned descendants (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Guardian:
    """Handle on a running guardian process; see the module docstring."""

    def __init__(self, proc: Optional[subprocess.Popen], write_fd: int, marker: str, grace: float,
                 keep_fds: Sequence[int] = ()) -> None:
        self.proc = proc
        self._fd: Optional[int] = write_fd
        self.marker = marker  #: "KEY=token" every process started after :func:`start` inherits
        self.grace = grace
        self.subreaper = False
        self.replaced = 0  #: how many times a dead guardian was replaced (:meth:`replace_if_dead`)
        self._keep_fds = tuple(keep_fds)
        self._live: set = set()  # registered and not yet unregistered: what a replacement guardian must guard
        self._closed = False
        self._ever_registered: set = set()
        self._last_reap = 0.0

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def _send(self, line: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, line)  # < PIPE_BUF: atomic
        except OSError:
            # the guardian died; nothing to tell any more (instances are still stopped by the scheduler itself)
            os.close(self._fd)
            self._fd = None

    def register(self, pgid: int) -> None:
        """An instance's process group exists: kill it if the orchestrator dies."""
        self._ever_registered.add(int(pgid))
        self._live.add(int(pgid))
        self._send(b"+%d\n" % int(pgid))

    def unregister(self, pgid: int) -> None:
        """The group is gone (its leader reaped, no member left): forget it so a reused id is never killed."""
        self._live.discard(int(pgid))
        self._send(b"-%d\n" % int(pgid))
        self.reap_orphans(min_interval=2.0)

    def replace_if_dead(self) -> Optional[str]:
        """If the guardian process died while guarding (the OOM killer may pick it), start a new one with the same
        marker and the same kept descriptors (the batch lock) and register every live process group with it.

        Returns a one-line description for the log, or None when the guardian is alive (or closed on purpose).
        Raises ``OSError`` if no new guardian can be started.
        """
        if self._closed or self.proc is None or self.proc.poll() is None:
            return None
        old_pid, code = self.proc.pid, self.proc.returncode
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.proc, self._fd = _spawn(self.marker, self.grace, self._keep_fds)
        for pgid in sorted(self._live):
            self._send(b"+%d\n" % pgid)
        self.replaced += 1
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return (f"the guardian (pid {old_pid}) died ({how}); started a new one (pid {self.proc.pid}) guarding "
                f"{len(self._live)} process group(s)")

    def reap_orphans(self, min_interval: float = 0.0) -> int:
        """Reap exited orphans re-parented to us (subreaper); returns how many. Rate-limited by ``min_interval``."""
        if not self.subreaper:
            return 0
        now = time.monotonic()
        if now - self._last_reap < min_interval:
            return 0
        self._last_reap = now
        reaped = 0
        own_group = os.getpgrp()
        for pid in procfs.children():
            if pid == self.pid or pid in self._ever_registered:
                continue
            stat = procfs.stat(pid)
            if stat is None or stat.state != "Z":
                continue
            pgid = stat.pgid
            if pgid == pid or pgid == own_group:
                continue  # could be an instance leader not yet registered, or some code's direct child: not ours
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped += 1
            except ChildProcessError:
                pass
        return reaped

    def close(self, wait: bool = True) -> None:
        """Stop guarding: the guardian kills whatever of the batch is left, then exits; wait for it by default."""
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.proc is not None and wait:
            try:
                self.proc.wait(timeout=self.grace + 10)
            except subprocess.TimeoutExpired:
                pass
        self.reap_orphans()
        if os.environ.get(MARKER_ENV) == self.marker.split("=", 1)[1]:
            del os.environ[MARKER_ENV]

    def __enter__(self) -> Guardian:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spawn(marker: str, grace: float, keep_fds: Sequence[int]) -> Tuple[subprocess.Popen, int]:
    """Start one guardian process (argv only); its handle and the write end of its pipe."""
    read_fd, write_fd = os.pipe()  # both non-inheritable: instances never hold the write end
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", GUARDIAN_SOURCE, str(read_fd), str(os.getpid()), marker, str(grace)],
            pass_fds=(read_fd, *keep_fds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return proc, write_fd


def start(grace: float = DEFAULT_GRACE, keep_fds: Sequence[int] = (), subreaper: bool = False) -> Guardian:
    """Start the guardian for this run; sets ``ORCHESTRATOR_PEX_GUARD`` in ``os.environ`` (inherited by instances)."""
    token = f"{os.getpid()}-{secrets.token_hex(8)}"
    marker = f"{MARKER_ENV}={token}"
    proc, write_fd = _spawn(marker, grace, keep_fds)
    os.environ[MARKER_ENV] = token
    guardian = Guardian(proc, write_fd, marker, grace, keep_fds)
    if subreaper:
        guardian.subreaper = set_child_subreaper()
    return guardian


class Protection:
    """What a protected run hands the scheduler: journal sink and guardian hooks (see :func:`protect`)."""

    def __init__(self, journal, guard: Guardian) -> None:
        self.journal = journal
        self.guardian = guard
        self.sinks = [journal]

    def on_spawn(self, attempt) -> None:
        """Scheduler hook: an attempt's process (leader of its own group) exists."""
        if attempt.pid:
            self.guardian.register(attempt.pid)

    def on_exit(self, attempt) -> None:
        """Scheduler hook: the attempt's process group has been ended and its leader reaped."""
        if attempt.pid:
            self.guardian.unregister(attempt.pid)

    async def watch(self, warn: Callable[[str], None]) -> None:
        """Runner watcher: every :data:`WATCH_INTERVAL` seconds, replace the guardian if it died (``warn`` says so).
        If no new guardian can be started, raise :class:`GuardianLost`: the run's error boundary then stops the
        batch (instances ended, results written, exit 70)."""
        import trio

        while True:
            await trio.sleep(WATCH_INTERVAL)
            try:
                message = self.guardian.replace_if_dead()
            except OSError as exc:
                raise GuardianLost(f"the guardian died and no new one could be started: {exc}") from exc
            if message is not None:
                warn(message)

    @property
    def env_add(self) -> Dict[str, str]:
        """The environment every instance gets from the guardian: its marker (``ORCHESTRATOR_PEX_GUARD=<token>``)."""
        key, _, token = self.guardian.marker.partition("=")
        return {key: token}

    @property
    def scheduler_options(self) -> dict:
        """The scheduler's hooks and the marker, passed explicitly (it does not depend on ``os.environ``)."""
        return {"on_spawn": self.on_spawn, "on_exit": self.on_exit, "env_add": self.env_add}


def protect(run_dir: str, lock_handle=None, grace: float = DEFAULT_GRACE):
    """Context manager for one session of a run (``run`` or ``resume``), entered *before* the scheduler is built:

    opens ``run_dir/journal.jsonl`` (the durable sink), starts the guardian (which keeps ``lock_handle``'s descriptor
    so the batch stays locked until every process of a crashed session is dead) and, on exit, closes both.
    Errors raised inside trio arrive wrapped in exception groups; the command line finds the user-facing one
    (:func:`orchestrator_pex.errors.find`).
    """
    import contextlib

    from orchestrator_pex import journal as journal_mod

    @contextlib.contextmanager
    def manager():
        jr = journal_mod.Journal.open(run_dir)
        try:
            guard = start(grace=grace, keep_fds=(lock_handle.fd,) if lock_handle is not None else ())
            try:
                yield Protection(jr, guard)
            finally:
                guard.close()
        finally:
            jr.close()

    return manager()
