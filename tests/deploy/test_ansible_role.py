"""The Ansible role, driven by the real ansible-playbook against localhost (local connection, scratch prefixes).

* install + batches + policy + cron schedule: the first run changes things, the second changes nothing, ``--check``
  changes nothing (not even on a fresh host);
* the installed cron line, executed as cron would (env -i, /bin/sh -c, no terminal, minimal PATH), runs the demo
  batch successfully;
* systemd variant: units written, ``systemd-analyze verify`` accepts them, idempotent;
* three hosts split a 30-instance batch with ``--shard``; every instance runs exactly once; the playbook fetches and
  merges the results into one document.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - CPython 3.9/3.10
    import tomli as tomllib

from orchestrator_pex import shard
from tests.deploy.deploylib import HOST_PYTHON, run_like_cron, run_playbook
from tests.deploy.deploylib import REPO as REPO_ROOT
from tests.support.components import missing

pytestmark = pytest.mark.deploy

POLICY = {"allowed_permission_modes": ["default", "acceptEdits", "plan"], "forbidden_tools": ["WebFetch"],
          "require_timeout": True, "max_concurrency": 8}


def demo_batch(pex: Path, tmp: Path) -> str:
    """The product's own demo batch (simulated agent, no Claude account), as `init --demo` writes it, kept literal for
    Ansible with :func:`literal`: its dependency placeholders (``{{plan.session_id}}``) are Jinja's braces too.
    Its Codex and Gemini instances are left out: POLICY forbids WebFetch, which those CLIs cannot be told to withhold
    (the policy refuses them, as documented)."""
    path = tmp / "demo-init.toml"
    env = dict(os.environ, PEX_ROOT=str(tmp / "pex-root-init"))
    subprocess.run([HOST_PYTHON, str(pex), "init", "--demo", str(path)], check=True, capture_output=True, env=env)
    batch = tomllib.loads(path.read_text())
    batch["instances"] = [i for i in batch["instances"] if i.get("agent", "claude") == "claude"]
    return tomli_w.dumps(batch)


def literal(text: str) -> str:
    """``text`` as a role variable Ansible will not template (the demo's placeholders are Jinja's braces too)."""
    return "{% raw %}" + text + "{% endraw %}"


def host_vars(root: Path, pex: Path, **extra) -> dict:
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": HOST_PYTHON,
        "orchestrator_pex_pex_src": str(pex),
        "orchestrator_pex_version": "test-1",
        "orchestrator_pex_prefix": str(root / "opt"),
        "orchestrator_pex_config_dir": str(root / "etc"),
        "orchestrator_pex_results_dir": str(root / "results"),
        "orchestrator_pex_pex_root": str(root / "pex-root"),
        "orchestrator_pex_cron_dir": str(root / "cron.d"),
        "orchestrator_pex_systemd_dir": str(root / "systemd"),
        "orchestrator_pex_systemd_manage": False,
        **extra,
    }


def write_inventory(tmp: Path, hosts: dict, **group_vars) -> Path:
    inv = tmp / "inventory.yml"
    inv.write_text(json.dumps({"orchestrators": {"hosts": hosts, "vars": group_vars}}, indent=1))
    return inv


def files_under(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if "pex-root" in p.parts:
            continue
        if p.is_symlink():
            out[str(p.relative_to(root))] = os.readlink(p)
        else:
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else "dir"
    return out


def test_cron_install_is_idempotent_check_mode_is_inert_and_the_cron_line_runs(ansible_bin, built_pex, tmp_path):
    root = tmp_path / "host-a"
    batch = demo_batch(built_pex, tmp_path)
    inv = write_inventory(tmp_path, {"orch-a": host_vars(
        root, built_pex,
        orchestrator_pex_policy=POLICY,
        orchestrator_pex_batches=[{"name": "demo", "content": literal(batch)}],
        orchestrator_pex_schedules=[{"batch": "demo", "at": "30 1 * * *"}],
    )})

    fresh = run_playbook(ansible_bin, "site.yml", inv, tmp_path, "--check")
    assert fresh.rc == 0 and fresh.failed() == 0, fresh
    assert not root.exists(), f"--check created files: {sorted(files_under(root))}"

    first = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert first.rc == 0 and first.failed() == 0, first
    assert first.changed() > 0, first
    state = files_under(root)

    second = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert second.rc == 0 and second.recap["orch-a"]["changed"] == 0, second
    check = run_playbook(ansible_bin, "site.yml", inv, tmp_path, "--check")
    assert check.rc == 0 and check.recap["orch-a"]["changed"] == 0, check
    assert files_under(root) == state

    assert os.readlink(root / "opt" / "current") == "test-1"
    assert (root / "opt" / "test-1" / "orchestrator-pex").read_bytes() == built_pex.read_bytes()
    policy = (root / "etc" / "policy.toml").read_text()
    assert 'forbidden_tools = ["WebFetch"]' in policy and "require_timeout = true" in policy
    assert (root / "etc" / "batches" / "demo.toml").read_text().endswith(batch)

    cron_file = root / "cron.d" / "orchestrator-pex-demo"
    text = cron_file.read_text()
    assert oct(cron_file.stat().st_mode & 0o777) == "0o644"
    job = [ln for ln in text.splitlines() if ln.startswith("30 1 * * * root ")]
    assert len(job) == 1, text

    # The role writes exactly the line `orchestrator-pex schedule cron --user` prints (plus the policy variable).
    printed = subprocess.run(
        [HOST_PYTHON, str(built_pex), "schedule", "cron", "--user", "root", "--at", "30 1 * * *",
         "--pex", str(root / "opt" / "current" / "orchestrator-pex"), "--results-dir", str(root / "results"),
         "--pex-root", str(root / "pex-root"), str(root / "etc" / "batches" / "demo.toml")],
        capture_output=True, text=True, env=dict(os.environ, PEX_ROOT=str(tmp_path / "pex-root-init")), check=True,
    ).stdout.strip()
    policy_word = f"ORCHESTRATOR_PEX_POLICY={root / 'etc' / 'policy.toml'}"
    assert job[0] == printed.replace("NO_COLOR=1 ", f"NO_COLOR=1 {policy_word} ")

    proc = run_like_cron(text)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (root / "results").iterdir() if (p / "results.json").exists()]
    assert len(runs) == 1
    doc = json.loads((runs[0] / "results.json").read_text())
    assert doc["status"] == "succeeded"
    assert doc["batch"] == str(root / "etc" / "batches" / "demo.toml")
    assert doc["totals"]["instances"] >= 1 and doc["totals"]["by_status"]["succeeded"] == doc["totals"]["instances"]
    assert (root / "pex-root").is_dir() and any((root / "pex-root").iterdir()), "PEX_ROOT was not used"

    # A bad batch never replaces a good one: `orchestrator-pex validate` (with the policy) fails the play.
    # Both items fail in one play: a malformed batch and a batch that violates the site policy (validate applies
    # it). Neither replaces nor creates a batch file.
    broken = [{"name": "demo", "content": literal(batch.replace("[[instances]]", "[[instance]]"))},
              {"name": "strict", "content": literal(batch.replace('"acceptEdits"', '"bypassPermissions"'))}]
    bad = write_inventory(tmp_path, {"orch-a": host_vars(
        root, built_pex, orchestrator_pex_policy=POLICY, orchestrator_pex_batches=broken,
        orchestrator_pex_schedules=[{"batch": "demo", "at": "30 1 * * *"}],
    )})
    refused = run_playbook(ansible_bin, "site.yml", bad, tmp_path)
    assert refused.rc != 0 and refused.failed() == 1, refused
    assert refused.stdout.count("failed: [orch-a] (item=") == len(broken), refused
    assert (root / "etc" / "batches" / "demo.toml").read_text().endswith(batch)
    assert not (root / "etc" / "batches" / "strict.toml").exists()

    # state: absent removes the schedule.
    gone = write_inventory(tmp_path, {"orch-a": host_vars(
        root, built_pex, orchestrator_pex_batches=[{"name": "demo", "content": literal(batch)}],
        orchestrator_pex_schedules=[{"batch": "demo", "at": "30 1 * * *", "state": "absent"}],
    )})
    removed = run_playbook(ansible_bin, "site.yml", gone, tmp_path)
    assert removed.rc == 0, removed
    assert not cron_file.exists()


def test_systemd_units_verify_are_idempotent_and_run_now_reports_exit_statuses(ansible_bin, built_pex, tmp_path):
    root = tmp_path / "host-s"
    inv = write_inventory(tmp_path, {"orch-s": host_vars(
        root, built_pex,
        orchestrator_pex_scheduler="systemd",
        orchestrator_pex_batches=[{"name": "demo", "content": literal(demo_batch(built_pex, tmp_path))}],
        orchestrator_pex_schedules=[{"batch": "demo", "on_calendar": "Mon..Fri 06:30", "shard": "0/1"}],
    )})
    first = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert first.rc == 0 and first.changed() > 0, first
    second = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert second.rc == 0 and second.changed() == 0, second
    service = root / "systemd" / "orchestrator-pex-demo.service"
    timer = root / "systemd" / "orchestrator-pex-demo.timer"
    text = service.read_text()
    assert f'ExecStart="{HOST_PYTHON}" "{root}/opt/current/orchestrator-pex" "run"' in text
    assert '"--shard" "0/1"' in text
    assert f'Environment="PEX_ROOT={root}/pex-root"' in text
    assert "OnCalendar=Mon..Fri 06:30" in timer.read_text()

    # run-now.yml (tasks_from: run): exit 0 -> ok + changed, the results document registered.
    now = run_playbook(ansible_bin, "run-now.yml", inv, tmp_path, "-e", "batch=demo")
    assert now.rc == 0 and now.recap["orch-s"]["changed"] == 1 and now.failed() == 0, now
    assert "succeeded" in now.stdout.split("TASK [Report]")[1]
    # Exit 1 (an instance failed) fails the task by default, and is accepted when listed.
    failing = tmp_path / "failing.toml"
    failing.write_text('[[instances]]\nname = "broken"\nargv = ["/bin/false"]\ntimeout = 30\n')
    failed = run_playbook(ansible_bin, "run-now.yml", inv, tmp_path, "-e", f"batch={failing}")
    assert failed.rc != 0 and failed.failed() == 1, failed
    assert '"rc": 1' in failed.stdout
    accepted = run_playbook(ansible_bin, "run-now.yml", inv, tmp_path, "-e", f"batch={failing}",
                            "-e", '{"orchestrator_pex_run_accept_rcs": [0, 1]}')
    assert accepted.rc == 0 and accepted.recap["orch-s"]["changed"] == 1, accepted
    assert "failed, 1 instances" in accepted.stdout.split("TASK [Report]")[1]

    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze not installed: unit files written but not verified")
    proc = subprocess.run([tool, "verify", str(service), str(timer)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def sharded_batch(n: int) -> str:
    lines = ['claude = "@agent-sim"', "concurrency = 6", "", "[defaults]", 'model = "claude-sonnet-4-5"',
             "timeout = 120", ""]
    for i in range(n):
        lines += ["[[instances]]", f'name = "task-{i:02d}"', f'prompt = "task {i}"',
                  'env = { AGENT_SIM_SCENARIO = "ok" }', ""]
    return "\n".join(lines)


def test_three_hosts_split_a_batch_and_merge_the_results(ansible_bin, built_pex, tmp_path):
    names = [f"task-{i:02d}" for i in range(30)]
    # Like real hosts: the same batch path everywhere, each host its own lock directory (its own /tmp).
    hosts = {
        f"shard-{c}": host_vars(tmp_path / f"host-{c}", built_pex,
                                orchestrator_pex_batch_dir=str(tmp_path / "shared" / "batches"),
                                orchestrator_pex_extra_env={"ORCHESTRATOR_PEX_LOCK_DIR": str(tmp_path / f"lock-{c}")})
        for c in "abc"
    }
    collect = tmp_path / "collected"
    inv = write_inventory(
        tmp_path, hosts,
        orchestrator_pex_batches=[{"name": "wide", "content": sharded_batch(30)}],
        orchestrator_pex_controller_pex=str(built_pex),
        orchestrator_pex_controller_python=HOST_PYTHON,
    )
    installed = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert installed.rc == 0 and installed.failed() == 0, installed

    run = run_playbook(ansible_bin, "sharded-run.yml", inv, tmp_path, "-e", "batch=wide", "-e",
                       f"collect_dir={collect}", timeout=400)
    assert run.rc == 0 and run.failed() == 0, run
    merged = json.loads((collect / "merged.json").read_text())
    ran = [i["name"] for i in merged["instances"]]
    assert sorted(ran) == names and len(ran) == len(set(ran))
    assert merged["status"] == "succeeded"
    assert merged["shard"] == {"count": 3, "indices": [0, 1, 2]}
    assert merged["totals"]["instances"] == 30
    batch_bytes = (tmp_path / "shared" / "batches" / "wide.toml").read_bytes()
    assert merged["batch_sha256"] == hashlib.sha256(batch_bytes).hexdigest()
    # Host i ran exactly shard i/3, and each instance ran once on that host only.
    for index, c in enumerate("abc"):
        doc = json.loads((collect / f"shard-{c}.json").read_text())
        assert doc["shard"]["index"] == index and doc["shard"]["count"] == 3
        assert [i["name"] for i in doc["instances"]] == shard.select(names, index, 3)
        assert all(i["attempts"] == 1 and i["status"] == "succeeded" for i in doc["instances"])
        run_dirs = [p for p in (tmp_path / f"host-{c}" / "results").iterdir() if p.is_dir()]
        assert len(run_dirs) == 1


def make_bundle(pex: Path, tmp: Path, name: str = "bundle", version: str = "") -> tuple:
    """A release bundle like scripts/release makes, signed with a throwaway key: (bundle dir, allowed_signers)."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        missing("ssh-keygen not installed: cannot sign a test bundle")
    key = tmp / "release-key"
    if not key.exists():
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "release@test", "-f", str(key)], check=True)
    signers = tmp / "allowed_signers"
    signers.write_text(f'release@test namespaces="orchestrator-pex" {(tmp / "release-key.pub").read_text()}')
    env = dict(os.environ, PEX_ROOT=str(tmp / "pex-root-init"))
    # install.sh requires the bundle's version (from the file name) to appear in the PEX's --version output.
    version = version or subprocess.run([HOST_PYTHON, str(pex), "--version"], capture_output=True, text=True,
                                        env=env, check=True).stdout.split()[-1]
    platform = {"x86_64": "linux_x86_64", "aarch64": "linux_aarch64"}[os.uname().machine]
    bundle = tmp / name / version
    bundle.mkdir(parents=True)
    pex_name = f"orchestrator-pex-{version}-{platform}.pex"
    shutil.copyfile(pex, bundle / pex_name)
    shutil.copyfile(REPO_ROOT / "deploy" / "install.sh", bundle / "install.sh")
    sums = "".join(f"{hashlib.sha256((bundle / f).read_bytes()).hexdigest()}  {f}\n" for f in (pex_name, "install.sh"))
    (bundle / "SHA256SUMS").write_text(sums)
    subprocess.run([keygen, "-Y", "sign", "-f", str(key), "-n", "orchestrator-pex", str(bundle / "SHA256SUMS")],
                   check=True, capture_output=True)
    return bundle, signers, version, pex_name


