"""The role documents itself (`ansible-doc -t role` reads meta/argument_specs.yml, which covers every variable of
defaults/main.yml) and installs a bundle's agent CLI offline (orchestrator_pex_agent_prefix)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy.deploylib import ANSIBLE_DIR, REPO, run_playbook

ROLE = ANSIBLE_DIR / "roles" / "orchestrator_pex"


def test_ansible_doc_documents_every_variable_of_the_role(ansible_bin, tmp_path):
    env = {"PATH": f"{ansible_bin}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "none")}
    proc = subprocess.run([str(ansible_bin / "ansible-doc"), "-t", "role", "--json", "orchestrator_pex"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["orchestrator_pex"]
    entry = doc["entry_points"]
    assert set(entry) == {"main", "run", "rollback"}
    defaults = set(re.findall(r"^(orchestrator_pex_[a-z_]+):", (ROLE / "defaults" / "main.yml").read_text(), re.M))
    run_vars = {v for v in defaults if v.startswith("orchestrator_pex_run_")}
    assert set(entry["main"]["options"]) == defaults - run_vars
    assert run_vars <= set(entry["run"]["options"])
    secrets = entry["main"]["options"]["orchestrator_pex_secrets"]
    assert secrets["no_log"] is True and secrets["type"] == "dict" and "Vault" in secrets["description"]
    text = subprocess.run([str(ansible_bin / "ansible-doc"), "-t", "role", "orchestrator_pex"], capture_output=True,
                          text=True, env=env, timeout=120).stdout
    assert "orchestrator_pex_env_file" in text and "ENTRY POINT: *run*" in text


def _yaml(ansible_bin, path):
    """A YAML file read with the ansible venv's PyYAML (the test venv has none)."""
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    return json.loads(subprocess.run([str(ansible_bin / "python"), "-c", code, str(path)], capture_output=True,
                                     text=True, check=True).stdout)


def test_specs_match_the_defaults_types(ansible_bin):
    specs = _yaml(ansible_bin, ROLE / "meta" / "argument_specs.yml")["argument_specs"]
    defaults = _yaml(ansible_bin, ROLE / "defaults" / "main.yml")
    kinds = {"str": str, "dict": dict, "list": list, "bool": bool}
    for name, option in specs["main"]["options"].items():
        value = defaults[name]
        assert isinstance(value, kinds[option["type"]]), name
        if "default" in option:
            assert option["default"] == value, name


def test_role_installs_the_bundles_agent_packages_offline(ansible_bin, tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is not installed (CI=true: nothing may be skipped)")
        pytest.skip("npm is not installed (Debian package npm)")
    spec = importlib.util.spec_from_file_location("agent_pkgs", REPO / "tests" / "release" / "test_agent_packages.py")
    helpers = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(helpers)
    bundle, allowed = helpers._signed_bundle(tmp_path, npm)
    root = tmp_path / "host"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
            "orchestrator_pex_bundle": str(bundle), "orchestrator_pex_allowed_signers_src": str(allowed),
            "orchestrator_pex_agent_prefix": str(root / "agent"),
            "orchestrator_pex_prefix": str(root / "opt"), "orchestrator_pex_config_dir": str(root / "etc"),
            "orchestrator_pex_results_dir": str(root / "results"), "orchestrator_pex_pex_root": str(root / "pex-root"),
            "orchestrator_pex_cron_dir": str(root / "cron.d")}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"orchestrators": {"hosts": {"orch": host}}}))
    first = run_playbook(ansible_bin, "site.yml", inventory, tmp_path)
    assert first.rc == 0 and first.failed() == 0, first
    hello = subprocess.run([str(root / "agent" / "bin" / "hello-agent")], capture_output=True, text=True)
    assert hello.stdout.strip() == "hello-agent 1.2.3"
    again = run_playbook(ansible_bin, "site.yml", inventory, tmp_path)
    assert again.rc == 0 and again.recap["orch"]["changed"] == 0, again
