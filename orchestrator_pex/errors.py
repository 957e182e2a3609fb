"""Exit statuses and the one family of errors the command line turns into a one-line message.

Every error a user can cause is built here, so messages keep one shape: ``FILE: KEY.PATH: what was expected, got X``.

* Every :class:`OrchestratorError` is made from the same three parts, ``(file, key, message)``, and its text is
  :func:`located` of them: ``FILE: KEY: message`` (``FILE: message`` without a key). ``FILE`` is what the user gave
  that is wrong or could not be used: a file or directory, else the option or environment variable (``--at``,
  ``SLURM_ARRAY_TASK_ID``), else the command (``merge``); ``KEY`` is the key path inside it, if any. The parts stay
  on the error (``file``, ``key``, ``message``), so a caller that collects problems (``validate``) never parses
  the text back. No raise site writes the shape itself (tests/test_errors_shape.py checks the constructors).
* The class says the exit status (:data:`EXIT_STATUSES`): :class:`UsageError` and :class:`ConfigError` 2,
  :class:`VerifyError` and :class:`RunDirError` 1, :class:`LockHeld` 75.
* "did you mean" is :func:`did_you_mean` (and :func:`unknown_key` for a key), for the batch file, the site policy
  and the command line alike; quoted values go through :func:`describe`, counts through :func:`plural`.
"""

from __future__ import annotations

import difflib
from typing import Dict, Iterable, List, NamedTuple, Optional

EXIT_OK = 0  #: every instance succeeded
EXIT_FAILED = 1  #: at least one instance did not succeed
EXIT_USAGE = 2  #: bad batch file, bad arguments, failed preflight
EXIT_BUDGET = 3  #: a blocking budget stopped the batch
EXIT_SOFTWARE = 70  #: the orchestrator's own bug (EX_SOFTWARE): one line names the saved traceback
EXIT_LOCKED = 75  #: another run of the same batch holds the lock (EX_TEMPFAIL)
EXIT_SIGINT = 130  #: interrupted by SIGINT
EXIT_SIGTERM = 143  #: interrupted by SIGTERM

#: (status, meaning) for ``--help`` and the README; one line each.
EXIT_STATUSES = (
    (EXIT_OK, "every instance succeeded"),
    (EXIT_FAILED, "at least one instance did not succeed"),
    (EXIT_USAGE, "bad batch file, bad arguments, site-policy violation or failed preflight; nothing was started"),
    (EXIT_BUDGET, "the batch's blocking [budget] stopped the batch"),
    (EXIT_SOFTWARE, "internal error (a bug): results so far written; one line names the saved traceback"),
    (EXIT_LOCKED, "another run of the same batch holds its lock; nothing was touched"),
    (EXIT_SIGINT, "interrupted by SIGINT; every child ended, results so far written"),
    (EXIT_SIGTERM, "interrupted by SIGTERM; every child ended, results so far written"),
)


