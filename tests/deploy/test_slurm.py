"""deploy/slurm on a real single-node Slurm cluster: a 30-instance batch as a 3-task job array plus a dependent merge
job, and a task cancelled with ``scancel`` finished by a rerun of that task (``resume`` of its shard).

The test starts its own cluster (Debian's slurm-wlm and munge): a munge key and ``munged`` running as the ``munge``
user, a one-node ``slurm.conf`` with state, spool, logs and pid files under a temporary folder and ports chosen free
on 127.0.0.1, then ``slurmctld -D`` and ``slurmd -D``. Every daemon it starts is stopped by its PID at the end. It
skips, with the reason, only where the cluster cannot start here (not root, Slurm or munge not installed, no
``munge`` user); under ``CI=true`` those fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.deploy.deploylib import HOST_PYTHON, REPO

ARRAY = REPO / "deploy" / "slurm" / "array.sbatch"
MERGE = REPO / "deploy" / "slurm" / "merge.sbatch"
NAMES = [f"task-{i:02d}" for i in range(30)]
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")


def cannot_start(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Slurm test cannot run under CI=true: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 120.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Cluster:
    def __init__(self, root: Path, env: Dict[str, str]):
        self.root, self.env = root, env

    def cmd(self, *argv: str, check: bool = True) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60, cwd=self.root)
        if check:
            assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        return proc.stdout

    def sbatch(self, *args: str, extra_env: Dict[str, str] = None) -> str:
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(["sbatch", "--parsable", f"--chdir={self.root}", *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job_states(self, job: str) -> Dict[str, tuple]:
        """``job id (array tasks as JOB_TASK) -> (state, exit code)`` from scontrol."""
        out = self.cmd("scontrol", "-o", "show", "job", job, check=False)
        states = {}
        for line in out.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            key = fields["JobId"]
            if fields.get("ArrayTaskId"):
                key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            states[key] = (fields["JobState"], fields.get("ExitCode", ""))
        return states

    def logs(self) -> str:
        """The job logs (sbatch --output files) and the daemons' log tails, for failure messages."""
        parts = []
        for f in sorted(self.root.glob("orchestrator-pex*.log")) + [self.root / "slurmd.log"]:
            if f.exists():
                parts.append(f"== {f.name}\n{f.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def wait_done(self, job: str, timeout: float = 400.0) -> Dict[str, tuple]:
        def done():
            states = self.job_states(job)
            active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}
            return states if states and not any(s in active for s, _ in states.values()) else None

        return wait_for(done, f"Slurm job {job}", timeout=timeout, interval=1.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, built_pex):
    if os.geteuid() != 0:
        cannot_start("starting slurmctld/slurmd with SlurmUser=root needs root")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        cannot_start(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        cannot_start("no munge user (Debian's munge package creates it)")
    root = Path(tmp_path_factory.mktemp("slurm"))
    root.chmod(0o755)
    for parent in root.parents:  # munged (as the munge user) must reach its socket; pytest's folders are 0700
        if str(parent).startswith("/tmp/pytest-of-") and parent.stat().st_mode & 0o777 == 0o700:
            parent.chmod(0o711)
    key_dir, sock_dir = root / "munge-key", root / "munge-run"
    key_dir.mkdir(mode=0o700)
    sock_dir.mkdir(mode=0o755)
    subprocess.run(["mungekey", "-c", "-k", str(key_dir / "munge.key")], check=True)
    shutil.chown(key_dir, "munge", "munge")
    shutil.chown(key_dir / "munge.key", "munge", "munge")
    shutil.chown(sock_dir, "munge", "munge")
    socket_path = sock_dir / "munge.socket"
    procs: List[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={socket_path}",
             f"--key-file={key_dir / 'munge.key'}", f"--pid-file={sock_dir / 'munged.pid'}",
             f"--log-file={sock_dir / 'munged.log'}", f"--seed-file={sock_dir / 'munged.seed'}"],
            user="munge", group="munge", extra_groups=[], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        wait_for(lambda: socket_path.exists(), "munged's socket", timeout=30)
        host = socket.gethostname()
        mem_mb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
        for d in ("state", "spool"):
            (root / d).mkdir()
        conf = root / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=opxtest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}", f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill", "MpiDefault=none",
            "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none", "ReturnToService=2",
            "KillWait=10", "MinJobAge=3600", "MailProg=/bin/true", "SlurmdParameters=config_overrides",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
        ]))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "SLURM_CONF": str(conf), "HOME": str(root),
               "LANG": "C.UTF-8"}
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        c = Cluster(root, env)

        def node_idle():
            for p in procs:
                if p.poll() is not None:
                    logs = [f.read_text()[-2000:] for f in (root / "slurmctld.log", root / "slurmd.log") if f.exists()]
                    raise AssertionError(f"a Slurm daemon exited ({p.args[0]}): {logs}")
            return "idle" in c.cmd("sinfo", "-h", "-o", "%T", check=False)

        wait_for(node_idle, "the Slurm node to be idle", timeout=90)
        yield c
    finally:
        if procs:
            subprocess.run(["scancel", "--full", "--user=root"], env={"SLURM_CONF": str(root / "slurm.conf"),
                           "PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30)
        for p in reversed(procs):  # slurmd, slurmctld, munged: each by its own PID
            stop(p)


def write_batch(folder: Path, scenario: str, extra_env: str = "") -> Path:
    lines = ['claude = "@agent-sim"', "concurrency = 2", "[defaults]", "timeout = 120"]
    for n in NAMES:
        lines += ["[[instances]]", f'name = "{n}"', f'prompt = "{n}"',
                  f'env = {{ AGENT_SIM_SCENARIO = "{scenario}"{extra_env} }}']
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "batch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def job_env(built_pex: Path, tmp: Path, results_dir: Path = None) -> Dict[str, str]:
    env = {"ORCHESTRATOR_PEX": str(built_pex), "ORCHESTRATOR_PEX_PYTHON": HOST_PYTHON,
           "RESULTS_ROOT": str(tmp / "results"), "TMPDIR": str(tmp), "ORCHESTRATOR_PEX_LOCK_DIR": str(tmp / "locks")}
    if results_dir is not None:
        env["RESULTS_DIR"] = str(results_dir)
    return env


# Every job gets one CPU and a little memory (the script's own #SBATCH lines ask for a bigger node).
SMALL = ["--cpus-per-task=1", "--mem=300M", "--time=00:20:00"]


def merged_names(doc: dict) -> List[str]:
    return sorted(i["name"] for i in doc["instances"])


@pytest.mark.deploy
def test_array_of_three_and_merge_job_cover_every_instance_once(cluster, built_pex, tmp_path):
    batch = write_batch(tmp_path / "batches", "ok")
    env = job_env(built_pex, tmp_path)
    array = cluster.sbatch("--array=0-2", *SMALL, str(ARRAY), str(batch), extra_env=env)
    results = tmp_path / "results" / array
    merge = cluster.sbatch(f"--dependency=afterany:{array}", *SMALL, str(MERGE),
                           extra_env=job_env(built_pex, tmp_path, results))
    tasks = cluster.wait_done(array)
    assert sorted(tasks) == [f"{array}_{k}" for k in range(3)]
    assert all(state == ("COMPLETED", "0:0") for state in tasks.values()), (tasks, cluster.logs())
    assert cluster.wait_done(merge)[merge] == ("COMPLETED", "0:0"), cluster.logs()
    for k in range(3):  # each task wrote exactly its own shard
        (doc_path,) = (results / f"task-{k}").glob("*/results.json")
        assert json.loads(doc_path.read_text())["shard"]["index"] == k
    doc = json.loads((results / "merged.json").read_text())
    assert merged_names(doc) == NAMES  # every instance exactly once
    assert doc["status"] == "succeeded" and doc["shard"] == {"count": 3, "indices": [0, 1, 2]}
    assert doc["totals"]["instances"] == 30


@pytest.mark.deploy
def test_a_cancelled_task_is_finished_by_a_rerun_of_that_task(cluster, built_pex, tmp_path):
    # Slow agents: a shard takes long enough to be cancelled half way.
    batch = write_batch(tmp_path / "batches", "slow", ', AGENT_SIM_DELAY = "0.4"')
    env = job_env(built_pex, tmp_path)
    array = cluster.sbatch("--array=0-2", *SMALL, str(ARRAY), str(batch), extra_env=env)
    results = tmp_path / "results" / array
    merge = cluster.sbatch(f"--dependency=afterany:{array}", *SMALL, str(MERGE),
                           extra_env=job_env(built_pex, tmp_path, results))

    def one_finished():
        journals = list((results / "task-1").glob("*/journal.jsonl"))
        return journals and '"instance_finished"' in journals[0].read_text()

    wait_for(one_finished, "task 1 to finish an instance", timeout=300)
    cluster.cmd("scancel", f"{array}_1")
    tasks = cluster.wait_done(array)
    assert tasks[f"{array}_1"][0] == "CANCELLED", tasks
    assert tasks[f"{array}_0"] == tasks[f"{array}_2"] == ("COMPLETED", "0:0"), (tasks, cluster.logs())
    # afterany: the merge ran anyway, and says the batch is not done (exit 1: instances cancelled or killed).
    assert cluster.wait_done(merge)[merge] == ("FAILED", "1:0"), cluster.logs()
    first = json.loads((results / "merged.json").read_text())
    assert merged_names(first) == NAMES and first["status"] != "succeeded"
    (run_dir,) = [p.parent for p in (results / "task-1").glob("*/journal.jsonl")]
    before = {i["name"]: i for i in json.loads((run_dir / "results.json").read_text())["instances"]}
    done_before = sorted(n for n, i in before.items() if i["status"] == "succeeded")
    assert done_before and len(done_before) < len(before)

    # Rerun task 1 alone, into the same folder: it resumes its run directory; then merge again.
    rerun = cluster.sbatch("--array=1", *SMALL, str(ARRAY), str(batch),
                           extra_env=job_env(built_pex, tmp_path, results))
    merge2 = cluster.sbatch(f"--dependency=afterok:{rerun}", *SMALL, str(MERGE),
                            extra_env=job_env(built_pex, tmp_path, results))
    assert cluster.wait_done(rerun)[f"{rerun}_1"] == ("COMPLETED", "0:0"), cluster.logs()
    assert cluster.wait_done(merge2)[merge2] == ("COMPLETED", "0:0"), cluster.logs()
    assert [p.parent for p in (results / "task-1").glob("*/journal.jsonl")] == [run_dir]  # resumed, not a new run
    after = {i["name"]: i for i in json.loads((run_dir / "results.json").read_text())["instances"]}
    assert sorted(after) == sorted(before) and all(i["status"] == "succeeded" for i in after.values())
    journal = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]
    started = [e.get("name") for e in journal if e.get("event") == "instance_started"]
    for name in done_before:  # what had succeeded before the cancel was not run again
        assert started.count(name) == 1, (name, started)
    doc = json.loads((results / "merged.json").read_text())
    assert merged_names(doc) == NAMES and doc["status"] == "succeeded"
    assert doc["shard"] == {"count": 3, "indices": [0, 1, 2]}
