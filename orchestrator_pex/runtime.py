"""Runtime: run one attempt of one instance as a child process and stream its output.

An attempt is a process started from argv (never a shell) in a new session, so it and everything it starts share
one process group that can be signalled as a whole. Its stdout is read in chunks: every byte goes to the raw log,
complete lines go to :class:`~orchestrator_pex.accounting.Accounting`; a line longer than ``max_line`` bytes is
skipped (still in the raw log) and never held in memory whole. Stderr goes straight to its log file.

Read loop: the stdout pipe is grown to :data:`CHUNK` bytes where the OS allows and its descriptor is read directly
(:func:`_chunks`): a read that filled :data:`CHUNK` is followed at once by the next (after a scheduler checkpoint),
any other by a wait until the pipe is readable, so a chunk costs one wake-up and one ``read``. Each chunk is
written to the raw log and its complete lines accounted before the next read, and ``on_output`` (the scheduler's
budget check) runs after every chunk that completed a line: no delay is added between a byte's arrival and its
accounting beyond the event loop's own. Every byte up to EOF is read, logged and accounted before
:func:`run_attempt` returns, unless the attempt was stopped (time, budget, :meth:`Attempt.stop`: reading ends
there) or something that left the process group holds the pipe open ``grace`` seconds after the agent exited.

Guarantees: when :func:`run_attempt` returns or raises — normal exit, timeout, stall, :meth:`Attempt.stop`, or
cancellation from outside — the process group has been sent SIGTERM, then SIGKILL after ``grace`` seconds if
anything in it was still alive, and the log files are closed. Nothing the instance prints can raise out of the
reader (:meth:`Accounting.feed` never raises; unusable lines count in ``skipped_lines`` and stay in the raw log).

Time rules (one watcher task per attempt decides both; nothing else ends an attempt for time):

* **Silence** (``stall_timeout``) is the time since the last stdout chunk *while the process lives*, whether or
  not its stdout is still open: an agent that closes stdout and keeps running is stalled ``stall_timeout`` after
  its last output. Silence ends with the process (its leader's exit). An attempt is never marked stalled while
  output is waiting unread in its pipe.
* **Paused time is not charged.** Time during which the orchestrator itself was not running (SIGSTOP, a suspended
  VM, an event loop blocked for longer than :data:`PAUSE_SLACK`) counts neither as silence nor towards
  ``timeout``. A :class:`PauseClock` (one per trio run) sleeps in ticks of :data:`PAUSE_TICK` seconds; a wake-up
  more than :data:`PAUSE_SLACK` seconds later than due adds the excess to its paused total (trio's clock,
  ``CLOCK_MONOTONIC``, keeps running while the process is stopped). Before a watcher ends an attempt for time it
  waits for the clock's next tick, so a pause that just ended is always known first; the pause then moves the
  attempt's timeout deadline and its silence start later by the paused time, and output that waited in the pipe
  meanwhile is read before silence is judged again. Consequences: after SIGCONT nothing is marked stalled or
  timed out for the paused time; ends for time are decided up to one tick late; a pause shorter than
  ``PAUSE_SLACK`` (or spread thinly over many ticks) is charged.
"""

from __future__ import annotations

import errno
import fcntl
import io
import math
import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, Dict, List, Optional, Sequence

import trio

from orchestrator_pex.accounting import Accounting
from orchestrator_pex.vocabulary import InstanceStatus

if TYPE_CHECKING:  # annotations only
    from orchestrator_pex.secrets import Redactor, StreamScrubber

CHUNK = 256 * 1024  #: largest read of an instance's stdout (its pipe is grown to this size where the OS allows)
#: Linux's F_SETPIPE_SZ (fcntl has the name from Python 3.10); None where pipes cannot be grown (macOS)
_F_SETPIPE_SZ: Optional[int] = getattr(fcntl, "F_SETPIPE_SZ", 1031 if sys.platform.startswith("linux") else None)
DEFAULT_MAX_LINE = 4 * 1024 * 1024
_STDERR_TAIL = 2048
PAUSE_TICK = 0.25  #: seconds between two wake-ups of the pause clock
PAUSE_SLACK = 1.0  #: a wake-up later than due by more than this many seconds means the orchestrator was paused


class PauseClock:
    """Time the orchestrator was not running, measured on trio's clock; one per trio run (see :func:`pause_clock`).

    ``paused`` only grows. :meth:`settled` waits for the next tick and returns ``paused`` as known then: any pause
    that ended before the call is included.
    """

    def __init__(self) -> None:
        self.paused = 0.0
        self.pauses = 0
        self._tick = trio.Event()

    async def run(self) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(PAUSE_TICK)
            now = trio.current_time()
            late = now - last - PAUSE_TICK
            last = now
            if late > PAUSE_SLACK:
                self.paused += late
                self.pauses += 1
            self._tick.set()
            self._tick = trio.Event()

    async def settled(self) -> float:
        await self._tick.wait()
        return self.paused


