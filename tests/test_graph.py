"""The dependency graph: validation (unknown names, cycles in one line, placeholders outside needs), ready order,
components, the start rule and one-pass placeholder filling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_pex import graph
from orchestrator_pex.config import parse_batch
from orchestrator_pex.errors import ConfigError


def batch(text: str):
    return parse_batch(text.encode(), "/tmp/b.toml")


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        batch(text)
    message = str(info.value)
    # every problem at once: one line each, each naming the file
    assert all(line.startswith("b.toml: ") for line in message.split("\n")), message
    return message


def inst(name, needs=None, extra=""):
    line = f"needs = {needs!r}\n".replace("'", '"') if needs is not None else ""
    return f'[[instances]]\nname = "{name}"\nargv = ["true"]\n{line}{extra}'


def test_cycle_is_refused_in_one_line_showing_the_cycle():
    msg = refused(inst("a", ["c"]) + inst("b", ["a"]) + inst("c", ["b"]) + inst("d"))
    assert msg == "b.toml: instances[0].needs: dependency cycle: a -> c -> b -> a"


def test_self_unknown_duplicate_needs_refused():
    assert "no instance is named \"zz\"" in refused(inst("a") + inst("b", ["a", "zz"]))
    assert "instances[1].needs[1]" in refused(inst("a") + inst("b", ["a", "zz"]))
    assert "is the instance itself" in refused(inst("a", ["a"]))
    assert "listed twice" in refused(inst("a") + inst("b", ["a", "a"]))


def test_when_needs_needs_and_only_known_values():
    assert "instances[0].when: only means something with needs" in refused(inst("a", None, 'when = "always"\n'))
    assert 'expected one of "success", "on-failure", "always"' in refused(
        inst("a") + inst("b", ["a"], 'when = "sometimes"\n'))


def test_placeholder_must_name_a_need():
    text = inst("a") + '[[instances]]\nname = "b"\nprompt = "see {{a.result}}"\n'
    msg = refused(text)
    assert msg == 'b.toml: instances[1].prompt: {{a.result}} refers to "a", which is not in needs (needs nothing)'
    assert "instances[1].env.X" in refused(inst("a") + inst("b", [], 'env = { X = "{{a.head}}" }\n'))
    assert "instances[1].argv[1]" in refused(
        inst("a") + '[[instances]]\nname = "b"\nargv = ["echo", "{{a.branch}}"]\nneeds = []\n')
    assert "from [defaults]" in refused('[defaults]\nenv = { X = "{{a.status}}" }\n' + inst("a") + inst("b", ["a"])
                                        .replace('needs = ["a"]', 'needs = []'))
    # not a placeholder (unknown field): left alone, accepted
    batch(inst("a") + '[[instances]]\nname = "b"\nprompt = "{{a.other}} {{ a.result }}"\n')


def test_order_levels_components_dependents():
    needs = {"fix1": (), "fix2": (), "review": ("fix1", "fix2"), "solo": (), "test": ("review",), "z": ("solo",)}
    assert graph.order(needs) == ["fix1", "fix2", "review", "solo", "test", "z"]
    assert graph.levels(needs) == {"fix1": 0, "fix2": 0, "review": 1, "solo": 0, "test": 2, "z": 1}
    comps = graph.components(needs)
    assert {comps[n] for n in ("fix1", "fix2", "review", "test")} == {"fix1"}
    assert comps["solo"] == comps["z"] == "solo"
    assert graph.dependents(needs, ["fix2"]) == ["review", "test"]


def test_decide_start_rule():
    ok, bad = {"status": "succeeded"}, {"status": "failed"}
    assert graph.decide(None, ["a", "b"], {"a": ok, "b": ok}) is None
    assert graph.decide(None, ["a", "b"], {"a": ok, "b": bad}) == "needs b, which failed"
    assert graph.decide("success", ["a"], {"a": {"status": "skipped"}}) == "needs a, which ended skipped"
    assert graph.decide("always", ["a"], {"a": bad}) is None
    assert graph.decide("on-failure", ["a", "b"], {"a": ok, "b": bad}) is None
    assert graph.decide("on-failure", ["a"], {"a": ok}) == "when = on-failure: every instance it needs succeeded"


HOSTILE = "it's \"quoted\"\nline2 $(touch /tmp/pwned) `id` {{a.result}} {{b.session_id}} ; rm -rf /"


def test_fill_is_one_pass_and_literal():
    records = {"a": {"result": HOSTILE, "session_id": "s-1", "status": "succeeded",
                     "workspace": {"branch": "orchestrator-pex/r/a", "head": "abc"}},
               "b": {"result": None, "session_id": None, "status": "failed", "workspace": None}}
    assert graph.fill("x {{a.result}} y", records) == f"x {HOSTILE} y"
    assert graph.fill("{{a.branch}}@{{a.head}} {{a.status}} {{b.branch}}|{{b.result}}|{{b.status}}", records) == \
        "orchestrator-pex/r/a@abc succeeded ||failed"
    assert graph.fill("{{c.result}} {{a.nope}}", records) == "{{c.result}} {{a.nope}}"


@given(st.text())
def test_fill_never_expands_inserted_text(value):
    records = {"a": {"result": value}}
    assert graph.fill("<{{a.result}}>", records) == f"<{value}>"


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 9))
    names = [f"n{i}" for i in range(n)]
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=15))
    needs = {name: [] for name in names}
    for a, b in edges:
        if a != b and names[b] not in needs[names[a]]:
            needs[names[a]].append(names[b])
    return needs


@given(graphs())
def test_cycle_found_iff_no_topological_order_and_order_respects_needs(needs):
    cycle = graph.find_cycle(needs)
    if cycle is None:
        placed = graph.order(needs)
        assert sorted(placed) == sorted(needs)
        pos = {n: i for i, n in enumerate(placed)}
        assert all(pos[d] < pos[n] for n, deps in needs.items() for d in deps)
        comps = graph.components(needs)
        assert all(comps[n] == comps[d] for n, deps in needs.items() for d in deps)
    else:
        assert cycle[0] == cycle[-1] and len(cycle) >= 3
        assert all(b in needs[a] for a, b in zip(cycle, cycle[1:]))  # every step is a real `needs` edge


def test_placeholders_name_any_instance_name():
    assert graph.placeholders("{{plan step/1.session_id}} {{a.b.result}} {{セキュリティ.status}} {{x}} {{y.nope}}") == [
        ("plan step/1", "session_id"), ("a.b", "result"), ("セキュリティ", "status")]
    # a placeholder never spans another one's braces
    assert graph.placeholders("{{x}} {{a.result}}") == [("a", "result")]
    assert graph.fill("{{a.b.result}}/{{a.result}}", {"a.b": {"result": "1"}, "a": {"result": "2"}}) == "1/2"
