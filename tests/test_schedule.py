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
BATCH = '[[instances]]\nname = "a"\nargv = ["/bin/true"]\n'


def batch_at(path) -> str:
    """A valid batch file at ``path`` (schedule refuses a batch that does not load)."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(BATCH)
    return str(path)


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
    batch = batch_at(tmp_path / "batches" / "nightly.toml")
    code, out, err = run_cmd(
        ["cron", "--at", "0  2 * * *", "--pex", "/opt/orchestrator-pex/current/orchestrator-pex.pex",
         "--results-dir", "/srv/results", batch], capsys)
    assert code == 0, err
    assert out == (
        "0 2 * * * /usr/bin/env PEX_ROOT=/var/cache/orchestrator-pex NO_COLOR=1 /usr/bin/python3 "
        "/opt/orchestrator-pex/current/orchestrator-pex.pex run --results-dir /srv/results "
        f"{batch} </dev/null\n"
    )


def test_cron_paths_are_made_absolute_and_user_log_shard_are_added(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEX", str(tmp_path / "o.pex"))
    batch_at(tmp_path / "b.toml")
    code, out, _ = run_cmd(["cron", "--at", "@daily", "--user", "orch", "--log", "logs/cron.log", "--shard", "1/3",
                            "--run-arg=--budget-share", "--run-arg", "auto", "b.toml"], capsys)
    assert code == 0
    assert out.startswith(f"@daily orch /usr/bin/env PEX_ROOT=/var/cache/orchestrator-pex NO_COLOR=1 /usr/bin/python3 "
                          f"{tmp_path}/o.pex run --results-dir /var/lib/orchestrator-pex/results --shard 1/3 "
                          f"--budget-share auto {tmp_path}/b.toml </dev/null >>{tmp_path}/logs/cron.log 2>&1")


def test_cron_quoting_escapes_percent_for_cron_and_quotes_for_sh(capsys, tmp_path):
    code, out, _ = run_cmd(["cron", "--at", "5 4 * * sun", "--pex", WEIRD, batch_at(tmp_path / "b.toml")], capsys)
    assert code == 0
    assert "'/opt/o p/it'\"'\"'s \"x\" 50\\%$HOME;y.pex'" in out
    assert out.count("%") == out.count("\\%")


@pytest.mark.parametrize(
    "expr,fragment",
    [
        ("0 2 * *", "5 fields"),
        ("0 2 * * * *", "5 fields"),
        ("", "5 fields"),
        ("0 2 * * funday", "'funday' is not a day of week (0-7 or sun-sat)"),
        ("0 2 ** * *", "not a cron field"),
        ("@sometimes", "unknown cron nickname"),
        ("0 2 * * *\n* * * * *", "one line"),
        ("61 2 * * *", "minute '61': 61 is out of range (0-59)"),
        ("0 24 * * *", "hour '24': 24 is out of range (0-23)"),
        ("0 2 0 * *", "day of month '0': 0 is out of range (1-31)"),
        ("0 2 * 13 *", "month '13'"),
        ("0 2 * * 8", "day of week '8'"),
        ("0 2 * mon *", "'mon' is not a month"),
        ("0 2 * * jan", "'jan' is not a day of week"),
        ("30-10 * * * *", "from low to high"),
        ("*/0 * * * *", "step must be 1 or more"),
    ],
)
def test_cron_expression_is_checked(capsys, expr, fragment):
    code, out, err = run_cmd(["cron", "--at", expr, "--pex", "/x.pex", "/b.toml"], capsys)
    assert (code, out) == (2, "")
    assert fragment in err


@pytest.mark.parametrize("expr", ["*/15 * * * *", "0 2 1-15/2 jan,jul mon-fri", "30 4 * * 0", "@reboot",
                                  "59 23 31 12 7", "0-59/5 0,12 1-31 dec sat", "* * * * *"])
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


def test_systemd_units_printed(capsys, tmp_path):
    batch = batch_at(tmp_path / "nightly.toml")
    code, out, err = run_cmd(["systemd", "--on-calendar", "*-*-* 02:00", "--pex", "/opt/o/orchestrator-pex.pex",
                              "--user", "orch", batch], capsys)
    assert code == 0, err
    service, timer = out.split("# orchestrator-pex-nightly.timer\n")
    assert service.startswith("# orchestrator-pex-nightly.service\n[Unit]\n")
    assert "Type=oneshot\n" in service and "User=orch\n" in service
    assert "Environment=PEX_ROOT=/var/cache/orchestrator-pex\n" in service
    assert ("ExecStart=/usr/bin/python3 /opt/o/orchestrator-pex.pex run --results-dir "
            f"/var/lib/orchestrator-pex/results {batch}\n") in service
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
                              "--output-dir", str(tmp_path / "units"), batch_at(odd / "my batch.toml")], capsys)
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


def test_batch_must_load(capsys, tmp_path):
    for scheduler in (["cron", "--at", "@daily"], ["systemd", "--on-calendar", "daily"]):
        code, out, err = run_cmd([*scheduler, "--pex", "/x.pex", str(tmp_path / "missing.toml")], capsys)
        assert (code, out) == (2, "") and "missing.toml: cannot read batch file" in err
        bad = tmp_path / "bad.toml"
        bad.write_text('[[instances]]\nname = "a"\nprompt = "x"\ntimout = 3\n')
        code, out, err = run_cmd([*scheduler, "--pex", "/x.pex", str(bad)], capsys)
        assert (code, out) == (2, "") and 'bad.toml: instances[0].timout: unknown key; did you mean "timeout"?' in err
        assert len(err.strip().splitlines()) == 1


def test_warns_when_an_executable_is_not_on_the_schedulers_path(capsys, tmp_path):
    batch = tmp_path / "b.toml"
    batch.write_text('claude = "claude-not-on-cron-path"\n[[instances]]\nname = "a"\nprompt = "x"\n'
                     '[[instances]]\nname = "b"\nargv = ["my-tool-not-there", "x"]\n'
                     '[[instances]]\nname = "c"\nargv = ["sh", "-c", "true"]\n'
                     '[[instances]]\nname = "d"\nargv = ["/opt/x/abs-tool"]\n')
    code, out, err = run_cmd(["cron", "--at", "@daily", "--pex", "/x.pex", str(batch)], capsys)
    assert code == 0 and out.startswith("@daily ")
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert "b.toml: claude: 'claude-not-on-cron-path' is not on the scheduler's PATH (/usr/bin:/bin)" in lines[0]
    assert "b.toml: instances[1].argv: 'my-tool-not-there'" in lines[1] and "warning" in lines[1]
    assert "b.toml: instances[3].argv: '/opt/x/abs-tool' does not exist or is not executable" in lines[2]
    code, out, err = run_cmd(["systemd", "--on-calendar", "daily", "--pex", "/x.pex", str(batch)], capsys)
    assert code == 0 and "/usr/local/bin:/usr/sbin:/usr/bin" in err


def test_env_file_user_and_directories(capsys, tmp_path):
    import pwd

    batch = batch_at(tmp_path / "nightly.toml")
    code, out, err = run_cmd(["systemd", "--on-calendar", "daily", "--pex", "/x.pex", "--env-file",
                              "/etc/orchestrator-pex/nightly.env", batch], capsys)
    assert code == 0, err
    service = out.split("# orchestrator-pex-nightly.timer\n")[0]
    assert f"User={pwd.getpwuid(os.geteuid()).pw_name}\n" in service
    assert "EnvironmentFile=/etc/orchestrator-pex/nightly.env\n" in service
    assert "CacheDirectory=orchestrator-pex\n" in service and "StateDirectory=orchestrator-pex/results\n" in service
    assert ("run --results-dir /var/lib/orchestrator-pex/results --env-file /etc/orchestrator-pex/nightly.env "
            in service)
    code, out, err = run_cmd(["systemd", "--on-calendar", "daily", "--pex", "/x.pex", "--user", "orch",
                              "--pex-root", "/srv/pex", "--results-dir", "/srv/results", batch], capsys)
    assert "User=orch\n" in out and "CacheDirectory" not in out and "StateDirectory" not in out
    assert "EnvironmentFile" not in out and "--env-file" not in out
    code, out, err = run_cmd(["cron", "--at", "@daily", "--pex", "/x.pex", "--env-file", "rel.env", batch], capsys)
    assert code == 0 and f" --env-file {os.path.abspath('rel.env')} {batch} " in out


def test_warns_about_an_env_file_the_run_would_refuse(capsys, tmp_path):
    import pwd

    batch = batch_at(tmp_path / "nightly.toml")
    me = pwd.getpwuid(os.geteuid()).pw_name
    env = tmp_path / "n.env"
    args = ["cron", "--at", "@daily", "--pex", "/x.pex", "--user", me, "--env-file", str(env), batch]
    code, out, err = run_cmd(args, capsys)
    assert code == 0 and out and "the env file does not exist" in err
    env.write_text("A=1\n")
    env.chmod(0o644)
    code, out, err = run_cmd(args, capsys)
    assert code == 0 and "accessible to group or others" in err and "chmod 600" in err
    env.chmod(0o600)
    code, out, err = run_cmd(args, capsys)
    assert code == 0 and err == ""
    if os.geteuid() == 0:
        os.chown(env, 12345, 12345)
        code, out, err = run_cmd(args, capsys)
        assert code == 0 and f"not owned by {me}" in err
