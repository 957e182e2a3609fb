"""Example batch files, written with comments: ``init`` (Claude Code, one Gemini CLI instance), ``init --demo`` /
``demo`` (a mixed batch of the simulated agent speaking Claude Code, Codex CLI and Gemini CLI, with a small
dependency chain), and ``init --example NAME`` (:data:`EXAMPLES`).

The values are serialised by tomli-w, key by key, so every value is valid TOML; the comments are ours.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import tomli_w

Entry = Tuple[str, Any, str]  # key, value, comment


def _section(header: str, entries: Sequence[Entry]) -> List[str]:
    lines = [header] if header else []
    for key, value, comment in entries:
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{key} = {_value(value)}")
    return lines + [""]


def _value(value: Any) -> str:
    """A TOML value; tables inline (a ``[table]`` header would end the ``[[instances]]`` entry)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _render(intro: str, top: Sequence[Entry], sections: Sequence[Tuple[str, Sequence[Entry]]]) -> str:
    lines = [f"# {line}".rstrip() for line in intro.strip().splitlines()] + [""]
    lines += _section("", top)
    for header, entries in sections:
        lines += _section(header, entries)
    return "\n".join(lines)


def example_batch() -> str:
    return _render(
        """
orchestrator-pex batch file. Check it with `orchestrator-pex validate FILE`, preview the exact commands with
`orchestrator-pex run FILE --dry-run`, run it with `orchestrator-pex run FILE`.
Every key of an instance may also be set once under [defaults].
""",
        [
            ("agent", "claude", 'agent of prompt instances that set none: "claude", "codex" or "gemini"'),
            ("claude", "claude", "Claude Code executable: a name on PATH or a path (relative to this file)"),
            ("gemini", "gemini", "Gemini CLI executable (codex = ... likewise for Codex CLI)"),
            ("concurrency", 8,
             "hard cap on instances running at once; below it, launches follow measured CPU and memory headroom"),
            ("grace_period", 10, "seconds between SIGTERM and SIGKILL when an instance must stop"),
        ],
        [
            ("[budget]", [
                ("max_cost_usd", 5.0,
                 "whole batch: dollars (Claude Code's own total_cost_usd, estimated while running)"),
                ("max_tokens", 5_000_000, "whole batch: tokens (input + output + cache creation + cache read)"),
                ("mode", "block", '"block" stops launching and stops running instances; "warn" only logs'),
            ]),
            ("[retry]", [
                ("backoff", 2.0, "first wait before retrying a transient API error (429, 529, 5xx); doubles each time"),
                ("backoff_max", 60.0, "longest wait between retries"),
            ]),
            ("[defaults]", [
                ("model", "claude-sonnet-4-5", "passed as --model"),
                ("permission_mode", "acceptEdits",
                 "default, acceptEdits, plan, dontAsk (bypassPermissions is refused as root)"),
                ("allowed_tools", ["Read", "Grep", "Glob", "Edit", "Bash(git diff:*)"], "--allowedTools"),
                ("timeout", 1800, "seconds one attempt may run (each retry gets its own)"),
                ("stall_timeout", 600, "seconds an instance may print nothing before it is stopped as stalled"),
                ("retries", 2, "retries after a transient API error; every attempt counts against the budgets"),
                ("max_cost_usd", 1.0, "per instance"),
            ]),
            ("[[instances]]", [
                ("name", "fix-tests", "any printable text (log file names are derived from it safely)"),
                ("description", "Run the unit tests and fix what fails", ""),
                ("prompt", "Run the test suite with `pytest -q` and fix any failing test.",
                 "a prompt or a slash command"),
                ("cwd", ".", "working directory, relative to this file"),
                ("env", {"PYTHONDONTWRITEBYTECODE": "1"},
                 "added to the environment (secret-looking values never reach logs)"),
                ("tags", ["tests"], ""),
            ]),
            ("[[instances]]", [
                ("name", "review", ""),
                ("prompt", "/review", "slash commands work as prompts"),
                ("max_turns", 10, "--max-turns"),
            ]),
            ("[[instances]]", [
                ("name", "explore", ""),
                ("agent", "gemini", "Gemini CLI; README \"Agents\" lists the fields each agent honours"),
                ("model", "gemini-2.5-flash", ""),
                ("allowed_tools", [], "Gemini CLI has its own tool names; [] overrides [defaults]"),
                ("prompt", "List the modules of this project and what each one does.", ""),
            ]),
            ("[[instances]]", [
                ("name", "lint", "any other program: argv, never a shell; same timeouts, logs and outcome"),
                ("argv", ["ruff", "check", "."], ""),
                ("timeout", 300, ""),
            ]),
        ],
    )


