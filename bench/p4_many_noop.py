"""P4: 2,000 instances of a 3-line no-op agent, with logs, results and the run journal on.

Beside it in the same round: ``xargs -P64`` running the same agent 2,000 times with output to a file, and the
orchestrator with the previous admission rule (``ORCHESTRATOR_PEX_ADMISSION=busy``). The orchestrator runs with
``--concurrency 64`` (as xargs). Prints the wall-time ratio orchestrator / xargs (goal <= 1.0), the orchestrator's
own CPU per instance (goal <= 2 ms; split into user and system time) and peak RSS (VmHWM of the orchestrator
process), the machine's load, and the filesystem the run directories are on.

The filesystem matters for the system time: every instance creates two raw logs, and on ext4 *without a journal*
(``/proc/fs/jbd2`` has no entry for the device) the kernel does not reuse an inode freed in the last minute (six
while its block is dirty) and checks each such inode in turn on every create, so right after many files were
deleted (an earlier run's temporary directory) a create costs up to about a millisecond. ``--tmp /dev/shm``
puts the batch, the xargs output and the run directories on tmpfs instead, to measure the orchestrator without it.

    python bench/p4_many_noop.py [--instances 2000] [--rounds 1] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

from _common import ORCH, PY, REPO, env_with_repo, measure, median, table

NOOP = os.path.join(REPO, "bench", "noop_agent")


def xargs(n: int, tmp: str) -> float:
    names = os.path.join(tmp, "names.txt")
    with open(names, "w") as f:
        f.write("".join(f"noop-{i}\n" for i in range(n)))
    out = open(os.path.join(tmp, "xargs.out"), "wb")
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P64", "-n1", "-a", names, PY, NOOP], stdout=out, check=True)
    return time.perf_counter() - t0


def orchestrator(n: int, tmp: str, extra):
    batch = os.path.join(tmp, "p4.toml")
    with open(batch, "w") as f:
        for i in range(n):
            f.write(f'[[instances]]\nname = "noop-{i}"\nargv = ["{PY}", "{NOOP}"]\n')
    env = env_with_repo({"ORCHESTRATOR_PEX_ADMISSION": "busy"} if "busy" in extra else {})
    extra = [x for x in extra if x != "busy"]
    return measure([*ORCH, "run", batch, "--results-dir", os.path.join(tmp, "runs"), "--progress", "none", *extra],
                   env=env, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="directory for the batch, the output and the run directories "
                    "(default: the system's temporary directory)")
    a = ap.parse_args()
    walls, cpus, users, systems, rss, base, busy = [], [], [], [], [], [], []
    loads = [_load()]
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        where = _filesystem(tmp)
        for _ in range(a.rounds):
            base.append(xargs(a.instances, tmp))
            m = orchestrator(a.instances, tmp, ["--concurrency", "64"])
            assert m.returncode == 0, m.returncode
            walls.append(m.wall)
            cpus.append(m.cpu_s)
            users.append(m.cpu_user_s)
            systems.append(m.cpu_sys_s)
            rss.append(m.peak_rss_mb)
            old = orchestrator(a.instances, tmp, ["--concurrency", "64", "busy"])
            assert old.returncode == 0, old.returncode
            busy.append(old.wall)
            loads.append(_load())
    n = a.instances
    print(f"P4: {n} no-op instances, cap 64, {a.rounds} round(s), medians")
    print(table([
        ["", "wall s", "orchestrator CPU ms/instance (user + system)", "peak RSS MB"],
        ["xargs -P64 (output to a file)", f"{median(base):.2f}", "-", "-"],
        ["orchestrator-pex run (admission by pressure)", f"{median(walls):.2f}",
         f"{1000 * median(cpus) / n:.2f} ({1000 * median(users) / n:.2f} + {1000 * median(systems) / n:.2f})",
         f"{max(rss):.1f}"],
        ["orchestrator-pex run (busy rule)", f"{median(busy):.2f}", "-", "-"],
    ]))
    print(f"run directories on: {where}")
    print(f"ratio orchestrator/xargs = {median(walls) / median(base):.2f} (goal <= 1.0); busy rule / xargs = "
          f"{median(busy) / median(base):.2f}; CPU {1000 * median(cpus) / n:.2f} ms/instance (goal <= 2)")
    print(f"load average (1, 5, 15 min) before and after each round: {' | '.join(loads)}")


def _filesystem(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo), and for ext4 whether it journals."""
    best, fstype, source = "", "?", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = left.split()[4]
                inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > len(best):
                    best, (fstype, source) = mount_point, right.split()[:2]
    except (OSError, IndexError, ValueError):
        return "unknown"
    if fstype == "ext4":
        device = os.path.basename(source)
        try:
            journaled = any(entry.startswith(device + "-") for entry in os.listdir("/proc/fs/jbd2"))
        except OSError:
            journaled = False
        fstype += " (journal)" if journaled else " (no journal: creating a file right after deletions costs more)"
    return f"{fstype}, mounted on {best}"


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    main()