_CLOCK: trio.lowlevel.RunVar[PauseClock] = trio.lowlevel.RunVar("orchestrator_pex_pause_clock")


def pause_clock() -> PauseClock:
    """This trio run's :class:`PauseClock`, started (as a system task) on first use."""
    try:
        return _CLOCK.get()
    except LookupError:
        clock = PauseClock()
        _CLOCK.set(clock)
        trio.lowlevel.spawn_system_task(clock.run, name="orchestrator_pex pause clock")
        return clock


class Attempt:
    """Live state of one attempt: read by the scheduler and the report while it runs."""

    __slots__ = (
        "number", "acct", "pid", "started_at", "finished_at", "started_mono", "last_output_mono",
        "exit_code", "stop_reason", "error", "skipped_lines", "scope",
    )

    def __init__(self, number: int, acct: Optional[Any] = None) -> None:
        self.number = number
        #: the agent dialect's reader (:mod:`orchestrator_pex.agents`); Claude Code's Accounting by default
        self.acct = acct if acct is not None else Accounting()
        self.pid: Optional[int] = None
        self.started_at = self.finished_at = 0.0  # wall clock (time.time())
        self.started_mono = self.last_output_mono = 0.0
        self.exit_code: Optional[int] = None
        #: why the orchestrator ended it: timed-out, stalled, budget-stopped or cancelled (the record's status)
        self.stop_reason: Optional[InstanceStatus] = None
        self.error: Optional[str] = None
        self.skipped_lines = 0
        self.scope: Optional[trio.CancelScope] = None

    def stop(self, reason: InstanceStatus) -> None:
        """End this attempt (its process group is terminated); the first reason given is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.scope is not None:
            self.scope.cancel()


async def run_attempt(
    attempt: Attempt,
    argv: Sequence[str],
    *,
    env: Optional[Dict[str, str]],
    cwd: Optional[str],
    stdout_log: str,
    stderr_log: str,
    timeout: Optional[float] = None,
    stall_timeout: Optional[float] = None,
    grace: float = 10.0,
    max_line: int = DEFAULT_MAX_LINE,
    on_output: Callable[[Attempt], None] = lambda a: None,
    on_spawn: Callable[[Attempt], None] = lambda a: None,
    redactor: Optional[Redactor] = None,
) -> None:
    """Run ``argv`` to the end; fill in ``attempt``. Raises ``OSError`` (not started) if the program cannot start.

    ``timeout`` bounds the whole attempt; ``stall_timeout`` bounds the silence since the last stdout chunk while
    the process lives; time the orchestrator was paused counts towards neither (see the module docstring).
    ``on_output`` is called after each chunk is accounted (the scheduler checks budgets there).
    ``redactor`` (a :class:`~orchestrator_pex.secrets.Redactor`) masks secret values in both raw logs; stderr is
    then piped through the orchestrator instead of going straight to its file.
    """
    # Unbuffered: `tail -f` on a log shows output as it arrives (writes are whole chunks, not lines).
    with open(stdout_log, "ab", buffering=0) as out, open(stderr_log, "ab", buffering=0) as err:
        attempt.started_at = time.time()
        attempt.started_mono = attempt.last_output_mono = trio.current_time()
        proc = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if redactor is not None else err,
            cwd=cwd, env=env, start_new_session=True,
        )
        attempt.pid = proc.pid
        _grow_pipe(proc.stdout)
        on_spawn(attempt)
        try:
            with trio.CancelScope() as attempt.scope:  # the attempt's lifetime: the watcher and stop() cancel it
                if attempt.stop_reason is not None:
                    attempt.scope.cancel()
                pumped = trio.Event()
                async with trio.open_nursery() as nursery:
                    write: Callable[[bytes], object] = out.write
                    assert proc.stdout is not None  # piped above
                    if redactor is not None:
                        out_scrub, err_scrub = redactor.stream(), redactor.stream()
                        write = lambda chunk: out.write(out_scrub.feed(chunk))  # noqa: E731 - rebinds the one writer
                        assert proc.stderr is not None  # piped above when there is a redactor
                        nursery.start_soon(_copy_scrubbed, proc.stderr, err, err_scrub)
                    nursery.start_soon(_pump, proc.stdout, attempt, write, max_line, on_output, pumped)
                    watch_scope = trio.CancelScope()  # entered by _watch
                    if timeout is not None or stall_timeout is not None:
                        nursery.start_soon(_watch, attempt, proc.stdout, timeout, stall_timeout, pumped, watch_scope)
                    await proc.wait()
                    watch_scope.cancel()  # silence and timeout end with the process
                    # The agent is gone; end whatever it left in its group so the pipe reaches EOF.
                    await _end_group(proc.pid, grace)
                    with trio.move_on_after(grace):  # an escaped grandchild may still hold the pipe
                        await pumped.wait()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _terminate(proc, grace)
                attempt.exit_code = proc.returncode
                attempt.finished_at = time.time()
                tail = _stderr_tail(stderr_log, proc.returncode)
                if attempt.error is None:
                    attempt.error = tail
                elif tail and attempt.stop_reason:  # e.g. "timed out after 5s (killed by SIGKILL)"
                    attempt.error = f"{attempt.error} ({tail})"
                if redactor is not None:
                    out.write(out_scrub.flush())


async def _watch(attempt: Attempt, stream: trio.abc.ReceiveStream, timeout: Optional[float],
                 stall_timeout: Optional[float], pumped: trio.Event, scope: trio.CancelScope) -> None:
    """End ``attempt`` as timed out or stalled by the time rules of the module docstring."""
    with scope:
        clock = pause_clock()
        seen = clock.paused
        end = attempt.started_mono + timeout if timeout is not None else math.inf
        silent_since = attempt.last_output_mono
        while True:
            silent_since = max(silent_since, attempt.last_output_mono)
            stall_at = silent_since + stall_timeout if stall_timeout is not None else math.inf
            await trio.sleep_until(min(end, stall_at))
            paused = await clock.settled()  # a pause that just ended is known before anything is decided
            if paused > seen:
                end += paused - seen
                silent_since += paused - seen
                seen = paused
                continue
            now = trio.current_time()
            if now >= end:
                attempt.error = attempt.error or f"timed out after {timeout:g}s"
                attempt.stop(InstanceStatus.TIMED_OUT)
                return
            silent_since = max(silent_since, attempt.last_output_mono)
            if stall_timeout is not None and now >= silent_since + stall_timeout:
                if not pumped.is_set() and _readable(stream):
                    continue  # output is waiting: the reader takes it first (the next check is a tick later)
                attempt.error = attempt.error or f"stalled: no output for {stall_timeout:g}s"
                attempt.stop(InstanceStatus.STALLED)
                return


def _grow_pipe(stream: Any) -> None:
    """Let the instance's stdout pipe hold :data:`CHUNK` bytes (64 KiB by default on Linux): fewer, larger reads —
    fewer wake-ups, system calls and log writes per line. Best effort: where it is refused, nothing changes."""
    if _F_SETPIPE_SZ is None or stream is None:
        return
    try:
        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, CHUNK)
    except (OSError, ValueError, AttributeError):
        pass


def _readable(stream: Any) -> bool:  # a trio pipe stream (FdStream, which has fileno())
    """True if output (or EOF) is waiting unread in ``stream``'s pipe."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


