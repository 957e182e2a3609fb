"""Prometheus textfile metrics: promtool accepts them, a real node_exporter serves them on 127.0.0.1.

``promtool`` (Debian package prometheus) and ``prometheus-node-exporter`` are installed by ``.ci/run`` through
scripts/install-debian-deps. node_exporter is started with only the textfile collector, on a free loopback port,
and stopped by its PID.
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
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

import pytest
import trio

from orchestrator_pex import metrics, runner

PROMTOOL = shutil.which("promtool")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')


def _require(path, reason: str) -> str:
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must install it: scripts/install-debian-deps)")
    pytest.skip(reason)


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def promtool_check(text: str) -> None:
    exe = _require(PROMTOOL, "promtool is not installed (Debian package prometheus)")
    proc = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (proc.stdout, proc.stderr)


def total(s, name: str, **want: str) -> float:
    return sum(v for (n, labels), v in s.items() if n == name and all((k, w) in labels for k, w in want.items()))


@pytest.fixture
def demo_run(tmp_path: Path, cli):
    prom_dir = tmp_path / "textfile"
    prom_dir.mkdir()
    prom = prom_dir / "orchestrator-pex-demo.prom"
    proc = cli("demo", "--results-dir", str(tmp_path / "runs"), "--metrics-file", str(prom), "--no-report",
               timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    return json.loads((run_dir / "results.json").read_text()), prom


def test_demo_metrics_equal_results_and_pass_promtool(demo_run) -> None:
    doc, prom = demo_run
    text = prom.read_text()
    promtool_check(text)
    assert oct(prom.stat().st_mode & 0o777) == "0o644", "node_exporter may run as another user"
    assert not [p for p in os.listdir(prom.parent) if p != prom.name], "no temporary file left behind"
    s = samples(text)
    t = doc["totals"]
    for status, n in t["by_status"].items():
        assert total(s, "orchestrator_pex_instances", status=status) == n
    for kind in ("input", "output", "cache_creation", "cache_read"):
        assert total(s, "orchestrator_pex_tokens_total", kind=kind) == t["tokens"][kind]
    assert total(s, "orchestrator_pex_cost_usd_total") == pytest.approx(t["cost_usd"], abs=1e-6)
    assert total(s, "orchestrator_pex_retries_total") == sum(r["attempts"] - 1 for r in doc["instances"])
    assert total(s, "orchestrator_pex_run_status", status="succeeded") == 1
    assert total(s, "orchestrator_pex_run_exit_status") == 0
    assert total(s, "orchestrator_pex_last_success_timestamp_seconds") == pytest.approx(
        metrics._epoch(doc["finished_at"]))
    for (_name, labels), _ in s.items():
        assert dict(labels)["batch"] == "demo" and dict(labels)["shard"] == "all"
        assert "name" not in dict(labels), "instance names are never labels"
    for line in text.splitlines():
        if not line.startswith("#"):
            assert line.split()[-1] not in ("NaN", "+Inf", "-Inf")


def test_node_exporter_serves_the_run_metrics(demo_run, tmp_path: Path) -> None:
    doc, prom = demo_run
    exe = _require(NODE_EXPORTER, "prometheus-node-exporter is not installed (Debian package)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={prom.parent}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    try:
        body = ""
        for _ in range(300):
            try:
                with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.1)
        assert body, "node_exporter did not answer"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    served = samples(body)
    assert served[("node_textfile_scrape_error", ())] == 0
    written = samples(prom.read_text())
    for key, value in written.items():
        assert served[key] == pytest.approx(value), key
    assert total(served, "orchestrator_pex_instances", status="succeeded") == doc["totals"]["by_status"]["succeeded"]


def _doc(status: str, finished: str = "2026-01-01T00:10:00Z", **extra) -> dict:
    return {"batch": "/x/nightly.toml", "status": status, "started_at": "2026-01-01T00:00:00Z",
            "finished_at": finished, "exit_status": 0 if status == "succeeded" else 1, "instances": [], **extra}


def test_last_success_survives_a_failed_run(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    metrics.write(str(path), _doc("succeeded"), time.time())
    ok = metrics._epoch("2026-01-01T00:10:00Z")
    assert total(samples(path.read_text()), "orchestrator_pex_last_success_timestamp_seconds") == ok
    metrics.write(str(path), _doc("failed", "2026-01-02T00:10:00Z"), time.time())
    s = samples(path.read_text())
    assert total(s, "orchestrator_pex_last_success_timestamp_seconds") == ok
    assert total(s, "orchestrator_pex_run_status", status="failed") == 1
    promtool_check(path.read_text())


def test_labels_are_bounded_and_escaped(tmp_path: Path) -> None:
    instances = [{"name": f"i{i}", "status": "weird" if i == 0 else "succeeded", "model": f'm"{i}\\\n',
                  "tokens": {"input": 1, "output": float("nan"), "cache_read": -3}, "cost_usd": float("inf"),
                  "attempts": 3} for i in range(50)]
    text = metrics.render(_doc("succeeded", shard={"index": 1, "count": 4}, instances=instances), time.time())
    promtool_check(text)
    s = samples(text)
    models = {dict(labels)["model"] for (n, labels) in s if n == "orchestrator_pex_cost_usd_total"}
    assert len(models) == metrics.MAX_MODELS + 1 and "other" in models
    assert 'model="m\\"0\\\\?"' in text  # quote and backslash escaped, newline made printable
    assert total(s, "orchestrator_pex_tokens_total", kind="input") == 50
    assert total(s, "orchestrator_pex_tokens_total", kind="output") == 0
    assert total(s, "orchestrator_pex_cost_usd_total") == 0
    assert total(s, "orchestrator_pex_instances", status="failed") == 1  # unknown status counts as failed
    assert total(s, "orchestrator_pex_retries_total") == 100
    assert {dict(labels)["shard"] for (_, labels) in s} == {"1/4"}


async def test_metrics_written_while_the_run_goes_on(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "INTERVAL", 0.05)
    path = tmp_path / "live.prom"

    from orchestrator_pex.secrets import Redactor

    secret = "sk-test-SECRET-0123456789"

    class Acct:
        model = f"model-{secret}"

        def tokens(self) -> dict:
            return {"input": 5, "output": 7, "cache_creation": 0, "cache_read": 11}

    class Attempt:
        acct = Acct()

    class State:
        record = None
        status = "running"
        attempts = [Attempt()]
        current = Attempt()

        def cost(self) -> float:
            return 0.25

    class FakeScheduler:
        states = [State(), State()]
        _redactor = Redactor([secret])

    class Console:
        async def emit(self, event) -> None:
            raise AssertionError(event)

    meta = {"batch": "/x/live.toml", "started_at": "2026-01-01T00:00:00Z", "finished_at": None}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._write_metrics_periodically, str(path), meta, FakeScheduler(), None, Console())
        for _ in range(200):
            await trio.sleep(0.05)
            if path.exists():
                break
        first = path.stat().st_mtime_ns
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    text = path.read_text()
    promtool_check(text)
    s = samples(text)
    assert total(s, "orchestrator_pex_run_status", status="running") == 1
    assert total(s, "orchestrator_pex_instances", status="running") == 2
    assert total(s, "orchestrator_pex_tokens_total", kind="cache_read") == 22
    assert total(s, "orchestrator_pex_cost_usd_total") == 0.5
    assert secret not in text and 'model="model-***"' in text, "secrets never reach the metrics file"
    assert ("orchestrator_pex_run_exit_status", (("batch", "live"), ("shard", "all"))) not in s
    assert path.stat().st_mtime_ns >= first


def test_batch_metrics_file_key(tmp_path: Path, cli) -> None:
    batch = tmp_path / "b.toml"
    batch.write_text('metrics_file = "out/b.prom"\nresults_dir = "runs"\n[[instances]]\nname = "a"\n'
                     'argv = ["true"]\n')
    (tmp_path / "out").mkdir()
    proc = cli("run", str(batch))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    s = samples((tmp_path / "out" / "b.prom").read_text())
    assert total(s, "orchestrator_pex_instances", status="succeeded") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('metrics_file = 3\n[[instances]]\nname = "a"\nargv = ["true"]\n')
    proc = cli("validate", str(bad))
    assert proc.returncode == 2 and b"bad.toml: metrics_file: expected a string" in proc.stderr


def test_schedule_passes_an_absolute_metrics_file(tmp_path: Path, cli) -> None:
    batch = tmp_path / "nightly.toml"  # schedule refuses a batch that does not load
    batch.write_text('[[instances]]\nname = "a"\nargv = ["/bin/true"]\n')
    proc = cli("schedule", "cron", "--at", "@daily", "--pex", "/opt/o/current/orchestrator-pex",
               "--metrics-file", "textfile/nightly.prom", str(batch))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert f" --metrics-file {tmp_path}/textfile/nightly.prom {batch} ".encode() in proc.stdout
