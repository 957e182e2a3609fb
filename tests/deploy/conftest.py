"""Fixtures for the deploy tests: real ansible-playbook, a real built PEX, cron's execution environment.

* ``ansible_bin``: the bin directory of the ansible-core venv made by ``scripts/install-ansible`` (idempotent,
  about a second when already installed); skips when it cannot be installed.
* ``built_pex``: the PEX built by ``./scripts/pants package ::`` (``dist/**/orchestrator-pex*.pex``), or the file
  named by ``ORCHESTRATOR_PEX_TEST_PEX``; skips with the reason when there is none.
* :func:`run_playbook`: runs a playbook on the local connection with an explicit interpreter and parses the
  PLAY RECAP into ``{host: {"ok": n, "changed": n, ...}}``.
* :func:`run_like_cron`: executes one /etc/cron.d line the way Debian's cron does.
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

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
# The interpreter Ansible's modules run with on the (local) managed host. Discovery would find pyenv shims.
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def pytest_configure(config):
    config.addinivalue_line("markers", "deploy: slow deploy test (real ansible-playbook, PEX runs); -m 'not deploy' skips")


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    script = REPO / "scripts" / "install-ansible"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"scripts/install-ansible failed (no package index?): {proc.stderr.strip()[-300:]}")
    bindir = Path(proc.stdout.strip().splitlines()[-1])
    if not (bindir / "ansible-playbook").exists():
        pytest.skip(f"scripts/install-ansible printed {bindir}, which has no ansible-playbook")
    return bindir


def find_built_pex() -> Optional[Path]:
    explicit = os.environ.get("ORCHESTRATOR_PEX_TEST_PEX")
    if explicit:
        return Path(explicit).resolve()
    platform = {("Linux", "x86_64"): "linux_x86_64", ("Linux", "aarch64"): "linux_aarch64",
                ("Darwin", "arm64"): "macos_arm64", ("Darwin", "x86_64"): "macos_x86_64"}.get(
        (os.uname().sysname, os.uname().machine), "")
    # This host's PEX from ./scripts/pants package :: (dist/orchestrator-pex-<version>-<platform>.pex).
    for pattern in (f"orchestrator-pex-*-{platform}.pex", "orchestrator-pex*.pex", f"**/orchestrator-pex-*-{platform}.pex"):
        found = sorted(f for f in glob.glob(str(REPO / "dist" / pattern), recursive=True) if os.path.isfile(f))
        if found:
            return Path(found[-1])
    return None


@pytest.fixture(scope="session")
def built_pex(tmp_path_factory) -> Path:
    """A private copy of the built PEX (a rebuild of dist/ during the session cannot swap it underneath)."""
    pex = find_built_pex()
    if pex is None or not pex.is_file():
        pytest.skip("no built PEX: run ./scripts/pants package :: (dist/orchestrator-pex-*-<platform>.pex) "
                    "or set ORCHESTRATOR_PEX_TEST_PEX")
    copy = tmp_path_factory.mktemp("built-pex") / pex.name
    shutil.copyfile(pex, copy)
    copy.chmod(0o755)
    return copy


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
    fields = line.split(None, 6 if not line.startswith("@") else 2)
    n = 1 if line.startswith("@") else 5
    schedule, rest = fields[:n], line.split(None, n)[n]
    user = None
    if has_user:
        user, rest = rest.split(None, 1)
    command, stdin, i, current = [], None, 0, []
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
    jobs = [l for l in crontab_text.splitlines()
            if l.strip() and not l.lstrip().startswith("#") and not re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", l)]
    assert len(jobs) == 1, jobs
    _, _, command, stdin = cron_command(jobs[0])
    env = cron_environment(crontab_text, home=os.environ.get("HOME", "/root"))
    argv: List[str] = ["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in env.items()], "/bin/sh", "-c", command]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=env["HOME"],
                          start_new_session=True)


def which_or_skip(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed")
    return path
