"""`orchestrator-pex merge`: one document from a sharded batch's results, refusing anything inconsistent."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from orchestrator_pex import cli, shard
from orchestrator_pex.commands import merge
from orchestrator_pex.errors import OrchestratorError

NAMES = [f"task-{i:02d}" for i in range(12)]


def instance(name, status="succeeded", cost=0.01, tokens=10, tools=None):
    return {
        "name": name,
        "status": status,
        "exit_code": 0 if status == "succeeded" else 1,
        "tokens": {"input": tokens, "output": tokens, "cache_creation": 0, "cache_read": 0, "total": 2 * tokens},
        "cost_usd": cost,
        "cost_source": "result",
        "tools": tools or {"Bash": 1},
    }


def document(index, count, batch="/etc/orchestrator-pex/batches/nightly.toml", fail=(), status=None, names=NAMES):
    insts = [instance(n, "failed" if n in fail else "succeeded") for n in shard.select(names, index, count)]
    return {
        "run_id": f"run-{index}",
        "batch": batch,
        "shard": {"index": index, "count": count},
        "started_at": f"2026-11-24T02:00:0{index}+00:00",
        "finished_at": f"2026-11-24T02:1{index}:00+00:00",
        "status": status or ("failed" if any(i["status"] != "succeeded" for i in insts) else "succeeded"),
        "totals": {"instances": len(insts), "cost_usd": 0.01 * len(insts)},
        "instances": insts,
    }


def write(tmp_path, docs):
    paths = []
    for i, doc in enumerate(docs):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    return paths


def run_cli(argv, capsys):
    """The command as the CLI runs it: parse, call main, turn OrchestratorError into its one line + status."""
    parser = argparse.ArgumentParser(prog="orchestrator-pex merge")
    merge.add_arguments(parser)
    try:
        code = merge.main(parser.parse_args(argv))
    except OrchestratorError as exc:
        print(f"orchestrator-pex: {exc}", file=sys.stderr)
        code = exc.exit_status
    out, err = capsys.readouterr()
    return code, out, err


def test_merges_all_shards_into_one_document(tmp_path, capsys):
    paths = write(tmp_path, [document(2, 3), document(0, 3), document(1, 3)])
    out_path = tmp_path / "merged.json"
    code, out, err = run_cli([*paths, "-o", str(out_path)], capsys)
    assert code == 0, err
    assert out == ""
    doc = json.loads(out_path.read_text())
    assert sorted(i["name"] for i in doc["instances"]) == sorted(NAMES)
    assert doc["status"] == "succeeded"
    assert doc["totals"]["instances"] == 12
    assert {k: v for k, v in doc["totals"]["by_status"].items() if v} == {"succeeded": 12}
    assert doc["totals"]["by_status"]["not-started"] == 0
    assert doc["totals"]["tokens"]["total"] == 12 * 20
    assert doc["totals"]["cost_usd"] == pytest.approx(0.12)
    assert doc["totals"]["tools"] == {"Bash": 12}
    assert doc["shard"] == {"count": 3, "indices": [0, 1, 2]}
    assert [r["shard"]["index"] for r in doc["runs"]] == [0, 1, 2]
    assert doc["started_at"] == "2026-11-24T02:00:00+00:00"
    assert doc["finished_at"] == "2026-11-24T02:12:00+00:00"


def test_failed_instance_makes_merged_status_failed_and_exit_status_1(tmp_path, capsys):
    victim = shard.select(NAMES, 1, 3)[0]
    paths = write(tmp_path, [document(0, 3), document(1, 3, fail={victim}), document(2, 3)])
    code, out, _ = run_cli([*paths, "--exit-status"], capsys)
    doc = json.loads(out)
    assert (code, doc["status"]) == (1, "failed")
    assert {k: v for k, v in doc["totals"]["by_status"].items() if v} == {"failed": 1, "succeeded": 11}
    budget = write(tmp_path, [document(0, 3), document(1, 3, status="budget-stopped"), document(2, 3)])
    code, out, _ = run_cli([*budget, "--exit-status"], capsys)
    assert (code, json.loads(out)["status"]) == (3, "budget-stopped")


def test_run_directory_is_accepted(tmp_path, capsys):
    dirs = []
    for i in range(2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(document(i, 2)))
        dirs.append(str(d))
    code, out, _ = run_cli(dirs, capsys)
    assert code == 0 and len(json.loads(out)["instances"]) == 12


@pytest.mark.parametrize(
    "docs,fragment",
    [
        ([document(0, 2), document(1, 2, batch="/other.toml")], "different batches"),
        ([document(0, 2), document(0, 2)], "overlapping shards"),
        ([document(0, 2), document(1, 3)], "different shard counts"),
        ([document(0, 3), document(1, 3)], "missing"),
        ([document(0, 1), {**document(0, 1), "shard": None}], "no \"shard\""),
        ([{**document(0, 1), "shard": None, "run_id": "a"}, {**document(0, 1), "shard": None}],
         "overlapping instances"),
        ([document(0, 2), {**document(1, 2), "instances": document(0, 2)["instances"][:1]}], "overlapping instances"),
        ([document(0, 2), {**document(1, 2), "instances": [instance("zz-not-here-" + n) for n in NAMES
                                                           if shard.shard_of("zz-not-here-" + n, 2) == 0][:1]}],
         "belongs to shard 0/2"),
        ([{**document(0, 2), "shard": {"index": 2, "count": 2}}], "0 <= I < N"),
    ],
)
def test_refuses_inconsistent_inputs(tmp_path, capsys, docs, fragment):
    code, out, err = run_cli(write(tmp_path, docs), capsys)
    assert code == 2
    assert out == ""
    assert fragment in err
    assert err.startswith("orchestrator-pex: ") and err.count("\n") == 1


def test_partial_merge_is_explicit(tmp_path, capsys):
    code, out, _ = run_cli([*write(tmp_path, [document(0, 3), document(2, 3)]), "--partial"], capsys)
    assert code == 0
    assert json.loads(out)["shard"] == {"count": 3, "indices": [0, 2]}


def test_unreadable_and_non_results_inputs(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli([str(bad)], capsys)
    assert code == 2 and "not a JSON results document" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    code, _, err = run_cli([str(other)], capsys)
    assert code == 2 and "not a results document" in err
    code, _, err = run_cli([str(tmp_path / "absent.json")], capsys)
    assert code == 2 and "cannot read" in err


def test_unsharded_documents_of_disjoint_instances_merge(tmp_path, capsys):
    a = {**document(0, 1), "shard": None, "instances": [instance("a")]}
    b = {**document(0, 1), "shard": None, "instances": [instance("b", "timed-out")]}
    a.pop("shard"), b.pop("shard")
    code, out, _ = run_cli(write(tmp_path, [a, b]), capsys)
    doc = json.loads(out)
    assert code == 0 and [i["name"] for i in doc["instances"]] == ["a", "b"]
    assert doc["status"] == "failed" and "shard" not in doc


def test_merge_function_direct_status_of_run_level_failure():
    assert merge.exit_status_for({"status": "interrupted"}) == 1


def test_registered_as_a_subcommand():
    assert cli.COMMANDS["merge"][0] == "orchestrator_pex.commands.merge"


def test_batch_identity_is_the_digest_when_every_document_has_one(tmp_path, capsys):
    a = {**document(0, 2, batch="/host-a/nightly.toml"), "batch_sha256": "ab" * 32}
    b = {**document(1, 2, batch="/host-b/nightly.toml"), "batch_sha256": "ab" * 32}
    code, out, err = run_cli(write(tmp_path, [a, b]), capsys)
    assert code == 0, err
    assert json.loads(out)["batch_sha256"] == "ab" * 32
    c = {**b, "batch": "/host-a/nightly.toml", "batch_sha256": "cd" * 32}
    code, _, err = run_cli(write(tmp_path, [a, c]), capsys)
    assert code == 2 and "batch_sha256" in err and "different batches" in err
    # Without a digest on every document, the paths must match.
    code, _, err = run_cli(write(tmp_path, [a, {**b, "batch_sha256": None}]), capsys)
    assert code == 2 and "different batches" in err