def plural(n: int, word: str) -> str:
    """``1 instance``, ``2 instances``: every count in a user-facing message goes through this."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def exit_status_help() -> str:
    """The exit statuses as a ``--help`` epilog."""
    return "exit statuses:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_STATUSES)


#: Characters never allowed in any string of a batch file: NUL, the other C0 controls except tab, newline and carriage
#: return, DEL, the C1 controls and lone surrogates (they cannot be encoded into argv, env or a file name).
_CONTROL = "".join(chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), *range(0x7F, 0xA0)])
_SURROGATES = "".join(chr(c) for c in range(0xD800, 0xE000))
_ESCAPE: Dict[int, str] = {}  # filled on first use (_escapes): 2,100 entries are not built at every start-up (P3)


def _escapes() -> Dict[int, str]:
    if not _ESCAPE:
        table = {ord(c): f"\\u{ord(c):04x}" for c in _CONTROL + _SURROGATES}
        _ESCAPE.update({**table, 9: "\\t", 10: "\\n", 13: "\\r"})
    return _ESCAPE


class OrchestratorError(Exception):
    """An error with a one-line message for the user, ``FILE: KEY: message``, and the exit status it maps to.

    The command line prints ``str(error)`` through :func:`one_line` (a path or value holding a newline cannot split
    it), unless ``each_line`` is set (:class:`Problems`: one printable line per problem).
    """

    exit_status = EXIT_USAGE
    each_line = False  #: several lines, each printed with the command line's prefix (:class:`Problems`)

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key, self.message = file, key, message
        super().__init__(one_line(located(file, key, message)))


class UsageError(OrchestratorError):
    """Bad arguments or an environment the run cannot start in (exit 2)."""


class ConfigError(OrchestratorError):
    """A batch (or policy, or env) file is malformed: names the file, the key path and what was expected (exit 2)."""


class VerifyError(OrchestratorError):
    """``self verify``: the running PEX is not the one the release signed (exit 1)."""

    exit_status = EXIT_FAILED


def located(file: str, key: str, message: str) -> str:
    """The one shape of a message about a place in a file: ``FILE: KEY: message`` (``FILE: message`` without key)."""
    return f"{file}: {key}: {message}" if key else f"{file}: {message}"


def did_you_mean(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice closest to a mistyped ``word`` (difflib's ratio of at least 0.6), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the choice closest to ``word`` (:func:`did_you_mean`), else ``""``: the one
    wording of the hint, appended to a message."""
    close = did_you_mean(word, choices)
    return f'; did you mean "{close}"?' if close else ""


def unknown_key(key: str, known: Iterable[str]) -> str:
    """``unknown key; did you mean "x"?``, else ``unknown key; expected one of a, b``."""
    known = list(known)
    return "unknown key" + (suggestion(key, known) or f"; expected one of {', '.join(known)}")


class Problem(NamedTuple):
    """One problem (or, with ``warning``, one warning) found before anything starts: ``FILE: KEY: message``."""

    file: str
    key: str
    message: str
    warning: bool = False

    def line(self) -> str:
        """The one printable line: ``FILE: KEY: message`` (``FILE: KEY: warning: message`` for a warning)."""
        message = f"warning: {self.message}" if self.warning else self.message
        return one_line(located(self.file, self.key, message))


#: At most this many problem lines are printed; then one line ``... and N more problems``.
MAX_PROBLEM_LINES = 50


def problem_lines(problems: Iterable[Problem], limit: int = MAX_PROBLEM_LINES) -> List[str]:
    """One line per problem, at most ``limit`` of them, then ``... and N more problems`` if there were more."""
    lines = [p.line() for p in problems]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {plural(len(lines) - limit, 'more problem')}"]
    return lines


class Problems(ConfigError, UsageError):
    """Every problem found before anything started (exit 2): one line each, ``FILE: KEY: message``, in file order.

    The command line prints each line with its usual ``orchestrator-pex:`` prefix (``each_line``). ``file``,
    ``key`` and ``message`` are those of the first problem.
    """

    each_line = True

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        self.file, self.key, self.message = first.file, first.key, first.message
        Exception.__init__(self, "\n".join(problem_lines(self.problems)))


class LockHeld(OrchestratorError):
    """Another run holds the batch's lock (exit 75)."""

    exit_status = EXIT_LOCKED


class RunDirError(OrchestratorError):
    """The run directory or its journal cannot be written or read (exit 1: results so far are kept)."""

    exit_status = EXIT_FAILED


def find(exc: BaseException) -> OrchestratorError | None:
    """The user-facing error inside ``exc``, looking through (nested) exception groups from trio nurseries."""
    if isinstance(exc, OrchestratorError):
        return exc
    for sub in getattr(exc, "exceptions", ()):
        found = find(sub)
        if found is not None:
            return found
    return None


def one_line(text: str) -> str:
    """``text`` with every control character (newline and tab as ``\\n``, ``\\t``) and lone surrogate escaped: a
    message built from user input stays one printable line whatever the input held."""
    return text.translate(_escapes())


def describe(value: object) -> str:
    """How a bad value is quoted in a message: short, JSON-like, never multi-line."""
    if isinstance(value, str):
        text = '"' + one_line(value[:200]) + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "a list"
    elif isinstance(value, int) and value.bit_length() > 128:
        text = f"an integer of {len(str(value)) if value.bit_length() < 10000 else 'thousands of'} digits"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + '..."'
