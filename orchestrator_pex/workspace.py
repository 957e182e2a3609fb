"""Workspaces: one git worktree per instance — created before launch, recorded, collected afterwards, cleaned up.

An instance with ``workspace = "worktree"`` runs in its own ``git worktree`` of ``repo`` (default: the repository
holding the instance's ``cwd``), on a new branch made from ``base`` (a ref; default ``HEAD``). Guarantees:

* **Where.** The worktree is ``RUN_DIR/worktrees/STEM`` (the run directory under the results directory; STEM is the
  instance's log stem, :func:`orchestrator_pex.results.log_stem`, so no name leaves that folder); its branch
  is :func:`branch_name` — ``orchestrator-pex/RUN_ID/STEM`` (characters git refuses in a ref become ``-``). The
  instance's working directory is the same sub-folder of the worktree as its ``cwd`` is of the repository.
* **Base.** Every ``(repo, base)`` pair is resolved to a commit once, when the batch starts, and journaled
  (``workspace_bases``); a resumed run uses the commits the first session recorded, so every instance of a run
  branches from the same commit even if the repository moved meanwhile.
* **Recorded.** ``workspace_created`` (name, repo, path, branch, base) is journaled after ``git worktree add``
  succeeded and before the instance starts.
* **Afterwards** (whatever the status, once at least an attempt ran): with ``commit = true`` (the default)
  uncommitted changes, untracked files included, are committed on the branch as ``orchestrator-pex: NAME (run
  RUN_ID)`` by ``orchestrator-pex <orchestrator-pex@localhost>`` unless git has a user configured, with hooks and
  signing off. The record's ``workspace`` then says: repo, path, branch, base, head, committed (a commit was made
  now), dirty (uncommitted changes left: ``commit = false``), files/insertions/deletions and paths of
  ``git diff --numstat --no-renames base..head`` (binary files count 0 lines; paths are data from the agent: the
  first :data:`MAX_PATHS` are listed, each cut to 4096 characters), and kept (the directory still exists).
* **Cleanup** (``keep``): ``always`` keeps the directory; ``changed`` (default) removes it when the branch has no
  new commit and nothing is uncommitted; ``never`` removes it unless something is uncommitted. A directory holding
  uncommitted changes is never removed. Branches are kept unless ``delete_branch = true`` asks, and even then only
  a branch without a new commit whose directory was removed is deleted (``branch_deleted``): nothing made is lost.
* **No orphans.** Git is run with an argument vector (never a shell), with ``GIT_DIR``-style variables removed
  from its environment, hooks, fsmonitor, external diff and textconv turned off (the repository's configuration and
  hooks are shared with every agent's worktree, so they are not trusted). Operations on one repository are
  serialized in this process and retried when git reports one of its own lock files held (another git in that
  repository). Before creating and at the end of a run
  ``git worktree prune`` drops registrations whose directory is gone. A directory under ``RUN_DIR/worktrees`` that
  the journal never recorded as created (the orchestrator died inside ``git worktree add``) is removed and made
  again; a recorded one is reused as it is (a rerun continues on the same branch, in the same directory).

Problems are :class:`WorkspaceError` with one line of text; the instance then fails with that error (exit 1), or,
when found before anything starts (:func:`preflight`: not a repository, unknown base), the run is refused (exit 2).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from orchestrator_pex import untrusted
from orchestrator_pex.results import log_stem

WORKTREES = "worktrees"
MAX_PATHS = 10_000  #: the record lists at most this many changed paths (``files`` counts them all)
_LOCK_ERRORS = re.compile(r"\.lock'?: File exists|Unable to create '.*\.lock'|could not lock|cannot lock ref|"
                          r"is locked|index\.lock", re.IGNORECASE)
_RETRIES = 20
_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_PREFIX")
_repo_locks: Dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


class WorkspaceError(Exception):
    """A git operation for a workspace failed; the message is one line."""


def _repo_lock(repo: str) -> threading.Lock:
    with _locks_lock:
        return _repo_locks.setdefault(repo, threading.Lock())


def git_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTS}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANG="C", GIT_OPTIONAL_LOCKS="0")
    return env


def git(cwd: str, *args: str, check: bool = True) -> str:
    """Run ``git -C cwd ARGS`` (argv, no shell); stdout as text. Retries while git reports a held lock file."""
    # hooks and fsmonitor off: the repository's configuration is shared with the agents' worktrees
    argv = ["git", "-C", cwd, "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args]
    for attempt in range(_RETRIES):
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=git_env(), timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WorkspaceError(f"git {args[0]}: {getattr(exc, 'strerror', None) or exc}") from None
        err = done.stderr.decode("utf-8", "replace")
        if done.returncode == 0 or not check:
            return done.stdout.decode("utf-8", "replace")
        if _LOCK_ERRORS.search(err) and attempt < _RETRIES - 1:
            time.sleep(min(0.05 * (attempt + 1), 0.5))
            continue
        lines = err.strip().splitlines()
        last = next((x for x in lines if x.startswith(("fatal:", "error:"))), lines[-1] if lines else "")[:300]
        raise WorkspaceError(f"git {' '.join(args[:2])} failed in {cwd}: {last or f'exit status {done.returncode}'}")
    raise AssertionError("unreachable")  # pragma: no cover


def branch_name(run_id: str, name: str) -> str:
    """``orchestrator-pex/RUN_ID/NAME`` with what git refuses in a ref name replaced by ``-`` (callers pass the
    instance's :func:`~orchestrator_pex.results.log_stem` as NAME, so distinct instances get distinct branches)."""

    def part(text: str) -> str:
        text = re.sub(r"[^A-Za-z0-9._-]", "-", text)
        text = re.sub(r"\.{2,}", "-", text)
        text = re.sub(r"^\.", "-", text)
        return re.sub(r"(\.lock|\.)$", "-", text) or "-"

    return f"orchestrator-pex/{part(run_id)}/{part(name)}"


def toplevel(path: str) -> str:
    """The root of the repository (or worktree) holding ``path``."""
    if not os.path.isdir(path):
        raise WorkspaceError(f"{path}: no such directory")
    out = git(path, "rev-parse", "--show-toplevel", check=False).strip()
    if not out:
        raise WorkspaceError(f"{path}: not inside a git repository")
    return os.path.realpath(out)


def resolve(repo: str, ref: str) -> str:
    """The commit ``ref`` names in ``repo``."""
    out = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False).strip()
    if not re.fullmatch(r"[0-9a-f]{40,64}", out):
        raise WorkspaceError(f"{repo}: base {ref!r} does not name a commit")
    return out


