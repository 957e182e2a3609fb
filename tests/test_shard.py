"""Sharding: a deterministic, name-keyed split that covers every instance exactly once and is stable."""

from __future__ import annotations

import pytest

from orchestrator_pex import shard
from orchestrator_pex.errors import UsageError

NAMES = [f"task-{i:02d}" for i in range(30)]
PINNED = [2, 1, 2, 2, 1, 1, 2, 0]  # shard_of(NAMES[:8], 3), fixed forever


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_partition_covers_every_name_exactly_once(count):
    parts = [shard.select(NAMES, i, count) for i in range(count)]
    flat = [n for p in parts for n in p]
    assert sorted(flat) == sorted(NAMES)
    assert len(flat) == len(set(flat))


def test_selection_keeps_batch_order_and_ignores_position():
    picked = shard.select(NAMES, 1, 3)
    assert picked == [n for n in NAMES if n in set(picked)]
    assert set(shard.select(list(reversed(NAMES)), 1, 3)) == set(picked)


def test_pinned_assignment_is_the_same_everywhere():
    # Pinned values: a change of hash or key layout would silently re-shard every deployed batch.
    assert [shard.shard_of(n, 3) for n in NAMES[:8]] == PINNED



def test_adding_or_removing_an_instance_moves_no_other():
    for count in (2, 3, 4):
        before = {n: shard.shard_of(n, count) for n in NAMES}
        grown = NAMES + ["new-instance"]
        after = {n: i for i in range(count) for n in shard.select(grown, i, count)}
        assert {n: after[n] for n in NAMES} == before
        shrunk = [n for n in NAMES if n != "task-07"]
        after2 = {n: i for i in range(count) for n in shard.select(shrunk, i, count)}
        assert after2 == {n: s for n, s in before.items() if n != "task-07"}


def test_growing_the_shard_count_only_moves_instances_to_the_new_shard():
    names = [f"n{i}" for i in range(400)]
    for count in (1, 2, 3, 6):
        for n in names:
            old, new = shard.shard_of(n, count), shard.shard_of(n, count + 1)
            assert new in (old, count)


def test_split_is_reasonably_balanced():
    names = [f"n{i}" for i in range(3000)]
    sizes = [len(shard.select(names, i, 3)) for i in range(3)]
    assert all(800 < s < 1200 for s in sizes), sizes


@pytest.mark.parametrize(
    "text,expected",
    [("0/1", (0, 1)), ("2/3", (2, 3)), (" 1 / 4 ", (1, 4))],
)
def test_parse_shard_accepts(text, expected):
    assert shard.parse_shard(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("3/3", "must be below the count"),
        ("1", "INDEX/COUNT"),
        ("1/2/3", "INDEX/COUNT"),
        ("a/3", "whole number"),
        ("0/0", "at least 1"),
        ("-1/3", "must be below"),
        ("", "INDEX/COUNT"),
        ("1.0/2", "whole number"),
    ],
)
def test_parse_shard_rejects_with_a_clear_message(text, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        shard.parse_shard(text)
    assert info.value.exit_status == 2


def test_select_rejects_bad_index():
    with pytest.raises(UsageError):
        shard.select(NAMES, 3, 3)
    with pytest.raises(UsageError):
        shard.select(NAMES, 0, 0)


def test_env_none_when_unsharded():
    assert shard.shard_from_env({"PATH": "/usr/bin"}) is None


def test_env_kubernetes_indexed_job_needs_the_count():
    assert shard.shard_from_env({"JOB_COMPLETION_INDEX": "2", "ORCHESTRATOR_PEX_SHARD_COUNT": "3"}) == (2, 3)
    with pytest.raises(UsageError, match="ORCHESTRATOR_PEX_SHARD_COUNT"):
        shard.shard_from_env({"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(UsageError, match="outside"):
        shard.shard_from_env({"JOB_COMPLETION_INDEX": "3", "ORCHESTRATOR_PEX_SHARD_COUNT": "3"})


def test_env_slurm_offsets_and_steps():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard.shard_from_env(env) == (0, 3)
    env.update(SLURM_ARRAY_TASK_ID="3")
    assert shard.shard_from_env(env) == (2, 3)
    stepped = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
               "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard.shard_from_env(stepped) == (2, 3)
    with pytest.raises(UsageError, match="evenly stepped"):
        shard.shard_from_env(dict(stepped, SLURM_ARRAY_TASK_ID="3"))
    with pytest.raises(UsageError, match="SLURM_ARRAY_TASK_COUNT"):
        shard.shard_from_env({"SLURM_ARRAY_TASK_ID": "0"})
    # --array=1-7:3 is tasks 1, 4, 7: the count follows from MAX when TASK_COUNT is absent.
    assert shard.shard_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
                                 "SLURM_ARRAY_TASK_STEP": "3"}) == (2, 3)
    # A list-shaped array (--array=1,5,9) yields an index beyond the count: refused, not silently mis-split.
    with pytest.raises(UsageError, match="outside"):
        shard.shard_from_env({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"})


def test_env_explicit_variable_wins():
    env = {"ORCHESTRATOR_PEX_SHARD": "1/2", "JOB_COMPLETION_INDEX": "0", "ORCHESTRATOR_PEX_SHARD_COUNT": "5"}
    assert shard.shard_from_env(env) == (1, 2)
    with pytest.raises(UsageError, match="ORCHESTRATOR_PEX_SHARD"):
        shard.shard_from_env({"ORCHESTRATOR_PEX_SHARD": "2/2"})


def test_kubernetes_and_slurm_give_the_same_split_as_explicit_shards():
    for i in range(3):
        explicit = shard.select(NAMES, *shard.parse_shard(f"{i}/3"))
        k8s = shard.select(NAMES, *shard.shard_from_env({"JOB_COMPLETION_INDEX": str(i),
                                                         "ORCHESTRATOR_PEX_SHARD_COUNT": "3"}))
        slurm = shard.select(NAMES, *shard.shard_from_env({"SLURM_ARRAY_TASK_ID": str(i + 1),
                                                           "SLURM_ARRAY_TASK_MIN": "1",
                                                           "SLURM_ARRAY_TASK_COUNT": "3"}))
        assert explicit == k8s == slurm
