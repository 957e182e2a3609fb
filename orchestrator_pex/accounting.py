"""Accounting from Claude Code ``stream-json``: tokens, cost, tools, model, session, turns, result.

Rules the real CLI forces (see the transcripts of Claude Code 2.1.330):

* one API message arrives as several ``assistant`` events sharing ``message.id``, each repeating the usage of
  ``message_start``: usage is counted once per message id, tools once per ``tool_use`` block;
* the ``result`` event carries the CLI's own totals and ``total_cost_usd``; without it the cost is estimated from
  per-message usage and the pricing table;
* ``is_error`` with ``api_error_status`` marks an API failure (401, 429, 529, 5xx).

Everything an instance prints is untrusted data (see :mod:`orchestrator_pex.untrusted`). Guarantees:

* :meth:`Accounting.feed` never raises: a line that cannot be parsed or handled for any reason (bad JSON, nesting
  deep enough to raise ``RecursionError``, wrong types, huge numbers) is counted in ``bad_lines`` and ignored (except
  a line skipped unparsed, see *Speed* below); the state it may have half-updated only ever holds validated values.
* every number is validated before it is used: token counts by :func:`untrusted.count`, dollars by
  :func:`untrusted.dollars`; an invalid value (negative, NaN, Infinity, string, bool, above the bound) counts as
  absent, never as a value that could lower a total.
* a ``result`` can never make spend smaller than the stream showed. Usage streamed in ``assistant`` events is
  summed per message id whenever it arrives (before or after a ``result``); each token kind reported is the larger
  of the streamed sum and the result's figure (the largest of several results), so no line ever lowers a token
  figure. ``cost_usd`` is the result's ``total_cost_usd`` (the largest given) when the result accounts for every
  streamed token and costs at least half the estimate from streamed usage (:meth:`Accounting.result_cost_trusted`:
  the pricing table may lag the vendor's prices), else the larger of the two; ``cost_source`` says which:
  ``"result"`` (the agent's own figure), ``"stream"`` (a result cost was given but hid tokens or was below half the
  estimate from streamed usage: the larger figure is used),
  ``"estimate"`` (no usable result cost: estimated from the reported tokens).
* memory is bounded whatever is printed: tool names are cut by :func:`untrusted.name` and at most
  :data:`MAX_TOOL_NAMES` distinct names are kept per attempt, further names counting under :data:`OTHER_TOOLS`;
  model, session and version strings are cut to :data:`~orchestrator_pex.untrusted.MAX_NAME` characters and the
  final result text to :data:`~orchestrator_pex.untrusted.MAX_TEXT`; remembered message ids are at most
  :data:`_RECENT_IDS`, a long id kept as its digest.

Speed, the same for every key order and spacing (the reader never depends on the layout): a line that starts with
``{``, ends with ``}`` and contains none of ``"assistant"``, ``"result"``, ``"system"`` and no ``\\u`` escape is
skipped without a parse — :func:`json.loads` of it could not have an accounted ``type`` (without a ``\\u`` escape
a string equal to one of those three is written literally), so ``handle`` would do nothing with it (``user`` tool
results, ``stream_event``); such a line that is not valid JSON is then not counted in ``bad_lines`` (it accounts
nothing either way). Every other line is parsed by :func:`orchestrator_pex.untrusted.json_object` (json's own C
scanner, exactly :func:`json.loads`) and accounted by :meth:`Accounting.handle`: the accounting of every line is
exactly that of ``json.loads`` + ``handle`` (tests/test_ingest_differential.py, on hostile lines).
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

from orchestrator_pex import untrusted, vocabulary
from orchestrator_pex.pricing import estimate_cost

#: a result's own cost is trusted down to this share of the estimate from streamed usage (see result_cost_trusted)
RESULT_COST_FLOOR = 0.5

_RECENT_IDS = 16  # message ids remembered for de-duplication (events of one message are adjacent in practice)
_MAX_ID = 128  # a longer message id is remembered as its digest
MAX_TOOL_NAMES = 256  #: distinct tool names kept per attempt (and per record); the rest count under OTHER_TOOLS
OTHER_TOOLS = "(other tools)"  #: the key further tool names are folded into

TOKEN_KEYS = vocabulary.TOKEN_KEYS
_MAX_COUNT = untrusted.MAX_COUNT


class Ledger:
    """What every agent's reader reports about one attempt (:class:`Accounting` for Claude Code,
    :class:`orchestrator_pex.agents.reading.Reader` for the others), read directly by the runtime and the report,
    and what follows from the four token figures and the model alone: the total, the figures by :data:`TOKEN_KEYS`,
    and the cost estimated from them at the model's price (a reader's cost unless it knows better: ``cost_usd`` and
    ``cost_source`` default to that estimate)."""

    __slots__ = (
        "input", "output", "cache_creation", "cache_read", "tools", "model", "session_id", "num_turns",
        "result_text", "is_error", "api_error_status", "result_seen", "result_cost", "bad_lines", "api_retries",
        "messages", "agent_version", "_priced",
    )

    def __init__(self, model: Optional[str] = None) -> None:
        self.input = self.output = self.cache_creation = self.cache_read = 0
        self.tools: Dict[str, int] = {}
        self.model: Optional[str] = model
        self.session_id: Optional[str] = None
        self.num_turns: Optional[int] = None
        self.result_text: Optional[str] = None
        self.is_error = False
        self.api_error_status: Optional[int] = None
        self.result_seen = False
        self.result_cost: Optional[float] = None
        self.bad_lines = 0
        self.api_retries = 0
        self.messages = 0
        self.agent_version: Optional[str] = None
        self._priced: Tuple[Any, ...] = ()  # (what the last estimate was computed from, that estimate)

    def handle(self, event: Dict[str, Any]) -> None:  # pragma: no cover - abstract
        """Account one parsed event (each reader knows its agent's events)."""
        raise NotImplementedError

    def handle_json(self, line: bytes) -> bool:
        """Account one line parsed whole as a JSON object; False (and counted in ``bad_lines``) if it is not one."""
        event = untrusted.json_object(line)
        if event is None:
            self.bad_lines += 1
            return False
        self.handle(event)
        return True

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def tokens(self) -> Dict[str, int]:
        """The four figures by :data:`TOKEN_KEYS` (input, output, cache_creation, cache_read)."""
        return dict(zip(TOKEN_KEYS, (self.input, self.output, self.cache_creation, self.cache_read)))

    def estimate(self) -> float:
        """The cost of the four figures at ``model``'s price (:func:`orchestrator_pex.pricing.estimate_cost`).

        Computed again only when the model or a figure changed: the scheduler asks for the cost after every chunk
        an instance prints (budgets), and most chunks change nothing that is priced."""
        key = (self.model, self.input, self.output, self.cache_creation, self.cache_read)
        priced = self._priced
        if priced and priced[0] == key:
            return priced[1]  # type: ignore[no-any-return]
        cost = estimate_cost(self.model, self.tokens())
        self._priced = (key, cost)
        return cost

    @property
    def cost_source(self) -> str:
        """``"estimate"``: the cost is estimated from the reported tokens (see :attr:`cost_usd`)."""
        return "estimate"

    @property
    def cost_usd(self) -> float:
        return self.estimate()


class Accounting(Ledger):
    """The accounting of one attempt of one instance, fed one stdout line at a time.

    Attributes are read directly by the runtime and the report (this is the hot path; no properties).
    ``input``, ``output``, ``cache_creation`` and ``cache_read`` are the reported figures: per kind, the larger of the
    usage streamed so far and the ``result``'s figure.
    """

    __slots__ = ("_recent", "_model_raw", "_model_name", "_names", "_streamed", "_result_tokens", "_costed")

    def __init__(self) -> None:
        super().__init__()
        # Usage summed from assistant events once a result has been seen (before that, the figures above are it).
        self._streamed: Optional[List[int]] = None
        self._result_tokens = [0, 0, 0, 0]  # the result's figures (0 where absent or invalid)
        self._recent: List[Any] = []
        self._model_raw: Any = None  # the model value last checked (check once per change, not per message)
        self._model_name: Optional[str] = None
        self._names: Dict[str, str] = {}  # tool names checked once (at most MAX_TOOL_NAMES of them)
        self._costed: Tuple[Any, ...] = ()  # (what cost_usd was last computed from, that cost)

    # -- reading ---------------------------------------------------------------------------------------------------

    def feed(self, line: bytes) -> bool:
        """Account one line (without its newline). Return False if the line was not usable (it is skipped).

        Never raises: whatever goes wrong with one line only makes that line count in ``bad_lines``.
        """
        try:  # one handler around everything a line can reach (free on 3.11+ until something raises)
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"{") and line.endswith(b"}"):
                if (b'"assistant"' not in line and b'"result"' not in line and b'"system"' not in line
                        and (b"\\" not in line or b"\\u" not in line)):  # one-byte search first (memchr)
                    return True  # no accounted event type can be written in this line: nothing to account
            elif not line.strip():
                return True
            return self.handle_json(line)  # any layout, parsed whole (exactly json.loads)
        except Exception:  # noqa: BLE001 - the line is untrusted data; nothing it contains may end the reader
            self.bad_lines += 1
            return False

    def _tools_of(self, content: List[Any]) -> None:
        """Count the ``tool_use`` blocks of one message's content."""
        names = self._names
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                raw = block.get("name")
                name = names.get(raw) if isinstance(raw, str) else None
                if name is None:
                    name = untrusted.name(raw) or str(None)
                    if isinstance(raw, str) and len(names) < MAX_TOOL_NAMES:
                        names[raw] = name
                tools = self.tools
                if name in tools:
                    tools[name] += 1
                else:
                    self._count_tool(name)

    def _count_tool(self, name: str) -> None:
        tools = self.tools
        if name not in tools and len(tools) >= MAX_TOOL_NAMES - 1:  # the last place is OTHER_TOOLS
            name = OTHER_TOOLS
        tools[name] = tools.get(name, 0) + 1

    def _add_streamed(self, i: int, o: int, cc: int, cr: int) -> None:
        s, r = self._streamed, self._result_tokens
        if s is None:
            self.input += i
            self.output += o
            self.cache_creation += cc
            self.cache_read += cr
            return
        s[0] += i
        s[1] += o
        s[2] += cc
        s[3] += cr
        self.input = s[0] if s[0] > r[0] else r[0]
        self.output = s[1] if s[1] > r[1] else r[1]
        self.cache_creation = s[2] if s[2] > r[2] else r[2]
        self.cache_read = s[3] if s[3] > r[3] else r[3]

    def handle(self, event: Dict[str, Any]) -> None:
        """Account one parsed event (any key order). Values are validated here; malformed parts are ignored."""
        kind = event.get("type")
        if kind == "assistant":
            message = event.get("message")
            if not isinstance(message, dict):
                return
            content = message.get("content")
            if isinstance(content, list) and content:
                self._tools_of(content)
            status = event.get("api_error_status")
            if status is not None:
                self.api_error_status = _status(status)
            message_id = message.get("id")
            if not isinstance(message_id, str):
                return
            # de-duplication by message id (the hot path: inlined)
            key: Any = message_id.encode("utf-8", "replace")
            if len(key) > _MAX_ID:
                key = hashlib.sha256(key).digest()
            recent = self._recent
            if key in recent:
                return
            recent.append(key)
            if len(recent) > _RECENT_IDS:
                del recent[0]
            self.messages += 1
            usage = message.get("usage")
            i, o, cc, cr = _usage(usage if isinstance(usage, dict) else {})
            if self._streamed is None:  # no result yet: the figures are the streamed sums (_add_streamed, inlined)
                self.input += i
                self.output += o
                self.cache_creation += cc
                self.cache_read += cr
            else:
                self._add_streamed(i, o, cc, cr)
            model = message.get("model")
            if model != self._model_raw or model.__class__ is not self._model_raw.__class__:  # checked once per change
                self._model_raw = model
                self._model_name = untrusted.name(model)
            name = self._model_name
            if name is not None and name != "<synthetic>":
                self.model = name
        elif kind == "result":
            self._result(event)
        elif kind == "system":
            subtype = event.get("subtype")
            if subtype == "init":
                self.session_id = untrusted.name(event.get("session_id")) or self.session_id
                self.model = self.model or untrusted.name(event.get("model"))
                self.agent_version = untrusted.name(event.get("claude_code_version"))
            elif subtype == "api_retry":
                self.api_retries += 1

    def _result(self, event: Dict[str, Any]) -> None:
        self.result_seen = True
        usage = event.get("usage")
        if isinstance(usage, dict):
            if self._streamed is None:
                self._streamed = self.streamed()
            r = self._result_tokens
            # Several results (the CLI sends one): each figure is the largest shown, so spend never goes down.
            r[:] = [max(old, new) for old, new in zip(r, _usage(usage))]
            self._add_streamed(0, 0, 0, 0)
        cost = untrusted.dollars(event.get("total_cost_usd"))
        if cost is not None and (self.result_cost is None or cost > self.result_cost):
            self.result_cost = cost
        models = event.get("modelUsage")
        if isinstance(models, dict) and models:
            # The model that did the most output work is "the model used".
            best = max(models, key=lambda m: _count((models[m] if isinstance(models[m], dict) else {})
                                                    .get("outputTokens")))
            self.model = untrusted.name(best) or self.model
        self.session_id = untrusted.name(event.get("session_id")) or self.session_id
        turns = untrusted.count(event.get("num_turns"))
        if turns is not None:
            self.num_turns = turns
        result = untrusted.text(event.get("result"))
        if result is not None:
            self.result_text = result
        self.is_error = event.get("is_error") is True
        status = event.get("api_error_status")
        if status is not None:
            self.api_error_status = _status(status)
        elif not self.is_error:
            self.api_error_status = None

    # -- totals ----------------------------------------------------------------------------------------------------

    def streamed(self) -> List[int]:
        """Usage summed from assistant events: input, output, cache_creation, cache_read."""
        if self._streamed is None:
            return [self.input, self.output, self.cache_creation, self.cache_read]
        return list(self._streamed)

    def streamed_estimate(self) -> float:
        """The cost of the usage streamed in assistant events at the model's price."""
        s = self.streamed()
        return estimate_cost(self.model, {"input": s[0], "output": s[1], "cache_creation": s[2], "cache_read": s[3]})

    def result_cost_trusted(self) -> bool:
        """Is the result's own ``total_cost_usd`` the instance's cost? Only when the result accounts for every token
        the stream showed (each kind at least the streamed sum) and its cost is at least
        :data:`RESULT_COST_FLOOR` of the estimate from streamed usage. The pricing table can lag the vendor's prices
        (Claude Code 2.1.330 charged 0.75 of the table's figure for claude-opus-5-5), so a lower but plausible figure
        is the agent's own; a result that hides tokens, or costs less than half of what they cost, is a lie."""
        if self.result_cost is None:
            return False
        streamed = self.streamed()
        if self._streamed is not None and any(r < s for r, s in zip(self._result_tokens, streamed)):
            return False
        return self.result_cost >= RESULT_COST_FLOOR * self.streamed_estimate()

    @property
    def cost_source(self) -> str:
        """``"result"``, ``"stream"`` or ``"estimate"``: see the module docstring."""
        if self.result_cost is None:
            return "estimate"
        return "result" if self.cost_usd == self.result_cost else "stream"  # whichever figure was used

    @property
    def cost_usd(self) -> float:
        if self.result_cost is None:
            return self.estimate()
        # computed again only when something it depends on changed (asked after every chunk: see Ledger.estimate)
        streamed = self._streamed
        key = (self.model, self.input, self.output, self.cache_creation, self.cache_read, self.result_cost,
               None if streamed is None else (*streamed, *self._result_tokens))
        costed = self._costed
        if costed and costed[0] == key:
            return costed[1]  # type: ignore[no-any-return]
        cost = self.result_cost if self.result_cost_trusted() else max(self.result_cost, self.streamed_estimate())
        self._costed = (key, cost)
        return cost


