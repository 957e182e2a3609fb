"""The Ansible role's ``orchestrator_pex_textfile_dir``: scheduled runs write metrics into node_exporter's directory.

The role's cron template is rendered by the real ansible-playbook (local connection, no PEX needed) and must equal,
word for word, what ``orchestrator-pex schedule cron --metrics-file`` prints for the same schedule.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.deploylib import REPO, run_playbook

ROLE = REPO / "deploy" / "ansible" / "roles" / "orchestrator_pex"


def test_textfile_dir_adds_the_metrics_file_to_scheduled_runs(ansible_bin, tmp_path):
    textfile = "/var/lib/prometheus/node-exporter"
    out = tmp_path / "cron-out"
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "render", "ansible.builtin.template": {"src": str(ROLE / "templates" / "cron.j2"),
                                                                  "dest": str(out), "mode": "0644"},
                   "loop": [{"batch": "nightly", "at": "0 2 * * *"}]}],
    }]
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps(play))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local\n")
    # as an extra var: the role's defaults file is loaded here as vars_files, which outranks play vars
    # the batch must exist and load: `schedule` refuses one that does not
    batch_dir = tmp_path / "etc" / "batches"
    batch_dir.mkdir(parents=True)
    (batch_dir / "nightly.toml").write_text('[[instances]]\nname = "a"\nargv = ["/bin/true"]\n')
    run = run_playbook(ansible_bin, str(playbook), inventory, tmp_path, "-e",
                       json.dumps({"orchestrator_pex_textfile_dir": textfile,
                                   "orchestrator_pex_batch_dir": str(batch_dir)}))
    assert run.rc == 0, run
    (job,) = [line for line in out.read_text().splitlines() if line.startswith("0 2 * * * root ")]
    printed = subprocess.run(
        [sys.executable, "-m", "orchestrator_pex", "schedule", "cron", "--user", "root", "--at", "0 2 * * *",
         "--pex", "/opt/orchestrator-pex/current/orchestrator-pex",
         "--results-dir", "/var/lib/orchestrator-pex/results",
         "--metrics-file", f"{textfile}/orchestrator-pex-nightly.prom", str(batch_dir / "nightly.toml")],
        capture_output=True, text=True, check=True, cwd=str(REPO),
    ).stdout.strip()
    assert job == printed
    assert f"--metrics-file {textfile}/orchestrator-pex-nightly.prom " in job
