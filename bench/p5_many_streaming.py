"""P5: 500 instances at concurrency 128 of a fake agent streaming stream-json for ~5 s each, journal on.

Measures the orchestrator process itself (not its children): peak RSS (VmHWM; goal <= 80 MB) and average CPU over
the run (goal <= 10 % of one core). Then the run journal's cost: its size per instance, and, replaying the run's
own events through :class:`orchestrator_pex.journal.Journal` with the same concurrency, fsyncs and fsync time per
instance with group commit versus one fsync per event (what a naive journal would pay). Last, the agent alone
(no delays, five runs): its CPU per run and what 500 of them ask of the machine over the ideal time, beside the
orchestrator's share -- P5's agent is a Python program, and its start-ups compete with the orchestrator.

    python bench/p5_many_streaming.py [--instances 500] [--concurrency 128] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ORCH, PY, REPO, env_with_repo, measure, table

FAKE = os.path.join(REPO, "tests", "support", "fake_claude")
LINES = 32  # the multi-tool scenario with 10 turns prints 32 lines; AGENT_SIM_DELAY comes before 31 of them


def write_batch(tmp: str, n: int, concurrency: int) -> str:
    agent = os.path.join(tmp, "agent")
    with open(FAKE) as f:
        body = f.read().split("\n", 1)[1]
    with open(agent, "w") as f:  # same program, started without the `env python3` lookup
        f.write(f"#!{PY} -IS\n" + body.replace(
            "sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))",
            f"sys.path.insert(0, {REPO!r})"))
    os.chmod(agent, 0o755)
    batch = os.path.join(tmp, "p5.toml")
    with open(batch, "w") as f:
        f.write(f'claude = "{agent}"\nconcurrency = {concurrency}\n[defaults]\nmodel = "claude-sonnet-4-5"\n')
        for i in range(n):
            f.write(f'[[instances]]\nname = "stream-{i:04d}"\nprompt = "stream {i}"\n')
    return batch


def journal_replay(events, concurrency: int, group_commit: bool, tmp: str):
    """Re-emit the run's instance events through a fresh Journal the way the scheduler does; (fsyncs, seconds)."""
    import trio

    from orchestrator_pex.journal import Journal

    run_dir = tempfile.mkdtemp(dir=tmp)
    j = Journal.open(run_dir)
    by_name = {}
    for e in events:
        if e.get("event") in ("instance_started", "instance_finished"):
            by_name.setdefault(e["name"], []).append(e)
    rng = random.Random(1)

    async def instance(evs, limit):
        async with limit:
            for e in evs:
                if group_commit:
                    await j.emit(e)
                else:
                    await trio.to_thread.run_sync(j.append_sync, e)
                await trio.sleep(rng.random() * 0.01)

    async def main():
        limit = trio.Semaphore(concurrency)
        async with trio.open_nursery() as nursery:
            for evs in by_name.values():
                nursery.start_soon(instance, evs, limit)

    t0 = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - t0
    j.close()
    return j.fsyncs, j.fsync_seconds, wall, len(by_name)


def agent_cost(tmp: str, env, runs: int = 5):
    """The agent alone, without its delays: (median wall s, median CPU s) of one run -- what the agents themselves
    ask of the machine, beside what the orchestrator spends."""
    argv = [os.path.join(tmp, "agent"), "-p", "cost", "--output-format", "stream-json", "--verbose"]
    quick = {**env, "AGENT_SIM_DELAY": "0"}
    walls, cpus = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=quick, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, f"the agent alone exited {proc.returncode}"
        walls.append(time.perf_counter() - t0)
        cpus.append(usage.ru_utime + usage.ru_stime)  # exact, from the kernel, children of the agent included
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    sys.path.insert(0, REPO)
    with tempfile.TemporaryDirectory() as tmp:
        batch = write_batch(tmp, a.instances, a.concurrency)
        results = os.path.join(tmp, "runs")
        stats_path = os.path.join(tmp, "journal-stats.jsonl")
        env = env_with_repo({"AGENT_SIM_SCENARIO": "multi-tool", "AGENT_SIM_TURNS": "10",
                             "AGENT_SIM_DELAY": f"{a.seconds / (LINES - 1):.4f}",
                             "ORCHESTRATOR_PEX_JOURNAL_STATS": stats_path})
        m = measure([*ORCH, "run", batch, "--results-dir", results, "--json-logs"], env=env, cwd=tmp)
        assert m.returncode == 0, f"run exited {m.returncode}"
        run_dir = os.path.join(results, os.listdir(results)[0])
        with open(os.path.join(run_dir, "results.json")) as f:
            doc = json.load(f)
        assert doc["totals"]["by_status"]["succeeded"] == a.instances
        jpath = os.path.join(run_dir, "journal.jsonl")
        from orchestrator_pex.journal import read_journal

        events, problems = read_journal(jpath)
        assert not problems, problems
        jsize = os.path.getsize(jpath)
        with open(stats_path) as f:
            live = json.loads(f.read().splitlines()[-1])  # the run's own journal: events, fsyncs, fsync time
        agent_wall, agent_cpu = agent_cost(tmp, env)
        gc = journal_replay(events, a.concurrency, True, tmp)
        naive = journal_replay(events, a.concurrency, False, tmp)
    n = a.instances
    cpu_pct = 100.0 * m.cpu_s / m.wall
    print(f"P5: {n} instances x ~{a.seconds:g}s of streaming ({LINES} stream-json lines each), concurrency "
          f"{a.concurrency}")
    print(table([
        ["orchestrator", "value", "goal"],
        ["wall time", f"{m.wall:.1f} s", f"(ideal {a.seconds * -(-n // a.concurrency):.0f} s)"],
        ["peak RSS (VmHWM)", f"{m.peak_rss_mb:.1f} MB", "<= 80 MB"],
        ["average CPU", f"{cpu_pct:.1f} % of one core", "<= 10 %"],
        ["CPU per instance", f"{1000 * m.cpu_s / n:.1f} ms", ""],
        ["journal size", f"{jsize / n / 1024:.2f} KiB/instance", ""],
    ]))
    cores = os.cpu_count() or 1
    ideal = a.seconds * -(-n // a.concurrency)
    print(f"the agent alone, no delays (median of 5): {agent_wall:.2f} s wall, {1000 * agent_cpu:.0f} ms CPU; "
          f"{n} of them = {n * agent_cpu:.1f} s CPU = {100 * n * agent_cpu / (cores * ideal):.0f} % of {cores} CPUs "
          f"over the ideal {ideal:.0f} s (the orchestrator: {100 * m.cpu_s / (cores * ideal):.0f} %)")
    print()
    print(table([
        [f"journal replay (same events, c={a.concurrency})", "fsyncs", "fsyncs/instance", "fsync ms/instance",
         "wall s"],
        ["the run itself (live)", str(live["fsyncs"]), f"{live['fsyncs'] / n:.2f}",
         f"{1000 * live['fsync_seconds'] / n:.2f}", "-"],
        ["group commit (Journal.emit)", str(gc[0]), f"{gc[0] / gc[3]:.2f}", f"{1000 * gc[1] / gc[3]:.2f}",
         f"{gc[2]:.2f}"],
        ["one fsync per event", str(naive[0]), f"{naive[0] / naive[3]:.2f}", f"{1000 * naive[1] / naive[3]:.2f}",
         f"{naive[2]:.2f}"],
    ]))


if __name__ == "__main__":
    main()
