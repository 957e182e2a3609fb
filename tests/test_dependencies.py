"""Dependencies between instances, end to end through the CLI with real processes: success chains, failure
propagation (``skipped``), ``when``, refused graphs, hostile placeholder content, resume of a half-done graph,
shard and merge of a graph, dry-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator_pex import shard

PY = sys.executable
#: an instance: append its name to LOG; fail when argv[3] == "fail"; print a result event carrying RESULT
STEP = (
    "import json, os, sys\n"
    "name, log, mode = sys.argv[1:4]\n"
    "open(log, 'a').write(name + '\\n')\n"
    "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False, 'session_id': 'sess-' + name,\n"
    "                  'result': open(os.environ['RESULT_FILE']).read() if 'RESULT_FILE' in os.environ\n"
    "                  else os.environ.get('RESULT', 'done ' + name)}), flush=True)\n"
    "sys.exit(1 if mode == 'fail' else 0)\n"
)


def step(name, log, mode="ok", needs=None, extra=""):
    text = f'[[instances]]\nname = "{name}"\nargv = {json.dumps([PY, "-c", STEP, name, str(log), mode])}\n'
    if needs is not None:
        text += f"needs = {json.dumps(needs)}\n"
    return text + extra


def run(make_cli_env, cwd, *args, timeout=120):
    return subprocess.run([PY, "-m", "orchestrator_pex", *args], cwd=cwd, env=make_cli_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def by_name(doc):
    return {r["name"]: r for r in doc["instances"]}


def test_success_chain_runs_in_dependency_order(tmp_path, make_cli_env):
    log = tmp_path / "log"
    # batch order is the reverse of the dependency order
    batch = tmp_path / "b.toml"
    batch.write_text("concurrency = 4\n" + step("c", log, needs=["b"]) + step("b", log, needs=["a"]) + step("a", log))
    proc = run(make_cli_env, tmp_path, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert log.read_text().split() == ["a", "b", "c"]
    doc = json.loads(proc.stdout)
    assert [r["name"] for r in doc["instances"]] == ["c", "b", "a"]  # the document keeps batch order
    assert all(r["status"] == "succeeded" for r in doc["instances"])
    assert doc["graph"] == {"c": ["b"], "b": ["a"], "a": []}


def test_failure_skips_dependents_unless_when_says_otherwise(tmp_path, make_cli_env):
    log = tmp_path / "log"
    batch = tmp_path / "b.toml"
    batch.write_text(
        step("a", log, "fail") + step("b", log, needs=["a"]) + step("c", log, needs=["b"])
        + step("on-fail", log, needs=["a"], extra='when = "on-failure"\n')
        + step("always", log, needs=["c"], extra='when = "always"\n')
        + step("ok", log) + step("not-on-ok", log, needs=["ok"], extra='when = "on-failure"\n'))
    proc = run(make_cli_env, tmp_path, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == 1, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    rec = by_name(doc)
    assert {n: r["status"] for n, r in rec.items()} == {
        "a": "failed", "b": "skipped", "c": "skipped", "on-fail": "succeeded", "always": "succeeded",
        "ok": "succeeded", "not-on-ok": "skipped"}
    assert rec["b"]["error"] == "needs a, which failed"
    assert rec["c"]["error"] == "needs b, which ended skipped"
    assert rec["not-on-ok"]["error"] == "when = on-failure: every instance it needs succeeded"
    assert rec["b"]["attempts"] == 0 and rec["b"]["started_at"] is None
    assert sorted(log.read_text().split()) == ["a", "always", "ok", "on-fail"]
    assert doc["totals"]["by_status"]["skipped"] == 3


def test_cycle_and_unknown_name_refused_by_validate_and_run(tmp_path, make_cli_env):
    log = tmp_path / "log"
    batch = tmp_path / "b.toml"
    batch.write_text(step("a", log, needs=["b"]) + step("b", log, needs=["a"]))
    for cmd in (["validate", str(batch)], ["run", str(batch), "--results-dir", str(tmp_path / "runs")]):
        proc = run(make_cli_env, tmp_path, *cmd)
        assert proc.returncode == 2
        assert proc.stderr.decode().strip().splitlines() == [
            "orchestrator-pex: b.toml: instances[0].needs: dependency cycle: a -> b -> a"]
    batch.write_text(step("a", log, needs=["nobody"]))
    proc = run(make_cli_env, tmp_path, "validate", str(batch))
    assert proc.returncode == 2 and 'instances[0].needs[0]: no instance is named "nobody"' in proc.stderr.decode()
    assert not log.exists() and not (tmp_path / "runs").exists()


HOSTILE = "it's \"q\"\nline2 $(touch PWNED) `touch PWNED2` {{a.result}} {{a.session_id}} ; echo x > PWNED3"


def test_hostile_placeholder_content_arrives_literally(tmp_path, make_cli_env):
    log = tmp_path / "log"
    out = tmp_path / "seen.json"
    show = ("import json, os, sys\n"
            "json.dump({'argv': sys.argv[1:], 'env': os.environ['FROM_A'], 'sid': os.environ['SID']},"
            " open(sys.argv[1], 'w'))\n")
    (tmp_path / "hostile").write_text(HOSTILE)  # (a batch file holding it would be refused: it has a placeholder)
    batch = tmp_path / "b.toml"
    batch.write_text(
        step("a", log, extra=f"env = {{ RESULT_FILE = {json.dumps(str(tmp_path / 'hostile'))} }}\n")
        + '[[instances]]\nname = "b"\nneeds = ["a"]\n'
        + f'argv = {json.dumps([PY, "-c", show, str(out), "{{a.result}}", "x{{a.status}}y", "{{a.branch}}"])}\n'
        + 'env = { FROM_A = "{{a.result}}", SID = "{{a.session_id}}" }\n')
    proc = run(make_cli_env, tmp_path, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr.decode()
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(out), HOSTILE, "xsucceededy", ""]  # whole elements; no workspace: empty branch
    assert seen["env"] == HOSTILE and seen["sid"] == "sess-a"
    assert not list(tmp_path.glob("PWNED*"))
    # the record of b shows the instance as run (the batch copy keeps the placeholders unfilled)
    assert "{{a.result}}" in (Path(json.loads(proc.stdout)["run_dir"]) / "batch.toml").read_text()


def test_dry_run_shows_graph_and_unfilled_placeholders(tmp_path, make_cli_env):
    batch = tmp_path / "b.toml"
    batch.write_text('claude = "@agent-sim"\n[[instances]]\nname = "plan"\nprompt = "make a plan"\n'
                     '[[instances]]\nname = "do"\nprompt = "follow: {{plan.result}}"\nresume = "{{plan.session_id}}"\n'
                     'needs = ["plan"]\nworkspace = "worktree"\n')
    proc = run(make_cli_env, tmp_path, "run", str(batch), "--dry-run")
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert "# dependency order: plan, do" in text
    assert "needs: plan (when success; level 1)" in text
    assert "'follow: {{plan.result}}'" in text and "--resume '{{plan.session_id}}'" in text
    assert "workspace: worktree of the repository holding cwd at HEAD, branch orchestrator-pex/RUN_ID/do" in text


def test_resume_of_half_done_graph_reruns_nothing_succeeded_and_fills_from_records(tmp_path, make_cli_env):
    log = tmp_path / "log"
    flag = tmp_path / "go"
    out = tmp_path / "c-saw"
    wait = ("import os, sys, time\nopen(sys.argv[1], 'a').write('b\\n')\nprint('waiting', flush=True)\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n")
    show = "import sys\nopen(sys.argv[1], 'a').write('c\\n')\nopen(sys.argv[2], 'w').write(sys.argv[3])\n"
    batch = tmp_path / "b.toml"
    batch.write_text(
        step("a", log, extra='env = { RESULT = "the plan from a" }\n')
        + f'[[instances]]\nname = "b"\nneeds = ["a"]\nargv = {json.dumps([PY, "-c", wait, str(log), str(flag)])}\n'
        + '[[instances]]\nname = "c"\nneeds = ["b", "a"]\n'
        + f'argv = {json.dumps([PY, "-c", show, str(log), str(out), "{{a.result}}|{{b.status}}"])}\n'
        + step("lone", log))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([PY, "-m", "orchestrator_pex", "run", str(batch), "--results-dir", str(runs)],
                            cwd=tmp_path, env=make_cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "b" in log.read_text().split()):
            time.sleep(0.05)
        assert "b" in log.read_text().split()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_dir = next(runs.iterdir())
    dry = run(make_cli_env, tmp_path, "resume", str(run_dir), "--dry-run")
    assert dry.stdout.decode().split() == ["b", "c"] or dry.stdout.decode().split() == ["b", "c", "lone"]
    flag.write_text("")
    res = run(make_cli_env, tmp_path, "resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stderr.decode()
    assert {r["name"]: r["status"] for r in json.loads(res.stdout)["instances"]} == {
        "a": "succeeded", "b": "succeeded", "c": "succeeded", "lone": "succeeded"}
    words = log.read_text().split()
    assert words.count("a") == 1 and words.count("b") == 2 and words.count("c") == 1
    assert out.read_text() == "the plan from a|succeeded"  # a's recorded result, never rerun


def test_resume_rerun_failed_reruns_skipped_dependents_only(tmp_path, make_cli_env):
    log = tmp_path / "log"
    state = tmp_path / "fail-once"
    once = ("import os, sys\nopen(sys.argv[1], 'a').write('b\\n')\n"
            "if not os.path.exists(sys.argv[2]): open(sys.argv[2], 'w').close(); sys.exit(1)\n")
    batch = tmp_path / "b.toml"
    batch.write_text(step("a", log) + f'[[instances]]\nname = "b"\nneeds = ["a"]\n'
                     f'argv = {json.dumps([PY, "-c", once, str(log), str(state)])}\n'
                     + step("c", log, needs=["b"]) + step("x", log, "fail") + step("y", log, needs=["x"]))
    first = run(make_cli_env, tmp_path, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"))
    doc = json.loads(first.stdout)
    assert {r["name"]: r["status"] for r in doc["instances"]} == {
        "a": "succeeded", "b": "failed", "c": "skipped", "x": "failed", "y": "skipped"}
    plain = run(make_cli_env, tmp_path, "resume", doc["run_dir"], "--dry-run")
    assert plain.stdout.decode().split() == []  # skipped instances wait for what they need
    dry = run(make_cli_env, tmp_path, "resume", doc["run_dir"], "--rerun-failed", "--dry-run")
    assert dry.stdout.decode().split() == ["b", "c", "x", "y"]
    res = run(make_cli_env, tmp_path, "resume", doc["run_dir"], "--rerun-failed", "--json")
    rec = by_name(json.loads(res.stdout))
    assert {n: r["status"] for n, r in rec.items()} == {
        "a": "succeeded", "b": "succeeded", "c": "succeeded", "x": "failed", "y": "skipped"}
    assert log.read_text().split().count("a") == 1


def test_shard_holds_whole_components_and_merge_checks_them(tmp_path, make_cli_env):
    log = tmp_path / "log"
    names = [f"s{i}" for i in range(8)]
    text = "".join(step(n, log) for n in names)
    text += step("review", log, needs=["s1", "s2"]) + step("final", log, needs=["review", "s5"])
    batch = tmp_path / "b.toml"
    batch.write_text(text)
    needs = {**{n: () for n in names}, "review": ("s1", "s2"), "final": ("review", "s5")}
    all_names = list(needs)
    chain = {"s1", "s2", "s5", "review", "final"}
    docs = []
    for i in range(3):
        picked = shard.select(all_names, i, 3, needs)
        assert chain <= set(picked) or not chain & set(picked)
        proc = run(make_cli_env, tmp_path, "run", str(batch), "--shard", f"{i}/3", "--json", "--results-dir",
                   str(tmp_path / f"runs{i}"))
        assert proc.returncode == 0, proc.stderr.decode()
        doc = json.loads(proc.stdout)
        assert [r["name"] for r in doc["instances"]] == picked
        path = tmp_path / f"r{i}.json"
        path.write_text(proc.stdout.decode())
        docs.append(path)
    merged = run(make_cli_env, tmp_path, "merge", *map(str, docs))
    assert merged.returncode == 0, merged.stderr.decode()
    assert sorted(r["name"] for r in json.loads(merged.stdout)["instances"]) == sorted(all_names)
    # move "final" to another shard's document: merge refuses the cut component
    loaded = [json.loads(p.read_text()) for p in docs]
    src = next(d for d in loaded if any(r["name"] == "final" for r in d["instances"]))
    dst = next(d for d in loaded if d is not src)
    moved = next(r for r in src["instances"] if r["name"] == "final")
    src["instances"].remove(moved)
    dst["instances"].append(moved)
    dst.setdefault("graph", {})["final"] = ["review", "s5"]
    for p, d in zip(docs, loaded):
        p.write_text(json.dumps(d))
    bad = run(make_cli_env, tmp_path, "merge", *map(str, docs))
    assert bad.returncode == 2
    assert "final" in bad.stderr.decode() and len(bad.stderr.decode().strip().splitlines()) == 1


def test_select_with_needs_is_a_partition_and_keeps_singletons_in_place():
    needs = {"a": (), "b": ("a",), "c": (), "d": ("c",), "e": ()}
    for count in (1, 2, 3, 5):
        picked = [shard.select(list(needs), i, count, needs) for i in range(count)]
        assert sorted(sum(picked, [])) == sorted(needs)
        for p in picked:
            assert ("a" in p) == ("b" in p) and ("c" in p) == ("d" in p)
        assert [("e" in p) for p in picked] == [shard.shard_of("e", count) == i for i in range(count)]


def test_init_example_fanout_runs_on_worktrees(tmp_path, make_cli_env, fake_claude):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["-c", "user.email=t@x.invalid", "-c", "user.name=t", "commit", "-q",
                                                 "--allow-empty", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    proc = run(make_cli_env, repo, "init", "--example", "fanout", str(tmp_path / "fanout.toml"))
    assert proc.returncode == 0, proc.stderr.decode()
    # validate checks the agent too: the one this run uses
    assert run(make_cli_env, repo, "validate", str(tmp_path / "fanout.toml"), "--claude", fake_claude).returncode == 0
    proc = run(make_cli_env, repo, "run", str(tmp_path / "fanout.toml"), "--claude", fake_claude, "--json",
               "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr.decode()
    rec = by_name(json.loads(proc.stdout))
    assert list(rec) == ["fix-1", "fix-2", "fix-3", "review"]
    branches = subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"], check=True,
                              capture_output=True, text=True).stdout.split()
    for name, r in rec.items():
        assert r["status"] == "succeeded" and r["workspace"]["kept"] is False  # nothing changed: removed
        assert (r["workspace"]["branch"] in branches) == (name != "review")  # the review asked: delete_branch