def test_signed_bundle_is_installed_with_its_install_sh(ansible_bin, built_pex, tmp_path):
    assert (REPO_ROOT / "deploy" / "install.sh").exists()
    bundle, signers, version, pex_name = make_bundle(built_pex, tmp_path)
    root = tmp_path / "host-b"
    hv = host_vars(root, built_pex, orchestrator_pex_pex_src="", orchestrator_pex_bundle=str(bundle),
                   orchestrator_pex_allowed_signers_src=str(signers))
    inv = write_inventory(tmp_path, {"orch-b": hv})
    first = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert first.rc == 0 and first.changed() > 0, first
    assert "changed: [orch-b]" in first.stdout.split("Verify and install the release bundle")[1].split("TASK")[0]
    assert os.readlink(root / "opt" / "current") == version
    assert (root / "opt" / version / pex_name).read_bytes() == built_pex.read_bytes()
    again = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert again.rc == 0 and again.changed() == 0, again
    check = run_playbook(ansible_bin, "site.yml", inv, tmp_path, "--check")
    assert check.rc == 0 and check.changed() == 0, check

    # A tampered bundle (the PEX changed after signing) is refused and the installed release stays current.
    tampered, _, _, _ = make_bundle(built_pex, tmp_path, "tampered")
    with open(tampered / pex_name, "ab") as fh:
        fh.write(b"\0")
    inv = write_inventory(tmp_path, {"orch-b": dict(hv, orchestrator_pex_bundle=str(tampered))})
    refused = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert refused.rc != 0 and refused.failed() == 1, refused
    assert "REFUSED" in refused.stdout
    assert os.readlink(root / "opt" / "current") == version

    # Switch to another release, then roll back with rollback.yml (install.sh --rollback). The same PEX serves as
    # the other release under a version string its --version output still contains (install.sh checks that).
    older = version.rsplit(".", 1)[0] if "." in version else version[:-1]
    older_bundle = make_bundle(built_pex, tmp_path, "older", version=older)[0]
    inv = write_inventory(tmp_path, {"orch-b": dict(hv, orchestrator_pex_bundle=str(older_bundle))})
    switched = run_playbook(ansible_bin, "site.yml", inv, tmp_path)
    assert switched.rc == 0 and switched.changed() > 0, switched
    assert os.readlink(root / "opt" / "current") == older
    assert os.readlink(root / "opt" / "previous") == version
    back = run_playbook(ansible_bin, "rollback.yml", inv, tmp_path)
    assert back.rc == 0 and back.changed() == 1, back
    assert os.readlink(root / "opt" / "current") == version
    assert os.readlink(root / "opt" / "previous") == older