def registered(repo: str) -> Dict[str, Optional[str]]:
    """``git worktree list``: realpath of each worktree -> its branch (None when detached)."""
    out: Dict[str, Optional[str]] = {}
    path = None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = os.path.realpath(line[len("worktree "):])
            out[path] = None
        elif line.startswith("branch ") and path is not None:
            out[path] = line[len("branch "):].replace("refs/heads/", "", 1)
    return out


def _branch_exists(repo: str, branch: str) -> bool:
    return bool(git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip())


@attrs.frozen
class Spec:
    """Where an instance's worktree comes from: the repository root, the base ref and the sub-folder to run in."""

    repo: str
    base: str
    subdir: str


def spec_for(inst: Any, cwd: Optional[str], batch_dir: str) -> Spec:
    """The :class:`Spec` of ``inst`` (defaults applied) whose resolved working directory is ``cwd``."""
    where = cwd or os.getcwd()
    if inst.repo:
        repo = toplevel(inst.repo if os.path.isabs(inst.repo) else os.path.join(batch_dir, inst.repo))
    else:
        repo = toplevel(where)
    real = os.path.realpath(where)
    sub = os.path.relpath(real, repo) if real == repo or real.startswith(repo + os.sep) else "."
    return Spec(repo=repo, base=inst.base or "HEAD", subdir=sub)


