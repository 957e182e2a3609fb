"""issue 14 (P6): results.json, ``run --json`` and report.html of a run are written record by record.

The streamed writer must give exactly the bytes ``json.dump(doc, indent=2, ensure_ascii=False)`` gave before
(schemas/results.schema.json validates every document the suite writes); totals are computed in one pass; a large
document's HTML page keeps a bounded sample in its table while counting every instance elsewhere."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_pex import html_report, results, strictjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=12)


def _record(i: int, status: str = "succeeded", cost: float = 0.0, model: str = "m") -> dict:
    rec = results.not_started(f"i{i:03d}")
    rec.update(status=status, cost_usd=cost, model=model, tokens={**rec["tokens"], "input": i, "total": i},
               started_at="2026-11-29T10:00:00.000Z", finished_at="2026-11-29T10:00:01.000Z")
    return rec


def _want(doc: dict) -> str:
    return strictjson.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@settings(max_examples=60, deadline=None)
@given(meta=st.dictionaries(st.text(max_size=8), _values, max_size=4), records=st.lists(_values, max_size=4))
def test_streamed_document_has_the_bytes_of_json_dump(meta, records):
    meta = {k: v for k, v in meta.items() if k not in ("totals", "instances")}
    records = [r if isinstance(r, dict) else {"value": r} for r in records]
    doc = results.build_document(meta, [dict(r) for r in records])
    lazy = results.lazy_document(meta, results.LazyRecords(lambda: iter(records), len(records)))
    out = io.StringIO()
    results.dump_document(lazy, out)
    assert out.getvalue() == _want(doc)
    json.loads(out.getvalue(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict JSON


def test_lazy_records_are_produced_afresh_on_each_pass_and_converted():
    calls = []

    def produce():
        calls.append(1)
        return iter(range(3))

    lazy = results.LazyRecords(produce, 3, to_json=lambda i: _record(i))
    assert len(lazy) == 3
    assert [r["name"] for r in lazy] == ["i000", "i001", "i002"]
    assert [r["name"] for r in lazy] == ["i000", "i001", "i002"]
    assert len(calls) == 2


def test_totals_in_one_pass_over_a_generator_equal_the_whole_list():
    recs = [_record(i, "failed" if i % 3 else "succeeded", cost=0.1 * i) for i in range(10)]
    once = results.totals(r for r in recs)  # a generator can be read only once
    assert once == results.totals(recs)
    assert once["by_status"]["failed"] == 6
    assert math.isclose(once["cost_usd"], 4.5)


def test_write_atomic_streams_a_lazy_document(tmp_path):
    recs = [_record(i) for i in range(5)]
    meta = {"run_id": "r", "batch": "b", "started_at": None, "finished_at": None, "status": "succeeded"}
    target = tmp_path / "results.json"
    results.write_atomic(str(target), results.lazy_document(meta, results.LazyRecords(lambda: iter(recs), 5)))
    assert target.read_text(encoding="utf-8") == _want(results.build_document(meta, recs))
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_large_report_shows_a_sample_and_counts_everything(monkeypatch):
    monkeypatch.setattr(html_report, "MAX_TABLE_ROWS", 8)
    monkeypatch.setattr(html_report, "SAMPLE_ROWS", 6)
    recs = [_record(i, "failed" if i in (3, 11) else "succeeded", cost=float(i), model="a" if i % 2 else "b")
            for i in range(40)]
    meta = {"run_id": "r", "batch": "b", "started_at": "2026-11-29T10:00:00.000Z",
            "finished_at": "2026-11-29T10:00:02.000Z", "status": "failed"}
    doc = results.lazy_document(meta, results.LazyRecords(lambda: iter(recs), len(recs)))
    page = html_report.render(doc)
    table = page.split('id="instances"')[1].split("</table>")[0]
    names = [n for n in (f"i{i:03d}" for i in range(40)) if f"<td>{n}</td>" in table]
    assert len(names) == 6
    assert "i003" in names and "i011" in names  # every instance that did not succeed is in the table
    assert names == sorted(names)  # in document order
    assert "the table shows 6 of the 40 instances (more than 8)" in page
    assert '<b id="sum-instances">40</b>' in page
    per_model = page.split('id="per-model"')[1].split("</table>")[0]
    assert ">20<" in per_model  # 20 instances of each model, counted over all 40
    top = page.split('id="top-cost"')[1].split("</table>")[0]
    assert "i039" in top and "i015" in top and "i014" not in top  # the 25 costliest of all


def test_small_report_is_unchanged_by_a_lazy_document():
    recs = [_record(i) for i in range(4)]
    meta = {"run_id": "r", "batch": "b", "started_at": None, "finished_at": None, "status": "succeeded"}
    lazy = results.lazy_document(meta, results.LazyRecords(lambda: iter(recs), 4))
    plain = results.build_document(meta, recs)
    assert html_report.render(lazy).split("generated")[0] == html_report.render(plain).split("generated")[0]


def test_run_json_stdout_is_byte_for_byte_results_json(tmp_path):
    echo = shutil.which("echo")
    assert echo, "echo is part of coreutils"
    line = '{"type":"result","subtype":"success","is_error":false,"result":"ok ✓","total_cost_usd":0}'
    batch = tmp_path / "b.toml"
    batch.write_text("".join(f'[[instances]]\nname = "n{i}"\nargv = ["{echo}", {json.dumps(line)}]\n'
                             for i in range(3)), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--json", "--progress",
                           "none", "--results-dir", str(tmp_path / "runs")], capture_output=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    with open(os.path.join(doc["run_dir"], "results.json"), "rb") as f:
        written = f.read()
    assert proc.stdout == written
    assert written.decode("utf-8") == _want(doc)
    assert doc["totals"]["by_status"]["succeeded"] == 3
    assert [r["result"] for r in doc["instances"]] == ["ok ✓"] * 3
