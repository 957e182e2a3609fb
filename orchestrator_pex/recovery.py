"""Recovering the spend of attempts that never recorded an end (the orchestrator was killed under them).

Every ``instance_started`` event the scheduler writes carries ``stdout_offset``: the size of the instance's raw
stdout log (``logs/STEM.stdout``, :func:`orchestrator_pex.results.log_stem`) just before that attempt started,
so the bytes from that offset to the next
attempt's offset (or to the end of the file) are exactly that attempt's output. When the journal shows an
instance's ``instance_started`` events with no ``instance_finished`` after them (see
:attr:`orchestrator_pex.journal.RunState.unfinished`), :func:`recover` re-reads each such attempt's part of the log
with the same reader the live run used (the agent dialect's, named by the event's ``agent``; Claude Code's
:class:`~orchestrator_pex.accounting.Accounting` when absent), lines longer than
:data:`~orchestrator_pex.runtime.DEFAULT_MAX_LINE` skipped) and returns a record holding their tokens, cost and
tools, added on top of the instance's last recorded ``instance_finished`` record when there is one.

Exactly once: the result is a pure function of the journal and the log. Nothing is written here; ``resume`` carries
the recovered record into the instance's next ``instance_finished``, and from then on those attempts are no longer
unfinished. A resume that is itself killed leaves more unfinished attempts (each with its own offset), which the
next resume reads the same way; nothing is counted twice.

Journals written before offsets were recorded: an attempt without ``stdout_offset`` is read from the start of the
log (or from the end of the previous unfinished attempt), so it may also count output of attempts an earlier
record already holds.

Only a regular file owned by this user (or root) and not writable by others is read
(:func:`orchestrator_pex.lock.untrusted`); another log is left out and reported as a problem.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from orchestrator_pex.runtime import DEFAULT_MAX_LINE, Attempt
from orchestrator_pex.vocabulary import InstanceStatus

_READ = 64 * 1024


def _offset(event: Dict[str, Any]) -> Optional[int]:
    value = event.get("stdout_offset")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def read_attempt(path: str, start: int, end: Optional[int], number: int = 1,
                 max_line: int = DEFAULT_MAX_LINE, agent: Optional[str] = None) -> Attempt:
    """An :class:`Attempt` whose accounting (``agent``'s reader) holds the lines of ``path`` between byte ``start``
    and ``end`` (EOF if None). A line that is cut by ``end`` or longer than ``max_line`` is skipped, as the live
    reader does."""
    from orchestrator_pex.agents import new_reader

    agent_name = agent if isinstance(agent, str) else None
    attempt = Attempt(number, new_reader(agent_name))
    with open(path, "rb") as f:
        f.seek(start)
        left = None if end is None else max(0, end - start)
        pending = b""
        skipping = False
        while left is None or left > 0:
            chunk = f.read(_READ if left is None else min(_READ, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            parts = (pending + chunk).split(b"\n") if not skipping else chunk.split(b"\n")
            if skipping:
                if len(parts) == 1:
                    continue
                skipping = False
                parts = parts[1:]
            pending = parts.pop()
            for line in parts:
                if len(line) > max_line or not attempt.acct.feed(line):
                    attempt.skipped_lines += 1
            if len(pending) > max_line:
                pending, skipping = b"", True
                attempt.skipped_lines += 1
        if pending and not skipping and not attempt.acct.feed(pending):
            attempt.skipped_lines += 1
    return attempt


def recover(run_dir: str, name: str, starts: Sequence[Dict[str, Any]],
            earlier: Optional[Dict[str, Any]]) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """``(record, problems)``: the spend of ``name``'s unfinished attempts (``starts``, their ``instance_started``
    events in journal order) as an instance record, added to ``earlier`` (its last recorded record) if given.
    ``record`` is None when there is no log to read."""
    from orchestrator_pex import results
    from orchestrator_pex.journal import journal_path
    from orchestrator_pex.lock import untrusted
    from orchestrator_pex.records import InstanceRecord, record_from_json, to_json

    stem = results.log_stem(name)
    path = os.path.join(run_dir, "logs", f"{stem}.stdout")
    try:
        problem = untrusted(os.path.join(run_dir, "logs"), directory=True) or untrusted(path, directory=False)
        size = os.path.getsize(path)
    except OSError:
        return None, []
    if problem:
        return None, [f"{path}: not read to recover the spend of interrupted attempts: {problem}"]
    attempts: List[Attempt] = []
    previous_end = 0
    offsets = [_offset(e) for e in starts]
    for i in range(len(starts)):
        own = offsets[i]
        start = min(own if own is not None else previous_end, size)
        later = [o for o in offsets[i + 1:] if o is not None]
        end = later[0] if later else None
        try:
            attempts.append(read_attempt(path, start, end, number=i + 1, agent=starts[i].get("agent")))
        except OSError as exc:
            return None, [f"{path}: cannot read it to recover the spend of interrupted attempts: "
                          f"{exc.strerror or exc}"]
        previous_end = end if end is not None else size
    record = InstanceRecord.of_attempts(name, InstanceStatus.CANCELLED, attempts, stdout_log=path,
                                        stderr_log=os.path.join(run_dir, "logs", f"{stem}.stderr"),
                                        agent=next((s.get("agent") for s in reversed(starts)
                                                    if isinstance(s.get("agent"), str)), None))
    if earlier is not None and isinstance(earlier.get("tokens"), dict):
        record = record.carry(record_from_json(earlier, journal_path(run_dir), f"record of {name!r}", name=name))
    return to_json(record), []