async def _pump(stream: trio.abc.ReceiveStream, attempt: Attempt, write: Callable[[bytes], object], max_line: int,
                on_output: Callable[[Attempt], None], pumped: trio.Event) -> None:
    """Copy stdout to the raw log (``write``) and feed complete lines to accounting until EOF; then set ``pumped``.

    Reads the pipe's descriptor directly (one wake-up and one ``read`` per chunk; see :func:`_chunks`)."""
    feed = attempt.acct.feed
    pending: List[bytes] = []
    pending_len = 0
    skipping = False  # inside an over-long line: drop bytes until the next newline
    chunks = _chunks(stream)
    try:
        async for chunk in chunks:
            attempt.last_output_mono = trio.current_time()
            try:
                write(chunk)
            except OSError as exc:  # disk full, I/O error: an instance that cannot be logged is stopped
                attempt.error = f"cannot write its stdout log: {exc.strerror or exc}"
                # the orchestrator's failure, not the agent's: resume reruns it
                attempt.stop(InstanceStatus.CANCELLED)
                return
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                skipping = False
                chunk = chunk[nl + 1:]
            last = chunk.rfind(b"\n")
            if last < 0:
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len > max_line:
                    pending, pending_len, skipping = [], 0, True
                    attempt.skipped_lines += 1
                continue
            if pending:
                first = chunk.find(b"\n")
                pending.append(chunk[:first])
                if pending_len + first <= max_line:
                    if not feed(b"".join(pending)):
                        attempt.skipped_lines += 1
                else:
                    attempt.skipped_lines += 1
                lines = chunk[first + 1:last].split(b"\n") if first != last else ()
            else:
                lines = chunk[:last].split(b"\n")
            for line in lines:
                if not feed(line):
                    attempt.skipped_lines += 1
            tail = chunk[last + 1:]
            pending, pending_len = ([tail], len(tail)) if tail else ([], 0)
            on_output(attempt)
        if pending and not skipping:  # a last line without newline
            line = b"".join(pending)
            if not feed(line):
                attempt.skipped_lines += 1
            on_output(attempt)
    finally:
        await chunks.aclose()  # suspended at a yield or already finished: closes without waiting
        pumped.set()


