"""The HTML report: rendered by a real headless Chromium (networking off), checked in its DOM against results.json.

Chromium comes from the Debian package (``chromium``; ``.ci/run`` installs it through scripts/install-debian-deps).
Each page is rendered inside ``unshare -n`` (no network namespace but loopback), with a throwaway profile; the
screenshots stay in the test's tmp dir. Every Chromium is started in its own session and killed by its PID.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from orchestrator_pex import html_report
from tests.support import report_data

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _require(what: Optional[str], reason: str) -> str:
    if what:
        return what
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must install it: scripts/install-debian-deps)")
    pytest.skip(reason)


def _no_network_prefix() -> List[str]:
    """``unshare -n`` when this user may create a network namespace (root in CI), else fail (CI) or skip."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=30).returncode == 0:
        return [unshare, "-n"]
    if os.environ.get("CI") == "true":
        pytest.fail("unshare -n is not permitted: the report must be rendered with networking off")
    pytest.skip("unshare -n is not permitted here: cannot render with networking off")
    return []


def chromium(tmp_path: Path, page: Path, *mode: str, timeout: float = 120) -> bytes:
    """Run headless Chromium on ``page`` with networking off; stdout. Killed by PID if it does not finish."""
    exe = _require(CHROMIUM, "chromium is not installed (Debian package chromium)")
    argv = [*_no_network_prefix(), exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1240,1600", *mode, page.as_uri()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


class Dom(html.parser.HTMLParser):
    """Text by element id, the rows of #instances, every script element's text and every URL attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: Dict[str, str] = {}
        self.rows: List[List[str]] = []
        self.scripts: List[str] = []
        self.urls: List[str] = []
        self.title = ""
        self.root_attrs: Dict[str, Any] = {}
        self._open: List[tuple] = []  # (tag, id) of open elements
        self._in_instances = False
        self._row: Optional[List[str]] = None
        self._cell: Optional[List[str]] = None

    def handle_starttag(self, tag: str, attrs: List[Any]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.root_attrs = a
        for key in ("src", "href", "action", "data", "poster", "srcset"):
            if a.get(key):
                self.urls.append(a[key])
        if tag in ("br", "img", "meta", "link", "input", "hr", "line", "path", "rect"):
            return
        self._open.append((tag, a.get("id")))
        if a.get("id") == "instances":
            self._in_instances = True
        if self._in_instances and tag == "tr" and any(t == "tbody" for t, _ in self._open):
            self._row = []
        if self._row is not None and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            t, ident = self._open.pop()
            if ident == "instances":
                self._in_instances = False
            if t == tag:
                break
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        for _tag, ident in self._open:
            if ident:
                self.by_id[ident] = self.by_id.get(ident, "") + data
        if self._open and self._open[-1][0] == "script":
            self.scripts.append(data)
        if self._open and self._open[-1][0] == "title" and any(t == "head" for t, _ in self._open):
            self.title += data
        if self._cell is not None:
            self._cell.append(data)


def parse(dom: bytes) -> Dom:
    d = Dom()
    d.feed(dom.decode("utf-8"))
    return d


def check_numbers(d: Dom, doc: Dict[str, Any]) -> None:
    totals = doc["totals"]
    assert d.by_id["sum-status"] == doc["status"]
    assert d.by_id["sum-instances"] == str(totals["instances"])
    assert d.by_id["sum-tokens"] == f"{totals['tokens']['total']:,}"
    assert d.by_id["sum-cost"] == f"${totals['cost_usd']:.4f}"
    for kind in ("input", "output", "cache_creation", "cache_read", "total"):
        assert d.by_id[f"sum-tokens-{kind}"] == f"{totals['tokens'][kind]:,}"
    for status, n in totals["by_status"].items():
        if n:
            assert d.by_id[f"sum-status-{status}"] == str(n)
    by_name = {r["name"]: r for r in doc["instances"]}
    shown = {row[0]: row for row in d.rows}
    assert set(shown) == set(by_name), "every instance appears in the table, once"
    assert len(d.rows) == len(by_name)
    for name, row in shown.items():
        r = by_name[name]
        assert row[1] == r["status"]
        assert int(row[10]) == r["tokens"]["total"]
        assert float(row[11]) == pytest.approx(r["cost_usd"], abs=1e-6)
        assert int(row[4]) == r["attempts"]
    # no request can leave the page: every URL in it is a relative path to a log
    for url in d.urls:
        assert "://" not in url and not url.startswith("//"), url
    assert len(d.scripts) == 1 and "sortable" in d.scripts[0], "only the report's own script"
    assert d.root_attrs.get("data-sortable") == "ready", "the CSP lets the report's own script run"


def screenshot(tmp_path: Path, page: Path, name: str) -> None:
    shot = tmp_path / name
    chromium(tmp_path, page, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_demo_run_report_renders_in_chromium(tmp_path: Path, cli) -> None:
    proc = cli("demo", "--results-dir", str(tmp_path / "runs"), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    doc = json.loads((run_dir / "results.json").read_text())
    page = run_dir / "report.html"
    assert page.is_file(), "run writes report.html into the run directory"
    assert page.stat().st_mode & 0o077 == 0, "private like results.json: it holds the agents' output"
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report.")], "no temporary file left"
    d = parse(chromium(tmp_path, page, "--dump-dom"))
    check_numbers(d, doc)
    assert "times from the journal" in d.by_id["timeline-note"]
    retried = [r for r in doc["instances"] if r["attempts"] > 1]
    assert retried, "the demo batch has an instance that is retried"
    assert d.title == f"orchestrator-pex run {doc['run_id']}"
    screenshot(tmp_path, page, "demo-report.png")
    # links are relative to the run directory and point at the real logs
    for r in doc["instances"]:
        assert (run_dir / os.path.relpath(r["stdout_log"], run_dir)).is_file()
    assert f'href="logs/{doc["instances"][0]["name"]}.stdout"' in page.read_text()


def test_500_instance_report_renders_and_hostile_result_is_inert(tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "runs" / "run-500"
    doc = report_data.make_run(str(run_dir), 500)
    proc = cli("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    page = Path(proc.stdout.decode().strip())
    assert page == run_dir / "report.html"
    d = parse(chromium(tmp_path, page, "--dump-dom"))
    check_numbers(d, doc)
    assert d.title == "orchestrator-pex run run-500", "the injected script did not run"
    hostile = next(row for row in d.rows if row[0] == "inst-00007")
    assert report_data.HOSTILE[:60] in hostile[13], "the <script> result is shown as text"
    text = page.read_text()
    assert text.count("<script") == 1 and "<img" not in text
    assert "showing 300 of 500 instances" in d.by_id["timeline-note"]
    retried = sum(1 for r in doc["instances"] if r["attempts"] > 1)
    assert f"{500 + retried} attempts" in d.by_id["timeline-note"]
    screenshot(tmp_path, page, "report-500.png")


def test_results_document_only_report(tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "run"
    doc = report_data.make_run(str(run_dir), 40)
    copy = tmp_path / "elsewhere" / "merged.json"
    copy.parent.mkdir()
    copy.write_text(json.dumps(doc))
    proc = cli("report", str(copy), "-o", str(tmp_path / "out.html"))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = (tmp_path / "out.html").read_text()
    assert "times from the results (one bar per instance)" in text
    assert 'href="run/logs/inst-00000.stdout"' in text, "log links relative to the report's folder"


def test_merge_writes_the_report_of_the_merged_document(tmp_path: Path, cli) -> None:
    docs = []
    for side in ("a", "b"):
        doc = report_data.make_run(str(tmp_path / side), 5)
        for r in doc["instances"]:
            r["name"] = f"{side}-{r['name']}"
        doc["batch"] = "/x/nightly.toml"
        (tmp_path / f"{side}.json").write_text(json.dumps(doc))
        docs.append(doc)
    (tmp_path / "out").mkdir()
    proc = cli("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "out" / "m.json"))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = (tmp_path / "out" / "m.html").read_text()
    merged = json.loads((tmp_path / "out" / "m.json").read_text())
    assert all(f"<td>{r['name']}</td>" in text for d in docs for r in d["instances"])
    assert f'id="sum-instances">{merged["totals"]["instances"]}<' in text
    assert 'href="../a/logs/inst-00000.stdout"' in text
    proc = cli("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "n.json"),
               "--no-report")
    assert proc.returncode == 0 and not (tmp_path / "n.html").exists()


def test_10000_instances_stay_under_5_mb(tmp_path: Path) -> None:
    doc = report_data.make_run(str(tmp_path / "run"), 10_000)
    path = html_report.write_for_run(str(tmp_path / "run"), doc)
    size = os.path.getsize(path)
    assert size < 5 * 1024 * 1024, size
    text = Path(path).read_text()
    assert all(f">inst-{i:05d}</td>" in text for i in range(0, 10_000, 97))
    assert text.count("<rect") <= 2 * html_report.MAX_TIMELINE_ROWS


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON results document"),
    ('{"instances": 3}', "instances: not a results document"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, cli, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"  # not named results.json: the suite's schema check is for real documents
    bad.write_text(content)
    proc = cli("report", str(bad))
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and str(bad) in err and message in err and "Traceback" not in err


def test_unwritable_output_is_exit_2(tmp_path: Path, cli) -> None:
    report_data.make_run(str(tmp_path / "run"), 3)
    for source in (tmp_path / "run", tmp_path / "run" / "results.json"):
        proc = cli("report", str(source), "-o", str(tmp_path / "no-such-dir" / "r.html"))
        err = proc.stderr.decode()
        assert proc.returncode == 2 and err.count("\n") == 1 and "no-such-dir" in err and "Traceback" not in err


def test_missing_run_is_exit_2(tmp_path: Path, cli) -> None:
    proc = cli("report", "no-such-run", "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1


def test_no_report_flag(tmp_path: Path, cli) -> None:
    proc = cli("demo", "--results-dir", str(tmp_path / "runs"), "--no-report", timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    assert not (run_dir / "report.html").exists()


def test_attempt_spans_from_the_journal(tmp_path: Path) -> None:
    from orchestrator_pex import journal

    run_dir = tmp_path / "run"
    doc = report_data.make_run(str(run_dir), 12)
    events, problems = journal.read_journal(str(run_dir / "journal.jsonl"))
    assert not problems
    spans = html_report.attempt_spans(doc["instances"], events, None)
    retried = doc["instances"][3]  # make_run retries every instance i with i % 11 == 3
    assert retried["attempts"] == 2
    (s1, e1, o1), (s2, e2, o2) = spans[retried["name"]]
    assert o1 == "retried" and o2 == retried["status"]
    assert s1 < e1 == pytest.approx(s2 - 0.5, abs=0.01) and e2 == pytest.approx(html_report._epoch(
        retried["finished_at"]))
    assert all(len(v) == 1 for k, v in spans.items() if k != retried["name"])
    only_records = html_report.attempt_spans(doc["instances"], None, None)
    assert len(only_records[retried["name"]]) == 1


def test_resume_rewrites_the_report_for_the_whole_batch(tmp_path: Path, cli) -> None:
    flag = tmp_path / "fixed"
    batch = tmp_path / "b.toml"
    batch.write_text(f'results_dir = "runs"\n[[instances]]\nname = "ok"\nargv = ["true"]\n'
                     f'[[instances]]\nname = "flaky"\nargv = ["test", "-e", "{flag}"]\n')
    first = cli("run", str(batch))
    assert first.returncode == 1, first.stderr.decode(errors="replace")
    (run_dir,) = list((tmp_path / "runs").iterdir())
    report = run_dir / "report.html"
    assert 'id="sum-status-failed">1<' in report.read_text()
    flag.write_text("")
    again = cli("resume", str(run_dir), "--rerun-failed")
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    text = report.read_text()
    assert 'id="sum-status-succeeded">2<' in text and "sum-status-failed" not in text
    assert "<td>ok</td>" in text and "<td>flaky</td>" in text


def test_per_agent_defaults_to_claude(tmp_path: Path) -> None:
    doc = report_data.make_run(str(tmp_path / "run"), 10)
    for r in doc["instances"][::2]:
        r["agent"] = "codex"  # records may carry the agent that ran them; absent means claude
    text = html_report.render(doc)
    i = text.index('id="per-agent"')
    table = text[i:text.index("</table>", i)]
    assert '<td>codex</td><td class="n">5</td>' in table and '<td>claude</td><td class="n">5</td>' in table
    assert text.count("<td>codex</td>") == 1 + 5  # the agent table and five instance rows


def test_render_escapes_every_field() -> None:
    evil = "<b>x</b>\"'&"
    doc = {"run_id": evil, "batch": evil, "status": evil, "started_at": "2026-01-01T00:00:00Z",
           "finished_at": "2026-01-01T00:01:00Z", "orchestrator_version": evil, "agent_version": evil,
           "instances": [{"name": evil, "status": "failed", "model": evil, "agent": evil, "tools": {evil: 1},
                          "tokens": {"total": float("nan")}, "cost_usd": -5, "attempts": "x", "error": evil,
                          "result": evil, "stdout_log": 'a"><script>', "started_at": "2026-01-01T00:00:01Z",
                          "finished_at": "2026-01-01T00:00:30Z"}]}
    text = html_report.render(doc)
    assert "<b>x</b>" not in text and 'a"><script>' not in text
    assert text.count("<script") == 1
    assert "&lt;b&gt;x&lt;/b&gt;&quot;&#x27;&amp;" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
