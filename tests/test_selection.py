"""Selection (--only, --tags, --exclude) on run, validate and --dry-run; tags and description in the results,
the dry run and the live view; a resumed run covers only its selection."""

from __future__ import annotations

import json

from orchestrator_pex import progress, report
from orchestrator_pex.errors import EXIT_USAGE

BATCH = """
claude = {claude}
[defaults]
tags = ["nightly"]
[[instances]]
name = "alpha"
prompt = "a"
description = "the first one"
tags = ["fast", "nightly"]
[[instances]]
name = "beta"
prompt = "b"
[[instances]]
name = "gamma"
prompt = "c"
tags = ["slow"]
"""


def names(result) -> list:
    return [r["name"] for r in result.doc["instances"]]


def test_only_tags_exclude_select_instances_and_records_carry_tags_and_description(write_batch, run_batch):
    batch = write_batch(BATCH)
    only = run_batch(batch, "--only", "alpha,gamma")
    assert only.code == 0, only.stderr
    assert names(only) == ["alpha", "gamma"]
    alpha = only.inst("alpha")
    assert alpha["tags"] == ["fast", "nightly"] and alpha["description"] == "the first one"
    assert only.inst("gamma")["tags"] == ["slow"] and only.inst("gamma")["description"] is None
    assert only.doc["selection"] == {"only": ["alpha", "gamma"], "tags": [], "exclude": [],
                                     "names": ["alpha", "gamma"]}
    tagged = run_batch(batch, "--tags", "nightly", "--exclude", "alpha")
    assert tagged.code == 0, tagged.stderr
    assert names(tagged) == ["beta"] and tagged.inst("beta")["tags"] == ["nightly"]
    whole = run_batch(batch)
    assert names(whole) == ["alpha", "beta", "gamma"] and "selection" not in whole.doc


def test_unknown_names_and_tags_are_one_line_with_did_you_mean(write_batch, cli):
    batch = write_batch(BATCH)
    for args, expected in ((["--only", "alpah"], 'no instance named \'alpah\'; did you mean "alpha"?'),
                           (["--exclude", "betta"], 'did you mean "beta"?'),
                           (["--tags", "nighty"], 'did you mean "nightly"?'),
                           (["--only", "alpha", "--exclude", "alpha"], "leaves no instance")):
        for command in (["run", str(batch), "--dry-run"], ["run", str(batch)], ["validate", str(batch)]):
            proc = cli(*command, *args)
            err = proc.stderr.decode()
            assert proc.returncode == EXIT_USAGE, (command, args, err)
            assert expected in err and len(err.strip().splitlines()) == 1, err
            assert "Traceback" not in err


def test_dry_run_and_validate_show_the_selection_with_tags_and_description(write_batch, cli):
    batch = write_batch(BATCH)
    dry = cli("run", str(batch), "--dry-run", "--tags", "fast,slow")
    out = dry.stdout.decode()
    assert dry.returncode == 0, dry.stderr
    assert "[alpha]" in out and "[gamma]" in out and "[beta]" not in out
    assert "description: the first one" in out and "tags: fast, nightly" in out
    val = cli("validate", str(batch), "--exclude", "beta")
    assert val.returncode == 0 and "2 instances selected of 3" in val.stdout.decode(), val.stderr


def test_resume_reruns_only_the_selection(write_batch, cli, tmp_path):
    batch = write_batch(BATCH)
    runs = tmp_path / "runs"
    env = {"AGENT_SIM_SCENARIO": "crash"}
    first = cli("run", str(batch), "--json", "--results-dir", str(runs), "--only", "beta,gamma", env=env)
    doc = json.loads(first.stdout)
    assert [r["status"] for r in doc["instances"]] == ["failed", "failed"]
    run_dir = runs / doc["run_id"]
    dry = cli("resume", str(run_dir), "--rerun-failed", "--dry-run")
    assert dry.stdout.decode().split() == ["beta", "gamma"], dry.stderr
    again = cli("resume", str(run_dir), "--rerun-failed", "--json")
    resumed = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr
    assert [(r["name"], r["status"]) for r in resumed["instances"]] == [("beta", "succeeded"), ("gamma", "succeeded")]
    shown = json.loads(cli("runs", "show", str(doc["run_id"]), "--json", "--results-dir", str(runs)).stdout)
    assert [r["name"] for r in shown["instances"]] == ["beta", "gamma"]


def test_live_view_shows_tags_when_instances_have_them():
    rows = (progress.Row(name="alpha", state="running", tags=("fast", "nightly")),
            progress.Row(name="beta", state="pending"))
    p = progress.Progress(rows=rows, started_at=0.0, tokens=0, cost_usd=0.0)
    text = "\n".join(report.render_table(p, 200, 20, 1.0))
    assert "TAGS" in text and "fast,nightly" in text
    plain = progress.Progress(rows=(progress.Row(name="beta", state="pending"),), started_at=0.0)
    assert "TAGS" not in "\n".join(report.render_table(plain, 200, 20, 1.0))


def test_runs_show_of_a_killed_run_labels_instances_from_the_batch_copy(write_batch, cli, tmp_path, marker,
                                                                          marked_pids):
    """Records the journal never wrote (the orchestrator was SIGKILLed while alpha ran) still carry tags and
    description, taken from the run's batch copy."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import cli_env

    batch = write_batch(BATCH.replace("[defaults]", "concurrency = 1\n[defaults]"))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator_pex", "run", str(batch), "--results-dir", str(runs),
                             "--progress", "none"], cwd=tmp_path,
                            env=cli_env({"AGENT_SIM_SCENARIO": "hang", "ORCH_TEST_MARKER": marker}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(runs.glob("*/logs/alpha.stdout")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        while time.monotonic() < deadline and marked_pids(marker):  # the guardian ends the instance
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = next(runs.iterdir())
    shown = json.loads(cli("runs", "show", run_dir.name, "--json", "--results-dir", str(runs)).stdout)
    by_name = {r["name"]: r for r in shown["instances"]}
    assert shown["status"] == "interrupted"
    assert by_name["alpha"]["status"] == "cancelled" and by_name["alpha"]["description"] == "the first one"
    assert by_name["alpha"]["tags"] == ["fast", "nightly"]
    assert by_name["gamma"]["status"] == "not-started" and by_name["gamma"]["tags"] == ["slow"]
    assert by_name["beta"]["tags"] == ["nightly"] and by_name["beta"]["description"] is None
