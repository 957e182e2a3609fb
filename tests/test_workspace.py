"""Workspaces with real git and real processes: one worktree per instance, recorded diffstats, cleanup, resume after
SIGKILL without orphaned worktrees."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator_pex import workspace

pytestmark = pytest.mark.skipif(
    not workspace.shutil.which("git") and os.environ.get("CI") != "true", reason="git is not installed"
)

#: an instance: create its own file, append a line to the shared file, delete one line of lines.txt
EDIT = (
    "import sys, pathlib\n"
    "name = sys.argv[1]\n"
    "pathlib.Path(f'own-{name}.txt').write_text(f'{name}\\n' * 3)\n"
    "with open('shared.txt', 'a') as f: f.write(f'from {name}\\n')\n"
    "lines = pathlib.Path('lines.txt').read_text().splitlines(True)\n"
    "pathlib.Path('lines.txt').write_text(''.join(lines[1:]))\n"
)


def git(cwd, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.invalid")
    git(path, "config", "user.name", "t")
    (path / "shared.txt").write_text("start\n")
    (path / "lines.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def shortstat(repo, base, head):
    """(files, insertions, deletions) as ``git diff --stat`` summarises them."""
    text = git(repo, "diff", "--stat", "--no-renames", f"{base}..{head}").strip().splitlines()[-1]
    nums = [int(re.search(rf"(\d+) {w}", text).group(1)) if re.search(rf"(\d+) {w}", text) else 0
            for w in ("file", "insertion", "deletion")]
    return tuple(nums)


def run(cli_env, *args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "orchestrator_pex", *args], cwd=cwd, env=cli_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def test_ten_instances_edit_in_parallel_each_branch_has_exactly_its_own_change(tmp_path, make_cli_env):
    repo = make_repo(tmp_path / "repo")
    head_before = git(repo, "rev-parse", "HEAD").strip()
    names = [f"edit{i}" for i in range(10)]
    instances = "".join(
        f'[[instances]]\nname = "{n}"\nargv = {json.dumps([sys.executable, "-c", EDIT, n])}\n' for n in names)
    batch = tmp_path / "batch.toml"
    batch.write_text(f'workspace = "worktree"\nrepo = "repo"\nconcurrency = 10\n[defaults]\ncwd = "repo"\n'
                     f'keep = "always"\n{instances}')
    proc = run(make_cli_env, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    branches = set(git(repo, "branch", "--format=%(refname:short)").split())
    for record in doc["instances"]:
        ws = record["workspace"]
        name = record["name"]
        assert record["status"] == "succeeded"
        assert ws["branch"] == workspace.branch_name(doc["run_id"], name) and ws["branch"] in branches
        assert ws["base"] == head_before and ws["committed"] is True and ws["dirty"] is False
        assert ws["head"] == git(repo, "rev-parse", ws["branch"]).strip() != head_before
        assert sorted(ws["paths"]) == ["lines.txt", f"own-{name}.txt", "shared.txt"]
        assert sorted(git(repo, "diff", "--name-only", f"{ws['base']}..{ws['head']}").split()) == sorted(ws["paths"])
        assert (ws["files"], ws["insertions"], ws["deletions"]) == shortstat(repo, ws["base"], ws["head"]) == (3, 4, 1)
        assert git(repo, "show", f"{ws['head']}:shared.txt") == f"start\nfrom {name}\n"
        assert ws["kept"] is True and os.path.isdir(ws["path"])
        assert Path(ws["path"]).parent == Path(doc["run_dir"]) / "worktrees"
    # the main working tree is untouched
    assert git(repo, "rev-parse", "HEAD").strip() == head_before
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "shared.txt").read_text() == "start\n" and not list(repo.glob("own-*"))


def test_keep_policies_and_uncommitted_changes_are_never_removed(tmp_path, make_cli_env):
    repo = make_repo(tmp_path / "repo")
    edit = json.dumps([sys.executable, "-c", EDIT, "x"])
    batch = tmp_path / "batch.toml"
    batch.write_text(f"""
