"""Helpers for the deploy tests (tests/deploy): find or build the PEX, run ansible-playbook, run a cron line.

* :func:`find_built_pex` / :func:`ensure_built_pex`: this platform's PEX from ``./scripts/pants package ::``
  (``dist/orchestrator-pex-<version>-<platform>.pex``), built when missing or older than its sources, or the file
  named by ``ORCHESTRATOR_PEX_TEST_PEX``.
* :func:`run_playbook`: runs a playbook on the local connection with an explicit interpreter and parses the
  PLAY RECAP into ``{host: {"ok": n, "changed": n, ...}}``.
* :func:`run_like_cron`: executes one /etc/cron.d line the way Debian's cron does.

A module of its own name (not conftest): several conftest.py files exist under tests/.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
# The interpreter Ansible's modules run with on the (local) managed host. Discovery would find pyenv shims.
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
#: what the PEX is built from (a dist/ PEX older than any of these is rebuilt)
BUILD_INPUTS = ["orchestrator_pex/**/*", "pyproject.toml", "pants.toml", "BUILD", "lockfiles/*.lock",
                "build-support/complete_platforms/*", "scripts/pants", "scripts/build-pex-tool"]


def host_platform() -> str:
    return {("Linux", "x86_64"): "linux_x86_64", ("Linux", "aarch64"): "linux_aarch64",
            ("Darwin", "arm64"): "macos_arm64", ("Darwin", "x86_64"): "macos_x86_64"}.get(
        (os.uname().sysname, os.uname().machine), "")


def find_built_pex() -> Optional[Path]:
    explicit = os.environ.get("ORCHESTRATOR_PEX_TEST_PEX")
    if explicit:
        return Path(explicit).resolve()
    found = sorted(f for f in glob.glob(str(REPO / "dist" / f"orchestrator-pex-*-{host_platform()}.pex"))
                   if os.path.isfile(f))
    return Path(found[-1]) if found else None


def _stale(pex: Path) -> bool:
    built = pex.stat().st_mtime
    for pattern in BUILD_INPUTS:
        for f in glob.glob(str(REPO / pattern), recursive=True):
            if "__pycache__" not in f and os.path.isfile(f) and os.stat(f).st_mtime > built:
                return True
    return False


def _python39() -> Optional[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.9.*", "bin", "python3.9")))[::-1]
    for c in [os.environ.get("PANTS_PYTHON", ""), *found, shutil.which("python3.9") or ""]:
        if c and os.access(c, os.X_OK):
            return c
    return None


def ensure_built_pex() -> tuple[Optional[Path], str]:
    """(PEX, "") or (None, why not). Builds with scripts/pants when dist/ has none or it is stale."""
    pex = find_built_pex()
    if os.environ.get("ORCHESTRATOR_PEX_TEST_PEX"):
        return (pex, "") if pex and pex.is_file() else (None, f"ORCHESTRATOR_PEX_TEST_PEX={pex} is not a file")
    if pex is not None and not _stale(pex):
        return pex, ""
    py39 = _python39()
    if py39 is None:
        return (pex, "") if pex else (None, "no built PEX and no CPython 3.9 to build one with scripts/pants "
                                            "(./scripts/pants package ::)")
    proc = subprocess.run([str(REPO / "scripts" / "pants"), "package", "::"], cwd=REPO,
                          env=dict(os.environ, PANTS_PYTHON=py39), capture_output=True, text=True, timeout=1500)
    pex = find_built_pex()
    if proc.returncode != 0 or pex is None:
        return None, f"./scripts/pants package :: failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return pex, ""


def parse_recap(output: str) -> Dict[str, Dict[str, int]]:
    recap: Dict[str, Dict[str, int]] = {}
    part = output.split("PLAY RECAP", 1)
    if len(part) < 2:
        return recap
    for line in part[1].splitlines():
        m = re.match(r"^(\S+)\s*:\s*(.*)$", line.strip())
        if m and "=" in m.group(2):
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return recap


class PlaybookRun:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.recap = parse_recap(proc.stdout)

    def changed(self) -> int:
        return sum(h.get("changed", 0) for h in self.recap.values())

    def failed(self) -> int:
        return sum(h.get("failed", 0) + h.get("unreachable", 0) for h in self.recap.values())

    def __repr__(self) -> str:  # shown by pytest on a failed assert
        return f"<PlaybookRun rc={self.rc} recap={self.recap}>\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"


def run_playbook(ansible_bin: Path, playbook: str, inventory: Path, tmp: Path, *extra: str,
                 timeout: float = 300) -> PlaybookRun:
    env = {
        "PATH": f"{ansible_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_PYTHON_INTERPRETER": HOST_PYTHON,
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_COLLECTIONS_PATH": str(tmp / "no-collections"),
    }
    argv = [str(ansible_bin / "ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / playbook), *extra]
    proc = subprocess.run(argv, cwd=str(tmp), env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return PlaybookRun(proc)


def cron_command(line: str, has_user: bool = True) -> tuple:
    """Split a cron.d line like Debian's cron: (schedule, user, command for /bin/sh, stdin text).

    The command is what follows the schedule (five fields or an @nickname) and the user field; an unescaped ``%``
    ends it (the rest is fed to stdin, each further ``%`` a newline) and ``\\%`` stands for ``%``.
    """
    n = 1 if line.startswith("@") else 5
    words = line.split(None, n)
    schedule, rest = words[:n], words[n]
    user = None
    if has_user:
        user, rest = rest.split(None, 1)
    stdin, i, current = None, 0, []
    out = current
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest) and rest[i + 1] == "%":
            out.append("%")
            i += 2
            continue
        if ch == "%":
            if stdin is None:
                stdin = []
                out = stdin
            else:
                out.append("\n")
            i += 1
            continue
        out.append(ch)
        i += 1
    return " ".join(schedule), user, "".join(current), "".join(stdin) if stdin is not None else ""


def cron_environment(crontab_text: str, home: str) -> Dict[str, str]:
    """cron's environment for a job: LOGNAME/HOME/SHELL/PATH defaults, overridden by NAME=value lines."""
    env = {"HOME": home, "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    for line in crontab_text.splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if m and not line.lstrip().startswith("#"):
            env[m.group(1)] = m.group(2).strip().strip('"').strip("'")
    return env


def run_like_cron(crontab_text: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the (single) job line of a cron.d file as cron would: ``/bin/sh -c`` under a minimal environment
    (``env -i`` plus cron's variables), no controlling terminal (new session), stdin from the ``%`` text."""
    jobs = [ln for ln in crontab_text.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#") and not re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", ln)]
    assert len(jobs) == 1, jobs
    _, _, command, stdin = cron_command(jobs[0])
    env = cron_environment(crontab_text, home=os.environ.get("HOME", "/root"))
    argv: List[str] = ["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], "/bin/sh", "-c", command]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=env["HOME"],
                          start_new_session=True)


# -- a real cron daemon ------------------------------------------------------------------------------------------

class CronDaemon:
    """Debian's ``cron -f`` reading only ``cron_dir`` as its ``/etc/cron.d``, started and stopped by PID.

    It runs in a private mount namespace (``unshare --mount``): ``cron_dir`` is bind-mounted over ``/etc/cron.d``,
    an empty file over ``/etc/crontab``, an empty directory over ``/var/spool/cron/crontabs`` and a tmpfs over
    ``/run`` (its pid file), so it sees no system schedule, leaves no system crontab entry behind and cannot clash
    with another cron daemon. Its jobs run in that namespace too. Needs root (mount namespaces).
    """

    def __init__(self, cron_dir: Path, scratch: Path) -> None:
        self.cron_dir, self.scratch = cron_dir, scratch
        self.proc: Optional[subprocess.Popen] = None

    @staticmethod
    def unavailable() -> Optional[str]:
        """Why a daemon cannot be started here (None if it can)."""
        for tool in ("cron", "unshare", "mount"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                return f"{tool} is not installed (Debian package cron / util-linux)"
        if os.geteuid() != 0:
            return "a private cron daemon needs root (mount namespace, /etc/cron.d owned by root)"
        return None

    def start(self) -> CronDaemon:
        crontab = self.scratch / "empty-crontab"
        crontab.write_text("")
        spool = self.scratch / "empty-spool"
        spool.mkdir(exist_ok=True)
        cron = shutil.which("cron") or "/usr/sbin/cron"
        script = ('mount --bind "$1" /etc/cron.d && mount --bind "$2" /etc/crontab && '
                  '{ [ ! -d /var/spool/cron/crontabs ] || mount --bind "$3" /var/spool/cron/crontabs; } && '
                  'mount -t tmpfs tmpfs /run && exec "$4" -f -L 15')
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", str(self.cron_dir),
             str(crontab), str(spool), cron],
            stdin=subprocess.DEVNULL, stdout=open(self.scratch / "cron.out", "wb"), stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the daemon by its PID (``unshare`` and ``sh`` exec into it), SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> CronDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fake_pex(tmp: Path) -> Path:
    """A zipapp standing in for the PEX (``python FILE ARGS`` runs orchestrator-pex from this checkout), for tests
    that need the scheduled command line but not the build. Run it with an interpreter that has the runtime
    dependencies (the test venv's)."""
    src = tmp / "fake-pex-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "__main__.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom orchestrator_pex.cli import main\nsys.exit(main())\n")
    out = tmp / "orchestrator-pex.pyz"
    import zipapp

    zipapp.create_archive(str(src), str(out))
    out.chmod(0o755)
    return out