def demo_batch() -> str:
    def sim(name: str, scenario: str, prompt: str, **extra: Any) -> Tuple[str, List[Entry]]:
        env = {"AGENT_SIM_SCENARIO": scenario, **extra.pop("env", {})}
        entries = [("name", name, ""), ("prompt", prompt, ""), ("env", env, "")]
        entries += [(k, v, "") for k, v in extra.items()]
        return "[[instances]]", entries

    return _render(
        """
Demo batch for orchestrator-pex: every instance runs the built-in simulated agent ("@agent-sim"), which prints
the same output as Claude Code 2.1.330, Codex CLI 0.171.0 or Gemini CLI 0.61.0 (the instance's `agent`), so this
runs anywhere, with no account. Swap `claude`, `codex`, `gemini` for the real executables to run it for real.
""",
        [
            ("claude", "@agent-sim", "the demo agent built into orchestrator-pex"),
            ("codex", "@agent-sim", "... speaking Codex CLI's exec --json"),
            ("gemini", "@agent-sim", "... speaking Gemini CLI's stream-json"),
            ("concurrency", 4, ""),
        ],
        [
            ("[budget]", [("max_cost_usd", 1.0, ""), ("mode", "block", "")]),
            ("[retry]", [("backoff", 0.5, "short, for the demo")]),
            ("[defaults]", [
                ("model", "claude-sonnet-4-5", ""),
                ("permission_mode", "acceptEdits", ""),
                ("allowed_tools", ["Bash", "Read", "Edit", "Grep"], ""),
                ("timeout", 120, ""),
                ("stall_timeout", 60, ""),
                ("cwd", ".", ""),
            ]),
            sim("echo-tool", "tool-use", "run echo"),
            sim("refactor", "multi-tool", "refactor the parser and run the tests", env={"AGENT_SIM_TURNS": "6",
                                                                                       "AGENT_SIM_DELAY": "0.15"}),
            sim("slow-review", "slow", "/review", env={"AGENT_SIM_DELAY": "0.4"}),
            sim("overloaded-then-ok", "flaky", "summarise the changelog",
                env={"AGENT_SIM_FAIL_TIMES": "1", "AGENT_SIM_STATE_FILE": "overloaded-then-ok.state"}),
            sim("haiku-quick", "ok", "say hello", model="claude-haiku-4-5"),
            sim("noisy-output", "garbage", "survive garbage on stdout"),
            # a small dependency chain: implement starts when plan succeeded and continues plan's session
            sim("plan", "ok", "plan the refactoring of the parser"),
            sim("implement", "tool-use", "implement this plan: {{plan.result}}", needs=["plan"],
                resume="{{plan.session_id}}"),
            sim("codex-fix", "tool-use", "fix the failing test", agent="codex", model="gpt-5-codex", allowed_tools=[]),
            sim("gemini-explore", "tool-use", "list the project files", agent="gemini", model="gemini-2.5-flash",
                allowed_tools=[]),
        ],
    )


def fanout_batch(fixers: int = 3) -> str:
    """``init --example fanout``: ``fixers`` instances fix in parallel, each on its own git worktree and branch; a
    review instance starts when they all finished (``when = "always"``) and reads their branches."""
    fixes = [f"fix-{i}" for i in range(1, fixers + 1)]
    sections: List[Tuple[str, Sequence[Entry]]] = [
        ("[defaults]", [
            ("model", "claude-sonnet-4-5", "passed as --model"),
            ("permission_mode", "acceptEdits", ""),
            ("allowed_tools", ["Read", "Grep", "Glob", "Edit", "Write", "Bash(pytest:*)", "Bash(git diff:*)"], ""),
            ("timeout", 1800, ""),
            ("max_cost_usd", 2.0, "per instance"),
        ]),
    ]
    for i, name in enumerate(fixes, 1):
        sections.append(("[[instances]]", [
            ("name", name, "runs in RUN_DIR/worktrees/NAME on branch orchestrator-pex/RUN_ID/NAME" if i == 1 else ""),
            ("prompt", f"Fix failing test group {i} of {fixers} (run `pytest -q` to see them); change nothing else.",
             ""),
        ]))
    listing = "\n".join(f"- {n}: branch {{{{{n}.branch}}}} at {{{{{n}.head}}}} ({{{{{n}.status}}}})" for n in fixes)
    sections.append(("[[instances]]", [
        ("name", "review", ""),
        ("needs", fixes, "starts once every fix has finished; without `when` it would be skipped if one failed"),
        ("when", "always", '"success" (default), "on-failure" or "always"'),
        ("keep", "never", "the review changes nothing: no need to keep its worktree"),
        ("delete_branch", True, "nor its branch (a branch is only deleted when it has no new commit)"),
        ("prompt", "Review these branches with `git diff` against the base and say which to merge:\n" + listing,
         "placeholders are filled from the records of the instances in needs, as plain text"),
        ("allowed_tools", ["Read", "Grep", "Glob", "Bash(git diff:*)", "Bash(git log:*)"], ""),
    ]))
    return _render(
        """
Fan-out on git worktrees: the fixers work in parallel, each in its own worktree of the repository holding the
directory you run this from (set `repo` or `cwd` to choose), on its own branch; what an instance leaves
uncommitted is committed there when it ends. results.json records, per instance, the branch, the base and head
commits and the diffstat. Then a review reads the branches.
Preview with `orchestrator-pex run FILE --dry-run`.
""",
        [
            ("claude", "claude", "Claude Code executable: a name on PATH or a path (relative to this file)"),
            ("concurrency", fixers + 1, ""),
            ("workspace", "worktree", 'every instance gets its own git worktree ("shared": run in cwd as is)'),
            ("base", "HEAD", "the ref branches start from (resolved once, when the batch starts)"),
            ("keep", "changed", '"always", "changed" (remove worktrees without changes) or "never"'),
            ("commit", True, "commit what an instance leaves uncommitted, on its branch"),
        ],
        sections,
    )


#: ``init --example NAME``
EXAMPLES = {"fanout": fanout_batch}
