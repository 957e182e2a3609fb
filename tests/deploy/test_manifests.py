"""Kubernetes and Slurm examples: they parse, and their environment gives the same split as ``--shard``.

The Slurm script is executed for real (bash, the #SBATCH lines are comments) once per array task with the variables
Slurm sets, on a batch of the simulated agent; the shards' results merge into one document with every instance once.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from orchestrator_pex import shard
from tests.deploy.deploylib import HOST_PYTHON, REPO

K8S = REPO / "deploy" / "k8s" / "indexed-job.yaml"
SLURM = REPO / "deploy" / "slurm" / "array.sbatch"
NAMES = [f"job-{i:02d}" for i in range(12)]


def small_batch(tmp: Path) -> Path:
    lines = ['claude = "@agent-sim"', "concurrency = 4", "[defaults]", "timeout = 60"]
    for n in NAMES:
        lines += ["[[instances]]", f'name = "{n}"', f'prompt = "{n}"', 'env = { AGENT_SIM_SCENARIO = "ok" }']
    path = tmp / "batches" / "small.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_kubernetes_manifest_parses_and_declares_the_shard_count(ansible_bin):
    # PyYAML comes with ansible-core's venv (scripts/install-ansible).
    code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
    docs = json.loads(subprocess.run([str(ansible_bin / "python"), "-c", code, str(K8S)], check=True,
                                     capture_output=True, text=True).stdout)
    (job,) = docs
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ORCHESTRATOR_PEX_SHARD_COUNT"] == str(spec["completions"])
    assert env["PEX_ROOT"].startswith("/tmp/")
    # The image by digest; writes only to the mounted /tmp (PEX_ROOT) and /results.
    assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+@sha256:[0-9a-f]{64}", container["image"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/tmp", "/results", "/etc/orchestrator-pex/batches"} <= set(mounts)
    assert mounts["/etc/orchestrator-pex/batches"].get("readOnly") is True
    assert pod["securityContext"]["runAsUser"] == 10001
    command = container["command"]
    assert command[2] == "run" and "--shard" not in command  # the shard comes from JOB_COMPLETION_INDEX
    # $(JOB_NAME) is expanded by Kubernetes only for variables the container declares.
    for ref in re.findall(r"\$\((\w+)\)", " ".join(command)):
        assert ref in env, ref


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    text = SLURM.read_text()
    assert re.search(r"^#SBATCH --array=0-\d+$", text, re.M)


def dry_run_names(pex: Path, batch: Path, tmp: Path, args=(), env=None) -> list:
    full = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "PEX_ROOT": str(tmp / "pex-root"), **(env or {})}
    out = subprocess.run([HOST_PYTHON, str(pex), "run", "--dry-run", *args, str(batch)], env=full, check=True,
                         capture_output=True, text=True).stdout
    return re.findall(r"^\[([^\]]+)\]", out, re.M)


@pytest.mark.deploy
def test_kubernetes_and_slurm_variables_split_like_shard(built_pex, tmp_path):
    batch = small_batch(tmp_path)
    for index in range(3):
        expected = shard.select(NAMES, index, 3)
        assert dry_run_names(built_pex, batch, tmp_path, ["--shard", f"{index}/3"]) == expected
        assert dry_run_names(built_pex, batch, tmp_path, env={
            "JOB_COMPLETION_INDEX": str(index), "ORCHESTRATOR_PEX_SHARD_COUNT": "3"}) == expected
        assert dry_run_names(built_pex, batch, tmp_path, env={  # sbatch --array=1-3
            "SLURM_ARRAY_TASK_ID": str(index + 1), "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "3",
            "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_STEP": "1"}) == expected
    # Kubernetes without the count is refused, not silently unsharded.
    proc = subprocess.run([HOST_PYTHON, str(built_pex), "run", "--dry-run", str(batch)],
                          env={"PATH": "/usr/bin:/bin", "PEX_ROOT": str(tmp_path / "pex-root"),
                               "JOB_COMPLETION_INDEX": "0"}, capture_output=True, text=True)
    assert proc.returncode == 2 and "ORCHESTRATOR_PEX_SHARD_COUNT" in proc.stderr


@pytest.mark.deploy
def test_slurm_array_tasks_run_every_instance_once_and_merge(built_pex, tmp_path):
    batch = small_batch(tmp_path)
    results_root = tmp_path / "results"
    for task in range(3):
        env = {
            "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ORCHESTRATOR_PEX": str(built_pex),
            "ORCHESTRATOR_PEX_PYTHON": HOST_PYTHON, "RESULTS_ROOT": str(results_root),
            "SLURM_JOB_ID": str(100 + task), "SLURM_ARRAY_JOB_ID": "99", "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2", "SLURM_ARRAY_TASK_COUNT": "3",
            "SLURM_ARRAY_TASK_STEP": "1", "TMPDIR": str(tmp_path / f"node-{task}"),
            "ORCHESTRATOR_PEX_LOCK_DIR": str(tmp_path / f"node-{task}" / "locks"),
        }
        (tmp_path / f"node-{task}").mkdir()
        proc = subprocess.run(["bash", str(SLURM), str(batch)], env=env, capture_output=True, text=True,
                              timeout=240, start_new_session=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    docs = sorted((results_root / "99").glob("task-*/*/results.json"))
    assert len(docs) == 3
    for path in docs:
        doc = json.loads(path.read_text())
        assert [i["name"] for i in doc["instances"]] == shard.select(NAMES, doc["shard"]["index"], 3)
    merged = subprocess.run([HOST_PYTHON, str(built_pex), "merge", *map(str, docs)], check=True,
                            capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PEX_ROOT": str(tmp_path / "pex-root")}).stdout
    doc = json.loads(merged)
    assert sorted(i["name"] for i in doc["instances"]) == NAMES
    assert doc["status"] == "succeeded" and doc["shard"] == {"count": 3, "indices": [0, 1, 2]}
