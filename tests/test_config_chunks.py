"""Batch files read a chunk of ``[[instances]]`` tables at a time (``config._examine_in_chunks``, issue 14 P6) give
exactly what the whole-document examination gives: the same batch, problems and key order, for every batch.

The chunked path answers only for a batch with no problem at all; anything else (and any document it cannot prove
safe to cut: multi-line strings, other tables after the instances, JSON) falls back to the whole document, so every
error message stays the one the whole-document examination writes. Each case is examined both ways and compared.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_pex import config, examples
from tests.test_config import MALFORMED

PLAIN = "".join(f'[[instances]]\nname = "i{i}"\nargv = ["/bin/echo", "{i}"]\nenv = {{ X = "{i}" }}\n'
                for i in range(7))

VALID = [
    pytest.param('concurrency = 4\n[defaults]\nmodel = "m"\n' + PLAIN, id="head-then-instances"),
    pytest.param(PLAIN.replace('[[instances]]\nname = "i3"', '[[instances]]  \r\nname = "i3"'), id="header-blank-cr"),
    pytest.param('[[instances]]\nname = "a"\nprompt = "p"\n[instances.env]\nA = "1"\n[[instances]]\nname = "b"\n'
                 'prompt = "q"\n', id="instance-subtable"),
    pytest.param(PLAIN + '[[instances]] # one\nname = "a"\nprompt = "p"\n[[ instances ]]\nname = "b"\nprompt = "q"\n',
                 id="headers-not-cut-at"),
    pytest.param('[[instances]]\nname = "é ü"\nprompt = "naïve [[instances]]"\n' + PLAIN, id="utf8-and-brackets"),
    pytest.param(examples.example_batch(), id="init-example"),
    pytest.param(examples.demo_batch(), id="demo"),
    pytest.param(examples.fanout_batch(), id="fanout"),
]

TRICKY = [
    # a header line inside a multi-line array: invalid TOML, one message from the whole parse
    pytest.param('[[instances]]\nname = "a"\nargv = [\n"x",\n[[instances]]\n]\n', id="header-in-array"),
    # a header line inside a multi-line string: the string holds it, one instance
    pytest.param('[[instances]]\nname = "a"\nprompt = """\n[[instances]]\nname = "b"\n"""\n', id="header-in-string"),
    pytest.param("[[instances]]\nname = 'a'\nprompt = '''\n[[instances]]\n'''\n", id="header-in-literal-string"),
    pytest.param(PLAIN + '[defaults]\nmodel = "m"\n', id="table-after-instances"),
    pytest.param('[defaults]\nmodel = "m"\n' + PLAIN + '[defaults]\nmodel = "n"\n', id="table-defined-twice"),
    pytest.param('instances = []\n' + PLAIN, id="instances-twice"),
    pytest.param('[instances]\nname = "x"\n' + PLAIN, id="instances-table-then-array"),
    pytest.param(PLAIN + PLAIN, id="duplicate-names-across-chunks"),
    pytest.param(PLAIN + '[[instances]]\nname = "z"\nprompt = "p"\ntimeout = "ten"\n', id="bad-value-last-chunk"),
    pytest.param(PLAIN + '[[instances]]\nname = "z"\nargv = []\n', id="empty-argv"),
    pytest.param(PLAIN + '[[instances]]\nname = "z\\u0001"\nprompt = "p"\n', id="control-character"),
    pytest.param(PLAIN + '[[instances]]\nname = "z"\nprompt = "p"\nbogus = 1\n', id="unknown-key"),
    pytest.param('path = "x"\n' + PLAIN, id="path-key"),
    pytest.param(PLAIN + '[[instances]]\nname = "z"\nprompt = "p"\nneeds = ["nobody"]\n', id="unknown-need"),
    pytest.param(PLAIN.encode("utf-8") + b'[[instances]]\nname = "\xff"\nprompt = "p"\n', id="not-utf8"),
]


def _both(data: bytes, path: str, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        m.setattr(config, "_examine_in_chunks", lambda data, path: None)
        whole = config.examine_batch(data, path)
    return config.examine_batch(data, path), whole


def _same(a: config.Examined, b: config.Examined) -> None:
    assert a.batch == b.batch
    assert [str(p) for p in a.problems] == [str(p) for p in b.problems]
    assert a.order == b.order


@pytest.mark.parametrize("chunk", [1, 2, 1000])
@pytest.mark.parametrize("text", VALID)
def test_a_valid_batch_read_in_chunks_is_the_batch_read_whole(text, chunk, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CHUNK_INSTANCES", chunk)
    data, path = text.encode(), str(tmp_path / "b.toml")
    assert config._examine_in_chunks(data, path) is not None  # the chunked path answered: the comparison is real
    chunked, whole = _both(data, path, monkeypatch)
    assert whole.batch is not None and not whole.problems
    _same(chunked, whole)
    assert chunked.position("instances[3].argv") == whole.position("instances[3].argv")


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("text", TRICKY)
def test_a_batch_the_chunks_cannot_vouch_for_is_examined_whole(text, chunk, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CHUNK_INSTANCES", chunk)
    data = text if isinstance(text, bytes) else text.encode()
    path = str(tmp_path / "b.toml")
    chunked, whole = _both(data, path, monkeypatch)
    _same(chunked, whole)
    if whole.problems or whole.batch is None:
        assert config._examine_in_chunks(data, path) is None  # never an answer for a batch with a problem


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("name,text,expected", MALFORMED)
def test_every_malformed_batch_keeps_its_message(name, text, expected, chunk, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CHUNK_INSTANCES", chunk)
    data = text if isinstance(text, bytes) else text.encode()
    path = str(tmp_path / name)
    chunked, whole = _both(data, path, monkeypatch)
    _same(chunked, whole)
    assert whole.problems  # each MALFORMED case is a problem, reported the same either way


def test_a_multi_chunk_batch_shares_equal_strings_and_key_order_nodes(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CHUNK_INSTANCES", 3)
    text = "".join(f'[[instances]]\nname = "i{i}"\nargv = ["/bin/true", "x"]\n' for i in range(10))
    found = config.examine_batch(text.encode(), str(tmp_path / "b.toml"))
    assert not found.problems and len(found.batch.instances) == 10
    first, last = found.batch.instances[0], found.batch.instances[9]
    assert first.argv[1] is last.argv[1]  # interned across chunks, as in one document
    nodes = found.order[1][0]
    assert len({id(n) for n in nodes}) == 1


def test_instances_share_equal_argv_and_the_defaults_env_but_keep_their_own(tmp_path):
    from orchestrator_pex.plan import make_plan

    text = ('[defaults]\nenv = { A = "1" }\n'
            + "".join(f'[[instances]]\nname = "i{i}"\nargv = ["/bin/true", "x"]\n' for i in range(3))
            + '[[instances]]\nname = "own"\nargv = ["/bin/true", "x"]\nenv = { B = "2" }\n')
    path = tmp_path / "b.toml"
    path.write_text(text)
    plan = make_plan(config.load_batch(str(path)))
    first, second, _, own = plan.launches
    assert first.argv is second.argv and first.argv == own.argv
    assert first.env_add is second.env_add and first.env_add == {"A": "1"}
    assert first.instance.env is second.instance.env and first.instance.env == {"A": "1"}
    assert own.env_add == own.instance.env == {"A": "1", "B": "2"} and own.env_add is not first.env_add


def test_a_dry_run_imports_none_of_the_run_modules(tmp_path, make_cli_env):
    """``run --dry-run`` answers without the modules only a real run needs (start-up, issue 14 P3)."""
    import subprocess
    import sys

    from orchestrator_pex.policy import policy_path

    batch = tmp_path / "b.toml"
    batch.write_text('claude = "@agent-sim"\n[[instances]]\nname = "a"\nprompt = "p"\n')
    code = ("import contextlib, io, sys\nfrom orchestrator_pex.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): status = main(['run', sys.argv[1], '--dry-run'])\n"
            "print(status, sorted(m for m in sys.modules if m.startswith('orchestrator_pex')))")
    env = make_cli_env()
    out = subprocess.run([sys.executable, "-c", code, str(batch)], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout
    status, _, modules = out.partition(" ")
    assert status == "0"
    assert "'orchestrator_pex.plan'" in modules  # the dry run did plan the batch
    never = ["session", "runner", "journal", "guardian", "spill"]
    if policy_path(environ=env) is None:  # a site policy in force reads the default results folder (results)
        never += ["results", "records"]
    for name in never:
        assert f"'orchestrator_pex.{name}'" not in modules


#: Lines and blocks a batch may be made of, valid or not, including every way a cut could go wrong: headers the
#: splitter does not cut at, subtables, tables after the instances, arrays and strings spanning lines, CRLF.
_FRAGMENTS = [
    '[[instances]]\nname = "{n}"\nargv = ["/bin/echo", "{n}"]\n',
    '[[instances]]\nname = "{n}"\nprompt = "p {n}"\n',
    '[[instances]]\r\nname = "{n}"\r\nprompt = "p"\r\n',
    '[[instances]] # c\nname = "{n}"\nprompt = "p"\n',
    '[[ instances ]]\nname = "{n}"\nprompt = "p"\n',
    '[instances.env]\nA = "{n}"\n',
    'timeout = 5\n',
    'timeout = "ten"\n',
    'bogus = 1\n',
    '# [[instances]]\n',
    'argv = [\n"/bin/true",\n"{n}"\n]\n',
    'argv = [\n[[instances]]\n]\n',
    'prompt = """\n[[instances]]\nname = "x"\n"""\n',
    "prompt = '''\n[[instances]]\n'''\n",
    '[defaults]\nmodel = "m"\n',
    '[budget]\nmax_tokens = 10\n',
    'concurrency = 3\n',
    'needs = ["{n}"]\n',
    '\n',
]


#: Valid batches most of the time: a head, then instances with distinct names, each maybe with more lines.
_HEADS = ["", "concurrency = 3\n", '[defaults]\nmodel = "m"\n', '# [[instances]]\n[budget]\nmax_tokens = 10\n']
_INSTANCE_LINES = ["", "timeout = 5\n", '[instances.env]\nA = "1"\n', 'argv = [\n"/bin/true",\n"x"\n]\n',
                   "# [[instances]]\n", "\n", "timeout = 0\n", '[defaults]\nmodel = "n"\n']


@st.composite
def _mostly_valid(draw) -> str:
    out = [draw(st.sampled_from(_HEADS))]
    for i in range(draw(st.integers(1, 9))):
        header = draw(st.sampled_from(["[[instances]]\n", "[[instances]]\r\n", "[[instances]] # c\n",
                                       "[[ instances ]]\n"]))
        body = draw(st.sampled_from(['name = "i{i}"\nprompt = "p"\n', 'name = "i{i}"\nargv = ["/bin/echo"]\n']))
        out += [header, body.replace("{i}", str(i)), draw(st.sampled_from(_INSTANCE_LINES))]
    return "".join(out)


_ANY = st.lists(st.tuples(st.sampled_from(_FRAGMENTS), st.integers(0, 6)), max_size=14).map(
    lambda parts: "".join(fragment.replace("{n}", f"i{n}") for fragment, n in parts))


@settings(derandomize=True, database=None, deadline=None, max_examples=300,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.one_of(_mostly_valid(), _ANY), chunk=st.integers(1, 4))
def test_any_document_reads_the_same_in_chunks_and_whole(text, chunk, tmp_path, monkeypatch):
    data, path = text.encode(), str(tmp_path / "b.toml")
    with monkeypatch.context() as m:
        m.setattr(config, "CHUNK_INSTANCES", chunk)
        chunked, whole = _both(data, path, m)
        _same(chunked, whole)
        if whole.problems or whole.batch is None:
            assert config._examine_in_chunks(data, path) is None