workspace = "worktree"
[defaults]
cwd = "repo"
[[instances]]
name = "unchanged"
argv = ["true"]
[[instances]]
name = "changed-never"
argv = {edit}
keep = "never"
[[instances]]
name = "dirty-never"
argv = {edit}
keep = "never"
commit = false
[[instances]]
name = "unchanged-always"
argv = ["true"]
keep = "always"
[[instances]]
name = "unchanged-delete"
argv = ["true"]
delete_branch = true
[[instances]]
name = "changed-delete"
argv = {edit}
keep = "never"
delete_branch = true
""")
    proc = run(make_cli_env, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    ws = {r["name"]: r["workspace"] for r in json.loads(proc.stdout)["instances"]}
    assert ws["unchanged"]["kept"] is False and ws["unchanged"]["head"] == ws["unchanged"]["base"]
    assert ws["changed-never"]["kept"] is False and ws["changed-never"]["files"] == 3
    assert ws["dirty-never"]["kept"] is True and ws["dirty-never"]["dirty"] is True
    assert ws["dirty-never"]["committed"] is False and ws["dirty-never"]["files"] == 0
    assert (Path(ws["dirty-never"]["path"]) / "own-x.txt").exists()
    assert ws["unchanged-always"]["kept"] is True
    for w in ws.values():
        assert os.path.isdir(w["path"]) == w["kept"]
    # branches are kept, whatever happened to the directories, unless asked; a branch with commits is never deleted
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    assert ws["unchanged-delete"]["branch_deleted"] is True and ws["unchanged-delete"]["branch"] not in branches
    assert ws["changed-delete"]["branch_deleted"] is False and ws["changed-delete"]["kept"] is False
    assert all(w["branch"] in branches for n, w in ws.items() if n != "unchanged-delete")


def test_not_a_repository_is_refused_before_anything_starts(tmp_path, make_cli_env):
    (tmp_path / "plain").mkdir()
    batch = tmp_path / "batch.toml"
    batch.write_text('workspace = "worktree"\n[[instances]]\nname = "a"\nargv = ["true"]\ncwd = "plain"\n')
    proc = run(make_cli_env, "run", str(batch), "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "not inside a git repository" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/worktrees"))


def test_unknown_base_is_refused(tmp_path, make_cli_env):
    make_repo(tmp_path / "repo")
    batch = tmp_path / "batch.toml"
    batch.write_text('workspace = "worktree"\nbase = "no-such-ref"\n[[instances]]\nname = "a"\nargv = ["true"]\n'
                     'cwd = "repo"\n')
    proc = run(make_cli_env, "run", str(batch), "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2 and "no-such-ref" in proc.stderr.decode()
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_branch_name_is_a_valid_ref():
    for run_id, name in [("20260101T000000Z-my batch-ab12", "a..b"), ("x", "y.lock"), ("r", ".hidden")]:
        branch = workspace.branch_name(run_id, name)
        ok = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True)
        assert ok.returncode == 0, branch


def _worktree_dirs(run_dir: Path):
    root = run_dir / "worktrees"
    return sorted(str(p.resolve()) for p in root.iterdir()) if root.is_dir() else []


def test_sigkill_mid_run_then_resume_leaves_no_orphan_and_reruns_no_success(tmp_path, make_cli_env):
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "starts"
    marker.mkdir()
    # fast instances finish; slow ones write a file then wait for a flag the test sets after the kill
    slow = ("import sys, os, time, pathlib\n"
            "name, marks, flag = sys.argv[1:4]\n"
            "pathlib.Path(marks, name + '.' + str(time.time_ns())).write_text('')\n"
            "pathlib.Path(f'own-{name}.txt').write_text(name + '\\n')\n"
            "print('waiting', flush=True)  # an instance with output and no CPU is not busy: headroom admits more\n"
            "while not os.path.exists(flag): time.sleep(0.05)\n")
    flag = tmp_path / "go"
    names = [f"w{i}" for i in range(6)]
    instances = ""
    for i, n in enumerate(names):
        argv = [sys.executable, "-c", slow, n, str(marker), str(flag) if i >= 3 else str(tmp_path)]
        instances += f'[[instances]]\nname = "{n}"\nargv = {json.dumps(argv)}\n'
    late = [sys.executable, "-c", slow, "late", str(marker), str(tmp_path)]
    instances += f'[[instances]]\nname = "late"\nneeds = ["w3"]\nargv = {json.dumps(late)}\n'
    names.append("late")
    batch = tmp_path / "batch.toml"
    batch.write_text(f'workspace = "worktree"\nconcurrency = 6\n[defaults]\ncwd = "repo"\nkeep = "changed"\n'
                     f'{instances}')
    head_before = git(repo, "rev-parse", "HEAD").strip()
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--results-dir", str(runs)],
                            cwd=tmp_path, env=make_cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run_dirs = list(runs.glob("*/journal.jsonl"))
            text = run_dirs[0].read_text() if run_dirs else ""
            if text.count('"status":"succeeded"') >= 3 and len(list(marker.iterdir())) >= 6:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the run did not reach the expected point: {text[-3000:]} {list(marker.iterdir())}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and its instances, as a crash would
        proc.wait()
    run_dir = run_dirs[0].parent
    (repo / "moved.txt").write_text("main moved on\n")  # the repository moves between the crash and the resume
    git(repo, "add", "moved.txt")
    git(repo, "commit", "-q", "-m", "moved")
    flag.write_text("")  # the reruns finish at once
    res = run(make_cli_env, "resume", str(run_dir), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    doc = json.loads(res.stdout)
    assert {r["name"]: r["status"] for r in doc["instances"]} == {n: "succeeded" for n in names}
    starts = {n: len(list(marker.glob(f"{n}.*"))) for n in names}
    assert starts == {"w0": 1, "w1": 1, "w2": 1, "w3": 2, "w4": 2, "w5": 2, "late": 1}
    # no orphan: what git lists under the run's worktrees folder is exactly what is on disk
    listed = sorted(p for p in workspace.registered(str(repo)) if p.startswith(str(run_dir.resolve())))
    assert listed == _worktree_dirs(run_dir)
    for r in doc["instances"]:
        ws = r["workspace"]
        assert ws["base"] == head_before  # the batch-start base, recorded, not the moved HEAD
        assert ws["paths"] == [f"own-{r['name']}.txt"], r
        assert git(repo, "show", f"{ws['branch']}:own-{r['name']}.txt") == f"{r['name']}\n"
    assert git(repo, "status", "--porcelain") == ""


def test_policy_says_where_worktrees_may_be_created(tmp_path, make_cli_env):
    make_repo(tmp_path / "repo")
    (tmp_path / "allowed").mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(f'allowed_worktree_prefixes = ["{tmp_path / "allowed"}"]\n')
    batch = tmp_path / "batch.toml"
    batch.write_text('[[instances]]\nname = "a"\nargv = ["true"]\ncwd = "repo"\nworkspace = "worktree"\n'
                     '[[instances]]\nname = "b"\nargv = ["true"]\ncwd = "repo"\n')
    proc = run(make_cli_env, "run", str(batch), "--policy", str(policy), "--results-dir", str(tmp_path / "elsewhere"),
               cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "batch.toml: instances[0].workspace: worktrees in" in err and "allowed_worktree_prefixes" in err
    assert "instances[1]" not in err  # a shared-directory instance is not concerned
    assert not (tmp_path / "elsewhere").exists()
    proc = run(make_cli_env, "run", str(batch), "--policy", str(policy), "--results-dir",
               str(tmp_path / "allowed" / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()


def test_git_retries_while_another_git_holds_its_lock(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "new.txt").write_text("x\n")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # another git is "working" in this repository
    import threading

    released = threading.Timer(0.3, lock.unlink)
    released.start()
    try:
        workspace.git(str(repo), "add", "new.txt")  # fails with "index.lock: File exists" until released
    finally:
        released.join()
    assert "new.txt" in git(repo, "diff", "--cached", "--name-only")
    lock.write_text("")
    try:
        with pytest.raises(workspace.WorkspaceError) as info:  # held for good: a one-line error, not a hang
            workspace.git(str(repo), "rm", "--cached", "-q", "new.txt")
        assert "index.lock" in str(info.value) and "\n" not in str(info.value)
    finally:
        lock.unlink()


def test_sigterm_mid_run_keeps_work_registered_and_resume_finishes(tmp_path, make_cli_env):
    repo = make_repo(tmp_path / "repo")
    flag = tmp_path / "go"
    marks = tmp_path / "marks"
    marks.mkdir()
    slow = ("import sys, os, time, pathlib\n"
            "name, marks, flag = sys.argv[1:4]\n"
            "pathlib.Path(f'own-{name}.txt').write_text(name + '\\n')\n"
            "pathlib.Path(marks, name + '.' + str(time.time_ns())).write_text('')\n"
            "print('waiting', flush=True)\n"
            "while not os.path.exists(flag): time.sleep(0.05)\n")
    names = [f"t{i}" for i in range(4)]
    instances = "".join(
        f'[[instances]]\nname = "{n}"\nargv = {json.dumps([sys.executable, "-c", slow, n, str(marks), str(flag)])}\n'
        for n in names)
    batch = tmp_path / "batch.toml"
    batch.write_text(f'workspace = "worktree"\ngrace_period = 1\n[defaults]\ncwd = "repo"\n{instances}')
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--results-dir", str(runs)],
                            cwd=tmp_path, env=make_cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(marks.iterdir())) < 4:
            time.sleep(0.05)
        assert len(list(marks.iterdir())) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = next(runs.iterdir())
    doc = json.loads((run_dir / "results.json").read_text())
    listed = sorted(p for p in workspace.registered(str(repo)) if p.startswith(str(run_dir.resolve())))
    assert listed == _worktree_dirs(run_dir) and len(listed) == 4
    for r in doc["instances"]:
        assert r["status"] == "cancelled"
        ws = r["workspace"]  # the interrupted instance's work is committed on its branch
        assert ws["committed"] is True and ws["paths"] == [f"own-{r['name']}.txt"] and ws["kept"] is True
    flag.write_text("")
    res = run(make_cli_env, "resume", str(run_dir), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    final = json.loads(res.stdout)
    assert all(r["status"] == "succeeded" for r in final["instances"])
    for r in final["instances"]:  # the rerun continued on the same branch: its own file, committed once
        assert r["workspace"]["paths"] == [f"own-{r['name']}.txt"]
        assert r["workspace"]["branch"] == workspace.branch_name(doc["run_id"], r["name"])
    listed = sorted(p for p in workspace.registered(str(repo)) if p.startswith(str(run_dir.resolve())))
    assert listed == _worktree_dirs(run_dir)
    assert git(repo, "status", "--porcelain") == ""


def test_repository_hooks_never_run_for_the_orchestrators_git(tmp_path, make_cli_env):
    repo = make_repo(tmp_path / "repo")
    ran = tmp_path / "hook-ran"
    for hook in ("post-checkout", "pre-commit", "commit-msg", "post-commit"):
        path = repo / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {ran}\n")
        path.chmod(0o755)
    edit = json.dumps([sys.executable, "-c", EDIT, "h"])
    batch = tmp_path / "batch.toml"
    batch.write_text(f'workspace = "worktree"\n[[instances]]\nname = "h"\nargv = {edit}\ncwd = "repo"\n')
    proc = run(make_cli_env, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    ws = json.loads(proc.stdout)["instances"][0]["workspace"]
    assert ws["committed"] is True and ws["files"] == 3
    assert not ran.exists()  # checkout and commit happened, no hook of the repository ran


def test_any_printable_name_gets_its_own_worktree_inside_the_run_directory(tmp_path, make_cli_env):
    """Names are any printable text (agents): worktree folder and branch come from the log stem, never the name."""
    repo = make_repo(tmp_path / "repo")
    names = ["../escape", "A/B", "a b", "a-b", "..", "セキュリティ レビュー"]
    instances = "".join(
        f'[[instances]]\nname = {json.dumps(n)}\nargv = {json.dumps([sys.executable, "-c", EDIT, str(i)])}\n'
        for i, n in enumerate(names))
    batch = tmp_path / "batch.toml"
    batch.write_text(f'workspace = "worktree"\nrepo = "repo"\n[defaults]\ncwd = "repo"\nkeep = "always"\n{instances}')
    proc = run(make_cli_env, "run", str(batch), "--json", "--results-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    root = os.path.realpath(os.path.join(doc["run_dir"], "worktrees"))
    paths = [r["workspace"]["path"] for r in doc["instances"]]
    branches = [r["workspace"]["branch"] for r in doc["instances"]]
    assert all(os.path.dirname(p) == root and os.path.isdir(p) for p in paths), paths
    assert len(set(paths)) == len(names) and len(set(branches)) == len(names)
    assert not (tmp_path / "runs" / "escape").exists() and not (tmp_path / "escape").exists()
    listed = set(git(repo, "branch", "--format=%(refname:short)").split())
    assert set(branches) <= listed
