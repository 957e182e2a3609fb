"""What a finished instance leaves in memory: its record only, compactly, decoded to the same record on read."""

from __future__ import annotations

import tracemalloc

from orchestrator_pex.config import parse_batch
from orchestrator_pex.plan import make_plan
from orchestrator_pex.runtime import Attempt
from orchestrator_pex.scheduler import InstanceState, Scheduler
from orchestrator_pex.spill import Spill


def _plan(tmp_path, n: int):
    text = "".join(f'[[instances]]\nname = "i{i}"\nargv = ["/bin/true"]\n' for i in range(n))
    return make_plan(parse_batch(text.encode(), str(tmp_path / "b.toml")))


def _record(name: str) -> dict:
    return {"name": name, "status": "succeeded", "tokens": {"input": 1, "total": 1}, "tools": {"Bash": 2},
            "cost_usd": 0.25, "result": "ünïcode ✓", "error": None}


def test_finish_keeps_the_same_record_and_drops_attempts(tmp_path):
    state = InstanceState(_plan(tmp_path, 1).launches[0])
    state.attempts = [Attempt(1)]
    state.record = _record("i0")
    state.finish()
    assert not state.attempts
    assert isinstance(state._record, bytes)
    assert state.record == _record("i0")
    assert state.record is not state.record  # a fresh dict on each read: nobody can change the kept record


def test_finish_keeps_a_record_that_is_not_plain_json_as_it_is(tmp_path):
    state = InstanceState(_plan(tmp_path, 1).launches[0])
    odd = {"name": "i0", "value": float("nan")}
    state.record = odd
    state.finish()
    assert state.record is odd


def test_final_records_in_batch_order_mixed_and_over_chunks(tmp_path, monkeypatch):
    from orchestrator_pex import scheduler as sched_mod

    monkeypatch.setattr(sched_mod, "_DECODE_CHUNK", 3)
    sched = Scheduler(_plan(tmp_path, 7), str(tmp_path / "run"))
    for i, state in enumerate(sched.states):
        state.record = _record(f"i{i}")
        if i != 4:  # one record stays a dict (as one that is not plain JSON would)
            state.finish()
    assert sched._final_records() == [_record(f"i{i}") for i in range(7)]


def test_a_finished_instance_holds_far_less_than_its_record_dict(tmp_path):
    states = [InstanceState(launch) for launch in _plan(tmp_path, 200).launches]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i, state in enumerate(states):
            state.record = {**_record(f"i{i}"), "stdout_log": f"/runs/x/logs/i{i}.stdout", "at": f"2026-{i}"}
        as_dicts = tracemalloc.get_traced_memory()[0] - base
        for state in states:
            state.finish()
        compact = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert compact < as_dicts / 2


def test_with_a_spill_a_finished_instance_keeps_only_a_key(tmp_path, monkeypatch):
    from orchestrator_pex import spill as spill_mod

    monkeypatch.setattr(spill_mod, "BUFFER", 4096)
    spill = Spill(str(tmp_path))
    states = [InstanceState(launch, spill) for launch in _plan(tmp_path, 300).launches]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i, state in enumerate(states):
            state.record = {**_record(f"i{i}"), "stdout_log": f"/runs/x/logs/i{i}.stdout"}
            state.finish()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert all(isinstance(s._record, int) for s in states)
    assert [s.record for s in states] == [{**_record(f"i{i}"), "stdout_log": f"/runs/x/logs/i{i}.stdout"}
                                          for i in range(300)]
    assert held < 300 * 40 + 2 * 4096  # two array entries and an int each, and the buffer: the bytes are on disk
    spill.close()


def test_a_state_not_started_holds_no_list_or_set(tmp_path):
    state = InstanceState(_plan(tmp_path, 1).launches[0])
    assert state.attempts == () and state.warned == ()


def test_the_batch_key_order_is_one_shared_node_per_identically_keyed_instance(tmp_path):
    from orchestrator_pex import config

    text = "".join(f'[[instances]]\nname = "i{i}"\nargv = ["/bin/true", "x"]\n' for i in range(1000))
    found = config.examine_batch(text.encode(), str(tmp_path / "b.toml"))
    assert not found.problems
    nodes = found.order[1][0]  # the node of the "instances" list
    assert len(nodes) == 1000 and len({id(n) for n in nodes}) == 1
    assert found.position("instances[5].argv[1]") < found.position("instances[6]") < found.position("instances[6].argv")
    assert found.position("instances[6].model") == found.position("instances[6]")  # not written: its table's place
    assert found.position("nowhere") == found.position("") == (-1,)
    launches = make_plan(found.batch).launches
    assert launches[0].argv[1] is launches[999].argv[1]  # equal argv strings are one object


def test_problems_still_come_in_file_order(tmp_path):
    from orchestrator_pex import config

    text = ('[[instances]]\nname = "a"\nargv = ["/bin/true"]\nbogus = 1\n'
            '[[instances]]\nname = "b"\nmodel = 3\nargv = ["/bin/true"]\ntimeout = "x"\n')
    found = config.examine_batch(text.encode(), str(tmp_path / "b.toml"))
    assert [p.key for p in found.problems] == ["instances[0].bogus", "instances[1].model", "instances[1].timeout"]


def test_a_lean_plan_keeps_the_launches_and_drops_the_batch_instances(tmp_path):
    import gc
    import weakref

    from orchestrator_pex.plan import lean

    plan = _plan(tmp_path, 3)
    raw = weakref.ref(plan.batch.instances[0])
    slim = lean(plan)
    assert slim.launches == plan.launches and slim.batch.path == plan.batch.path
    assert slim.batch.instances == () and slim.batch.concurrency == plan.batch.concurrency
    del plan
    gc.collect()
    assert raw() is None  # nothing else held the batch's own instance