def preflight(launches: Any, batch_dir: str) -> List[str]:
    """One problem line per worktree instance whose repository or base cannot be used (nothing is created)."""
    return [f"{name}: workspace: {message}" for name, message in preflight_problems(launches, batch_dir)]


def preflight_problems(launches: Any, batch_dir: str) -> List[Tuple[str, str]]:
    """``(instance name, message)`` for each worktree instance whose repository or base cannot be used."""
    problems = []
    for launch in launches:
        if launch.instance.workspace != "worktree":
            continue
        try:
            spec = spec_for(launch.instance, launch.cwd, batch_dir)
            resolve(spec.repo, spec.base)
        except WorkspaceError as exc:
            problems.append((launch.name, str(exc)))
    return problems


@attrs.frozen
class Workspace:
    name: str
    repo: str
    path: str
    branch: str
    base: str  # commit
    cwd: str

    def describe(self, **facts: Any) -> Dict[str, Any]:
        return {"repo": self.repo, "path": self.path, "branch": self.branch, "base": self.base, **facts}


class Manager:
    """The worktrees of one run directory. Methods block: call them from a worker thread."""

    def __init__(self, run_dir: str, run_id: str, batch_dir: str,
                 events: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.batch_dir = batch_dir
        self.root = os.path.join(run_dir, WORKTREES)
        self.bases: Dict[Tuple[str, str], str] = {}  # (repo, ref) -> commit, as first recorded
        self.created: Dict[str, Mapping[str, Any]] = {}  # name -> its last workspace_created event
        for event in events or ():
            if event.get("event") == "workspace_bases" and isinstance(event.get("bases"), list):
                for entry in event["bases"]:
                    if isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                                       for k in ("repo", "ref", "commit")):
                        self.bases.setdefault((entry["repo"], entry["ref"]), entry["commit"])
            elif event.get("event") == "workspace_created" and isinstance(event.get("name"), str):
                self.created[event["name"]] = event
        self.repos: Dict[str, None] = {}

    def resolve_bases(self, launches: Any) -> List[Dict[str, str]]:
        """Resolve each (repo, base) of the worktree instances not recorded yet; return the new ones (to journal, as
        ``{"repo", "ref", "commit"}``)."""
        new: List[Dict[str, str]] = []
        for launch in launches:
            if launch.instance.workspace != "worktree":
                continue
            try:
                spec = spec_for(launch.instance, launch.cwd, self.batch_dir)
                key = (spec.repo, spec.base)
                if key not in self.bases:
                    self.bases[key] = resolve(spec.repo, spec.base)
                    new.append({"repo": spec.repo, "ref": spec.base, "commit": self.bases[key]})
            except WorkspaceError:
                continue  # the instance fails with this error when it would start
        return new

    def create(self, launch: Any) -> Workspace:
        """Make (or, on resume, reuse) the worktree of ``launch``."""
        name = launch.name
        spec = spec_for(launch.instance, launch.cwd, self.batch_dir)
        self.repos[spec.repo] = None
        key = (spec.repo, spec.base)
        base = self.bases.get(key) or resolve(spec.repo, spec.base)
        self.bases.setdefault(key, base)
        # the directory and branch derive from the log stem: an instance name may hold "/", ".." or any script
        path = os.path.join(os.path.realpath(self.root), log_stem(name))
        branch = branch_name(self.run_id, log_stem(name))
        earlier = self.created.get(name)
        if earlier is not None:
            base = str(earlier.get("base") or base)
        os.makedirs(self.root, exist_ok=True)
        with _repo_lock(spec.repo):
            git(spec.repo, "worktree", "prune")
            known = registered(spec.repo)
            if os.path.lexists(path) and (earlier is None or path not in known):
                # created in a session that died before recording it (or no longer a worktree): nothing ran in it
                if path in known:
                    git(spec.repo, "worktree", "remove", "--force", "--force", path, check=False)
                if os.path.lexists(path):
                    shutil.rmtree(path, ignore_errors=True)
                git(spec.repo, "worktree", "prune")
                known = registered(spec.repo)
            if path not in known:
                if _branch_exists(spec.repo, branch):
                    git(spec.repo, "worktree", "add", "--quiet", path, branch)
                else:
                    git(spec.repo, "worktree", "add", "--quiet", "-b", branch, path, base)
        cwd = os.path.normpath(os.path.join(path, spec.subdir))
        if not os.path.isdir(cwd):
            cwd = path
        return Workspace(name=name, repo=spec.repo, path=path, branch=branch, base=base, cwd=cwd)

    def finish(self, ws: Workspace, *, commit: bool, keep: str, delete_branch: bool = False) -> Dict[str, Any]:
        """Commit (if asked), measure the change against the base, apply ``keep`` (and ``delete_branch``); the
        record's ``workspace``."""
        with _repo_lock(ws.repo):
            return self._finish(ws, commit=commit, keep=keep, delete_branch=delete_branch)

    def _finish(self, ws: Workspace, *, commit: bool, keep: str, delete_branch: bool) -> Dict[str, Any]:
        if not os.path.isdir(ws.path):
            return ws.describe(head=None, committed=False, dirty=False, files=0, insertions=0, deletions=0,
                               paths=[], kept=False, error="the worktree directory is gone")
        committed = False
        if commit and _dirty(ws.path):
            git(ws.path, "add", "--all", "--", ".")
            identity: List[str] = []
            if not git(ws.path, "config", "--get", "user.email", check=False).strip():
                identity = ["-c", "user.name=orchestrator-pex", "-c", "user.email=orchestrator-pex@localhost"]
            git(ws.path, *identity, "-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify",
                "--allow-empty-message", "-m", f"orchestrator-pex: {ws.name} (run {self.run_id})")
            committed = True
        head = git(ws.path, "rev-parse", "HEAD").strip()
        files, insertions, deletions, paths = diffstat(ws.path, ws.base, head)
        dirty = _dirty(ws.path)
        remove = not dirty and (keep == "never" or (keep == "changed" and head == ws.base))
        kept = True
        if remove:
            git(ws.repo, "worktree", "remove", "--force", ws.path, check=False)
            git(ws.repo, "worktree", "prune")
            kept = os.path.isdir(ws.path)
        branch_deleted = False
        if delete_branch and not kept and head == ws.base:  # nothing on it to lose
            git(ws.repo, "branch", "--quiet", "-D", "--", ws.branch, check=False)
            branch_deleted = not _branch_exists(ws.repo, ws.branch)
        return ws.describe(head=head, committed=committed, dirty=dirty, files=files, insertions=insertions,
                           deletions=deletions, paths=paths, kept=kept, branch_deleted=branch_deleted)

    def prune(self) -> None:
        """``git worktree prune`` in every repository this run used."""
        for repo in self.repos:
            with _repo_lock(repo):
                git(repo, "worktree", "prune", check=False)


def _dirty(path: str) -> bool:
    return bool(git(path, "status", "--porcelain", "--untracked-files=all").strip())


def diffstat(cwd: str, base: str, head: str) -> Tuple[int, int, int, List[str]]:
    """(files, insertions, deletions, paths) of ``git diff --numstat --no-renames base..head``."""
    out = git(cwd, "diff", "--numstat", "--no-renames", "--no-ext-diff", "--no-textconv", "-z", f"{base}..{head}",
              "--")
    files = insertions = deletions = 0
    paths: List[str] = []
    for entry in out.split("\0"):
        if not entry or entry.count("\t") < 2:
            continue
        added, removed, path = entry.split("\t", 2)
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
        if len(paths) < MAX_PATHS:
            paths.append(untrusted.text(path, 4096) or "")
    return files, insertions, deletions, paths