def fold_tools(tools: Dict[str, int], limit: int = MAX_TOOL_NAMES) -> Dict[str, int]:
    """``tools`` sorted by name, with at most ``limit`` names: the rest are added up under :data:`OTHER_TOOLS`."""
    if len(tools) <= limit:
        return dict(sorted(tools.items()))
    other = tools.get(OTHER_TOOLS, 0)
    names = sorted(k for k in tools if k != OTHER_TOOLS)
    kept = names[: limit - 1]
    other += sum(tools[k] for k in names[limit - 1:])
    out = {k: tools[k] for k in kept}
    out[OTHER_TOOLS] = other
    return dict(sorted(out.items()))


def _count(value: Any) -> int:
    """A validated token count, 0 where the value is not one (absent: never lowers a total, see _add_streamed)."""
    n = untrusted.count(value)
    return 0 if n is None else n


def _usage(usage: Dict[str, Any]) -> tuple[int, int, int, int]:
    get = usage.get
    i, o, cc, cr = (get("input_tokens"), get("output_tokens"), get("cache_creation_input_tokens"),
                    get("cache_read_input_tokens"))
    if (type(i) is int and type(o) is int and type(cc) is int and type(cr) is int  # the usual case, in one test
            and 0 <= i <= _MAX_COUNT and 0 <= o <= _MAX_COUNT and 0 <= cc <= _MAX_COUNT and 0 <= cr <= _MAX_COUNT):
        return i, o, cc, cr
    return _count(i), _count(o), _count(cc), _count(cr)


def _status(value: Any) -> Optional[int]:
    """An HTTP status from the stream (100-599), else None."""
    n = untrusted.count(value)
    return n if n is not None and 100 <= n <= 599 else None
