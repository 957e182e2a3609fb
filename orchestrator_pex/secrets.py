"""Secret hygiene: which environment variables hold secrets, and scrubbing their values out of any text.

Semantics:

* :func:`is_secret_name` says whether an environment variable *name* denotes a secret. A name is secret when it
  (compared upper-cased) ends in ``_KEY``, ``_TOKEN`` or ``_SECRET``, contains ``PASSWORD``, ``PASSWD``,
  ``CREDENTIAL`` or ``SECRET_``, is on :data:`KNOWN_SECRET_NAMES`, or matches one of the names or shell-style
  patterns listed (comma, colon or whitespace separated) in the environment variable
  ``ORCHESTRATOR_PEX_SECRET_NAMES`` (that variable itself is not secret).
* :func:`redact_env` returns a copy of a mapping with every secret-named value replaced by ``"***"`` (for dry-run
  output and results).
* :class:`Redactor` knows secret *values* (taken from the process environment and the batch's ``env`` tables, plus
  every value of the run's env file whatever its name) and
  replaces every occurrence of any of them -- raw, JSON-escaped or URL-quoted -- with ``"***"`` in ``str`` or
  ``bytes``. Values shorter than :data:`MIN_SECRET_LEN` characters are not scrubbed: they would match everywhere
  and destroy the text while protecting nothing worth protecting. :meth:`Redactor.stream` scrubs a byte stream
  that arrives in chunks, holding back just enough bytes that a secret split across two chunks is still caught.
* :meth:`Redactor.scrub_data` never changes a document's structure: keys that are plain identifiers (lowercase
  ASCII letters, digits, ``_`` -- the vocabulary of our documents, e.g. ``tokens``) are never rewritten, nor are the
  values of :data:`VOCABULARY_KEYS` (``name``, ``status``, ...), so a secret that happens to be a common word
  (``"tokens"``, ``"failed"``) cannot corrupt a record. Any other key (a tool name an agent printed) is scrubbed
  like a value; two keys that scrub to the same text are kept apart (``***``, ``*** #2``).
* :func:`masked_copy` masks secret values in a batch file's bytes *however the file spells them* (TOML or JSON
  escapes such as ``"\u0073ecret"`` or ``"sec\"ret"``): the raw text is scrubbed, then parsed again; if any string
  in it (key or value) still decodes to text holding a secret, the copy is instead re-serialized from the parsed
  values with every secret masked (comments and layout are lost; the secret is not). A copy that would still decode
  to a secret is never returned.

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
#: Keys whose values are fixed vocabulary or batch-defined identifiers: never scrubbed by :meth:`Redactor.scrub_data`.
VOCABULARY_KEYS = frozenset({"name", "status", "cost_source", "kind", "event", "schema_version"})
_PLAIN_KEY = re.compile(r"[a-z][a-z0-9_]*")  # always fullmatch
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
    if upper == USER_NAMES_ENV:  # the list of secret names is not itself a secret (it contains "SECRET_")
        return False
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
        cls, environ: Optional[Mapping[str, str]] = None, *env_tables: Optional[Mapping[str, Any]],
        always: Iterable[str] = (),
    ) -> Redactor:
        """A redactor for the secret-named values of ``environ`` (default ``os.environ``) and of ``env_tables``, plus
        ``always``: values that are secret whatever their names (an env file's, see :mod:`orchestrator_pex.envfile`)."""
        environ = os.environ if environ is None else environ
        return cls(secret_values(environ, *env_tables, environ=environ) | {v for v in always if v})

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

    def scrub_text(self, text: str) -> str:
        """:meth:`scrub` for ``str`` only (typed as such)."""
        out = self.scrub(text)
        return out if isinstance(out, str) else out.decode("utf-8", "replace")

    def contains(self, text: Text) -> bool:
        """Whether ``text`` holds any secret value (in any of the forms :meth:`scrub` masks)."""
        if isinstance(text, (bytes, bytearray)):
            return self._bytes_re is not None and self._bytes_re.search(bytes(text)) is not None
        return self._str_re is not None and self._str_re.search(text) is not None

    def scrub_data(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` (dicts, lists, strings, numbers) with secrets scrubbed from every string.

        The structure is kept (see the module docstring): plain-identifier keys and the values of
        :data:`VOCABULARY_KEYS` are never changed; other keys are scrubbed and kept distinct."""
        if isinstance(data, (str, bytes, bytearray)):
            return self.scrub(data)
        if isinstance(data, Mapping):
            out: dict = {}
            for k, v in data.items():
                if isinstance(k, str) and _PLAIN_KEY.fullmatch(k):
                    out[k] = v if k in VOCABULARY_KEYS and isinstance(v, str) else self.scrub_data(v)
                    continue
                key = self.scrub_text(k) if isinstance(k, str) else k
                if key != k:
                    n, base = 1, key
                    while key in out or key in data:
                        n += 1
                        key = f"{base} #{n}"
                out[key] = self.scrub_data(v)
            return out
        if isinstance(data, (list, tuple)):
            return type(data)(self.scrub_data(v) for v in data)
        return data

    def stream(self) -> StreamScrubber:
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
        return self._redactor.scrub(rest)  # type: ignore[return-value]  # bytes in, bytes out


def masked_copy(data: bytes, is_json: bool, redactor: Redactor) -> bytes:
    """``data`` (a batch file) with every secret value masked however the file spells it (see the module docstring).

    ``is_json``: the file is JSON (else TOML). Raises ``ValueError`` only if no masked form can be produced (never
    for a file that parsed as a batch).
    """
    if not redactor:
        return bytes(data)
    raw = redactor.scrub(bytes(data))
    if not isinstance(raw, bytes):  # pragma: no cover - scrub returns the type it is given
        raise TypeError("scrub(bytes) must return bytes")
    if not _decodes_to_secret(raw, is_json, redactor):
        return raw
    parsed = _parse(bytes(data), is_json)
    if parsed is None:
        raise ValueError("the batch file cannot be parsed, so its secrets cannot be masked")
    masked = _mask_all(parsed, redactor)
    if is_json:
        out = json.dumps(masked, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    else:
        import tomli_w

        out = ("# re-written with secret values masked; comments and layout of the original are not kept\n"
               + tomli_w.dumps(masked)).encode("utf-8")
    if _decodes_to_secret(out, is_json, redactor):  # pragma: no cover - _mask_all masks every string
        raise ValueError("a secret value survived masking")
    return out


def _parse(data: bytes, is_json: bool) -> Any:
    try:
        if is_json:
            return json.loads(data)
        import sys

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - 3.9/3.10
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]  # 3.9/3.10 fallback
        return tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _strings(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for k, sub in v.items():
                if isinstance(k, str):
                    yield k
                stack.append(sub)
        elif isinstance(v, list):
            stack.extend(v)


def _decodes_to_secret(data: bytes, is_json: bool, redactor: Redactor) -> bool:
    """Whether ``data`` parsed holds a secret in any string, or cannot be parsed (then its escapes are unknown)."""
    parsed = _parse(data, is_json)
    if parsed is None:
        # unparsable after masking (e.g. a masked key): judge the raw text and the text with escapes undone
        text = data.decode("utf-8", "replace")
        try:
            unescaped = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except (UnicodeDecodeError, ValueError):
            unescaped = text
        return redactor.contains(text) or redactor.contains(unescaped)
    return any(redactor.contains(s) for s in _strings(parsed))


def _mask_all(value: Any, redactor: Redactor) -> Any:
    """Every string (keys included) of parsed ``value`` scrubbed; keys kept distinct."""
    if isinstance(value, str):
        return redactor.scrub(value)
    if isinstance(value, dict):
        out: dict = {}
        for k, v in value.items():
            key = redactor.scrub_text(k) if isinstance(k, str) else k
            n, base = 1, key
            while key in out:
                n += 1
                key = f"{base} #{n}"
            out[key] = _mask_all(v, redactor)
        return out
    if isinstance(value, list):
        return [_mask_all(v, redactor) for v in value]
    return value