async def _chunks(stream: Any) -> AsyncGenerator[bytes, None]:
    """The chunks read from ``stream`` (a trio pipe stream) until EOF, at most :data:`CHUNK` bytes each.

    Reads its descriptor directly rather than through ``receive_some``, which first yields to the scheduler and then
    tries a ``read`` that, on a stream that prints now and then, fails with ``EAGAIN`` before it waits: here a read
    that filled :data:`CHUNK` is followed by another read at once (after a checkpoint: a fast stream does not
    starve the others), any other by a wait for the descriptor to become readable, so each chunk of a slow stream
    costs one wake-up and one successful ``read``. A stream without a descriptor is read with ``receive_some``.

    After a wait, the read goes into this trio run's one :data:`CHUNK`-byte buffer (:func:`_read_buffer`) and the
    chunk is a copy of the bytes read: ``os.read(fd, CHUNK)`` allocates :data:`CHUNK` bytes (above the C
    allocator's mmap threshold) for every read and shrinks them to what came, which costs 10-40 µs per read of a
    few KiB (measured: 1 KB 14.0 against 1.7 µs, 64 KiB 56.9 against 15.1 µs). Only a read right after a full one
    uses ``os.read`` (it will most likely fill the chunk again, and then nothing is copied or shrunk). The buffer is
    shared by every stream of the run: it is filled and copied with no ``await`` in between."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        while True:
            chunk = await stream.receive_some(CHUNK)
            if not chunk:
                return
            yield chunk
    fd = fileno()
    wait_readable, checkpoint, read, readv = trio.lowlevel.wait_readable, trio.lowlevel.checkpoint, os.read, os.readv
    view = _read_buffer()
    into = (view,)
    full = False
    while True:
        try:
            if full:
                await checkpoint()
                chunk = read(fd, CHUNK)
            else:
                await wait_readable(fd)
                n = readv(fd, into)
                chunk = bytes(view[:n])
        except BlockingIOError:  # woken without data (another reader of the pipe took it): wait again
            full = False
            continue
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("file was already closed") from None
            raise trio.BrokenResourceError from exc
        if not chunk:
            return
        full = len(chunk) == CHUNK
        yield chunk


_BUFFER: trio.lowlevel.RunVar[memoryview] = trio.lowlevel.RunVar("orchestrator_pex_read_buffer")


def _read_buffer() -> memoryview:
    """This trio run's read buffer (:data:`CHUNK` bytes, made on first use; see :func:`_chunks`)."""
    try:
        return _BUFFER.get()
    except LookupError:
        view = memoryview(bytearray(CHUNK))
        _BUFFER.set(view)
        return view


async def _copy_scrubbed(stream: trio.abc.ReceiveStream, f: io.FileIO, scrubber: StreamScrubber) -> None:
    chunks = _chunks(stream)
    try:
        async for chunk in chunks:
            f.write(scrubber.feed(chunk))
    finally:
        await chunks.aclose()
        f.write(scrubber.flush())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _end_group(pgid: int, grace: float) -> None:
    """SIGTERM what is left in the group, SIGKILL after ``grace`` seconds."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    with trio.move_on_after(grace):
        while _group_alive(pgid):
            await trio.sleep(0.05)
        return
    _signal_group(pgid, signal.SIGKILL)
    with trio.move_on_after(grace):
        while _group_alive(pgid):
            await trio.sleep(0.05)


async def _terminate(proc: trio.Process, grace: float) -> None:
    """End the attempt's process and its whole group: SIGTERM, then SIGKILL after ``grace``; reap the leader."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    await _end_group(proc.pid, grace)


def _stderr_tail(path: str, returncode: Optional[int]) -> Optional[str]:
    """The last non-empty stderr line, for the results' ``error`` when the process failed."""
    if returncode is None or returncode == 0:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _STDERR_TAIL))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        tail = []
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        prefix = f"killed by {name}"
    else:
        prefix = f"exit status {returncode}"
    return f"{prefix}: {tail[-1][:500]}" if tail else prefix
