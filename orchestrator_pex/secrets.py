"""Secret hygiene: which environment variables hold secrets, and scrubbing their values out of any text.

Semantics:

* :func:`is_secret_name` says whether an environment variable *name* denotes a secret. A name is secret when it
  (compared upper-cased) ends in ``_KEY``, ``_TOKEN`` or ``_SECRET``, contains ``PASSWORD``, ``PASSWD``,
  ``CREDENTIAL`` or ``SECRET_``, is on :data:`KNOWN_SECRET_NAMES`, or matches one of the names or shell-style
  patterns listed (comma, colon or whitespace separated) in the environment variable
  ``ORCHESTRATOR_PEX_SECRET_NAMES``.
* :func:`redact_env` returns a copy of a mapping with every secret-named value replaced by ``"***"`` (for dry-run
  output and results).
* :class:`Redactor` knows secret *values* (taken from the process environment and the batch's ``env`` tables) and
  replaces every occurrence of any of them -- raw, JSON-escaped or URL-quoted -- with ``"***"`` in ``str`` or
  ``bytes``. Values shorter than :data:`MIN_SECRET_LEN` characters are not scrubbed: they would match everywhere
  and destroy the text while protecting nothing worth protecting. :meth:`Redactor.stream` scrubs a byte stream
  that arrives in chunks, holding back just enough bytes that a secret split across two chunks is still caught.

Only the standard library is used, so the module is safe to import from any command at module level.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import urllib.parse
from typing import Any, Iterable, Mapping, Optional, Union

MASK = "***"
MIN_SECRET_LEN = 4
USER_NAMES_ENV = "ORCHESTRATOR_PEX_SECRET_NAMES"

#: Names that are secret whatever the patterns say.
KNOWN_SECRET_NAMES = frozenset(
    {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITLAB_TOKEN",
        "NPM_TOKEN",
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "DATABASE_URL",
        "PGPASSWORD",
        "MYSQL_PWD",
        "ORCHESTRATOR_PEX_SIGNING_KEY",
    }
)
_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
_INFIXES = ("PASSWORD", "PASSWD", "CREDENTIAL", "SECRET_")


def _user_patterns(environ: Optional[Mapping[str, str]] = None) -> list:
    raw = (os.environ if environ is None else environ).get(USER_NAMES_ENV, "")
    return [p.upper() for p in re.split(r"[\s,:]+", raw) if p]


def is_secret_name(name: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when the environment variable ``name`` holds a secret (see the module docstring for the rules).

    ``environ`` is where ``ORCHESTRATOR_PEX_SECRET_NAMES`` is read from (default: ``os.environ``).
    """
    upper = name.upper()
    if upper in KNOWN_SECRET_NAMES or upper.endswith(_SUFFIXES) or any(i in upper for i in _INFIXES):
        return True
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in _user_patterns(environ))


def redact_env(mapping: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> dict:
    """A copy of ``mapping`` whose secret-named values are replaced by ``"***"``; other values are kept as they are."""
    return {k: (MASK if is_secret_name(k, environ) else v) for k, v in mapping.items()}


def secret_values(*mappings: Optional[Mapping[str, Any]], environ: Optional[Mapping[str, str]] = None) -> set:
    """Every string value of a secret-named key in ``mappings`` (``None`` entries are skipped)."""
    found = set()
    for mapping in mappings:
        for key, value in (mapping or {}).items():
            if isinstance(value, str) and value and is_secret_name(key, environ):
                found.add(value)
    return found


def _variants(value: str) -> set:
    """The forms a value takes in the text we write: raw, inside a JSON string, URL-quoted."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(urllib.parse.quote(value, safe=""))
    forms.add(urllib.parse.quote_plus(value, safe=""))
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


Text = Union[str, bytes]


class Redactor:
    """Replaces known secret values with ``"***"`` in text, bytes and JSON-like data.

    Build it with :meth:`from_env` (the process environment plus the batch ``env`` tables) or directly from values.
    A redactor without values returns its input unchanged.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms = set()
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_SECRET_LEN:
                forms |= _variants(value)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._max_len = max((len(f.encode("utf-8")) for f in ordered), default=0)
        if ordered:
            self._str_re: Optional[re.Pattern] = re.compile("|".join(re.escape(f) for f in ordered))
            self._bytes_re: Optional[re.Pattern] = re.compile(
                b"|".join(re.escape(f.encode("utf-8")) for f in ordered)
            )
        else:
            self._str_re = self._bytes_re = None

    @classmethod
    def from_env(
        cls, environ: Optional[Mapping[str, str]] = None, *env_tables: Optional[Mapping[str, Any]]
    ) -> "Redactor":
        """A redactor for the secret-named values of ``environ`` (default ``os.environ``) and of ``env_tables``."""
        environ = os.environ if environ is None else environ
        return cls(secret_values(environ, *env_tables, environ=environ))

    def __bool__(self) -> bool:
        return self._str_re is not None

    def scrub(self, text: Text) -> Text:
        """``text`` (``str`` or ``bytes``) with every secret value replaced by ``***``."""
        if isinstance(text, (bytes, bytearray)):
            if self._bytes_re is None:
                return bytes(text)
            return self._bytes_re.sub(MASK.encode(), bytes(text))
        if self._str_re is None:
            return text
        return self._str_re.sub(MASK, text)

    def scrub_data(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` (dicts, lists, strings, numbers) with secrets scrubbed from every string,
        keys included."""
        if isinstance(data, (str, bytes, bytearray)):
            return self.scrub(data)
        if isinstance(data, Mapping):
            return {self.scrub_data(k): self.scrub_data(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return type(data)(self.scrub_data(v) for v in data)
        return data

    def stream(self) -> "StreamScrubber":
        """A scrubber for one byte stream arriving in chunks (a child's stdout, a log file)."""
        return StreamScrubber(self)


class StreamScrubber:
    """Scrubs a chunked byte stream: :meth:`feed` returns what can safely be written now, :meth:`flush` the rest.

    Up to (longest secret - 1) bytes are held back between calls, so a secret split across chunks is still masked.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        pattern, keep = self._redactor._bytes_re, self._redactor._max_len - 1
        if pattern is None:
            return bytes(chunk)
        buf = self._pending + bytes(chunk)
        cut = max(len(buf) - keep, 0)
        out, pos = [], 0
        for match in pattern.finditer(buf):
            if match.start() >= cut:
                break
            out.append(buf[pos : match.start()])
            out.append(MASK.encode())
            pos = match.end()
        cut = max(cut, pos)
        out.append(buf[pos:cut])
        self._pending = buf[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._redactor.scrub(rest)  # type: ignore[return-value]
