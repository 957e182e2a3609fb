"""`orchestrator-pex schedule`: crontab lines and systemd units that run a batch unattended, argv-safe."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from orchestrator_pex import cli
from orchestrator_pex.commands import schedule
from orchestrator_pex.errors import OrchestratorError
from tests.support.components import missing

WEIRD = "/opt/o p/it's \"x\" 50%$HOME;y.pex"


def run_cmd(argv, capsys):
    parser = argparse.ArgumentParser(prog="orchestrator-pex schedule")
    schedule.add_arguments(parser)
    try:
        code = schedule.main(parser.parse_args(argv))
    except OrchestratorError as exc:
        print(f"orchestrator-pex: {exc}", file=sys.stderr)
        code = exc.exit_status
    out, err = capsys.readouterr()
    return code, out, err


def test_registered_as_a_subcommand():
    assert cli.COMMANDS["schedule"][0] == "orchestrator_pex.commands.schedule"


def test_cron_line_shape(capsys, tmp_path):
    code, out, err = run_cmd(
        ["cron", "--at", "0  2 * * *", "--pex", "/opt/orchestrator-pex/current/orchestrator-pex.pex",
         "--results-dir", "/srv/results", "/etc/orchestrator-pex/batches/nightly.toml"], capsys)
    assert code == 0, err
    assert out == (
        "0 2 * * * /usr/bin/env PEX_ROOT=/var/cache/orchestrator-pex NO_COLOR=1 /usr/bin/python3 "
        "/opt/orchestrator-pex/current/orchestrator-pex.pex run --results-dir /srv/results "
        "/etc/orchestrator-pex/batches/nightly.toml </dev/null\n"
    )


def test_cron_paths_are_made_absolute_and_user_log_shard_are_added(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEX", str(tmp_path / "o.pex"))
    code, out, _ = run_cmd(["cron", "--at", "@daily", "--user", "orch", "--log", "logs/cron.log", "--shard", "1/3",
                            "--run-arg=--budget-share", "--run-arg", "auto", "b.toml"], capsys)
    assert code == 0
    assert out.startswith(f"@daily orch /usr/bin/env PEX_ROOT=/var/cache/orchestrator-pex NO_COLOR=1 /usr/bin/python3 "
                          f"{tmp_path}/o.pex run --results-dir /var/lib/orchestrator-pex/results --shard 1/3 "
                          f"--budget-share auto {tmp_path}/b.toml </dev/null >>{tmp_path}/logs/cron.log 2>&1")


def test_cron_quoting_escapes_percent_for_cron_and_quotes_for_sh(capsys):
    code, out, _ = run_cmd(["cron", "--at", "5 4 * * sun", "--pex", WEIRD, "/b.toml"], capsys)
    assert code == 0
    assert "'/opt/o p/it'\"'\"'s \"x\" 50\\%$HOME;y.pex'" in out
    assert out.count("%") == out.count("\\%")


@pytest.mark.parametrize(
    "expr,fragment",
    [
        ("0 2 * *", "5 fields"),
        ("0 2 * * * *", "5 fields"),
        ("", "5 fields"),
        ("0 2 * * funday", "not a cron field"),
        ("0 2 ** * *", "not a cron field"),
        ("@sometimes", "unknown cron nickname"),
        ("0 2 * * *\n* * * * *", "one line"),
    ],
)
def test_cron_expression_is_checked(capsys, expr, fragment):
    code, out, err = run_cmd(["cron", "--at", expr, "--pex", "/x.pex", "/b.toml"], capsys)
    assert (code, out) == (2, "")
    assert fragment in err


@pytest.mark.parametrize("expr", ["*/15 * * * *", "0 2 1-15/2 jan,jul mon-fri", "30 4 * * 0", "@reboot"])
def test_cron_expressions_accepted(expr):
    assert schedule.check_cron_expression(expr)


def test_requires_a_pex_outside_a_pex(capsys, monkeypatch):
    monkeypatch.delenv("PEX", raising=False)
    code, _, err = run_cmd(["cron", "--at", "@daily", "/b.toml"], capsys)
    assert code == 2 and "--pex" in err
    code, _, err = run_cmd(["cron", "--at", "@daily", "--pex", "/x.pex", "--python", "python3", "/b.toml"], capsys)
    assert code == 2 and "absolute" in err
    code, _, err = run_cmd(["cron", "--at", "@daily", "--pex", "/x.pex", "--shard", "3/3", "/b.toml"], capsys)
    assert code == 2 and "--shard" in err


def test_systemd_units_printed(capsys):
    code, out, err = run_cmd(["systemd", "--on-calendar", "*-*-* 02:00", "--pex", "/opt/o/orchestrator-pex.pex",
                              "--user", "orch", "/etc/orchestrator-pex/batches/nightly.toml"], capsys)
    assert code == 0, err
    service, timer = out.split("# orchestrator-pex-nightly.timer\n")
    assert service.startswith("# orchestrator-pex-nightly.service\n[Unit]\n")
    assert "Type=oneshot\n" in service and "User=orch\n" in service
    assert "Environment=PEX_ROOT=/var/cache/orchestrator-pex\n" in service
    assert ("ExecStart=/usr/bin/python3 /opt/o/orchestrator-pex.pex run --results-dir "
            "/var/lib/orchestrator-pex/results /etc/orchestrator-pex/batches/nightly.toml\n") in service
    assert "OnCalendar=*-*-* 02:00\n" in timer and "Unit=orchestrator-pex-nightly.service\n" in timer
    assert "WantedBy=timers.target" in timer


def test_systemd_quoting():
    assert schedule.systemd_quote(WEIRD) == '"/opt/o p/it\'s \\"x\\" 50%%$$HOME;y.pex"'
    assert schedule.systemd_quote("/plain/path.pex") == "/plain/path.pex"
    assert schedule.systemd_quote("") == '""'


@pytest.mark.parametrize("expr", ["*-*-* 02:00", "daily", "Mon..Fri 06:30", "*:0/15", "2026-12-24 18:00:00 UTC"])
def test_systemd_calendar_accepted_and_agrees_with_systemd(expr):
    assert schedule.check_calendar(expr) == expr
    tool = shutil.which("systemd-analyze")
    if tool:
        assert subprocess.run([tool, "calendar", expr], capture_output=True).returncode == 0


@pytest.mark.parametrize("expr", ["", "tomorrow", "02:00; rm -rf /", "*-*-* 02:00\nOnCalendar=hourly", "$(x)"])
def test_systemd_calendar_rejected(capsys, expr):
    code, out, err = run_cmd(["systemd", "--on-calendar", expr, "--pex", "/x.pex", "/b.toml"], capsys)
    assert (code, out) == (2, "")
    assert "--on-calendar" in err


def test_systemd_units_verify(capsys, tmp_path):
    """systemd's own parser accepts the units, with hostile characters in every path."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        missing("systemd-analyze is not installed (Debian package systemd)")
    odd = tmp_path / "we ird 50%$X;'\""
    odd.mkdir()
    bindir = tmp_path / "b in 5%$X;"  # systemd refuses quotes and backslashes in the executable itself
    bindir.mkdir()
    python = bindir / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    code, out, err = run_cmd(["systemd", "--on-calendar", "Mon..Fri 06:30", "--python", str(python),
                              "--pex", str(odd / "o.pex"), "--results-dir", str(odd / "results"),
                              "--output-dir", str(tmp_path / "units"), str(odd / "my batch.toml")], capsys)
    assert code == 0, err
    paths = out.split()
    assert [os.path.basename(p) for p in paths] == ["orchestrator-pex-my-batch.service",
                                                   "orchestrator-pex-my-batch.timer"]
    proc = subprocess.run([tool, "verify", *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_unit_name_checked(capsys):
    code, _, err = run_cmd(["systemd", "--on-calendar", "daily", "--unit-name", "a b", "--pex", "/x.pex", "/b"],
                           capsys)
    assert code == 2 and "--unit-name" in err


def test_systemd_refuses_an_executable_it_cannot_run(capsys):
    code, _, err = run_cmd(["systemd", "--on-calendar", "daily", "--python", "/opt/it's/python3", "--pex", "/x.pex",
                            "/b.toml"], capsys)
    assert code == 2 and "quotes" in err


def test_default_pex_goes_through_the_current_link(tmp_path):
    release = tmp_path / "0.1.0"
    release.mkdir()
    real = release / "orchestrator-pex-0.1.0-linux_x86_64.pex"
    real.write_text("pex")
    (release / "orchestrator-pex").symlink_to(real.name)
    (tmp_path / "current").symlink_to("0.1.0")
    assert schedule.default_pex({"PEX": str(real)}) == str(tmp_path / "current" / "orchestrator-pex")
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to("0.0.9")  # current points elsewhere: keep the running file
    assert schedule.default_pex({"PEX": str(real)}) == str(real)
    assert schedule.default_pex({}) is None
