"""The crontab line `schedule cron` prints survives cron and /bin/sh intact: every argument arrives as written.

The line is executed as Debian's cron would (``%`` handling, ``/bin/sh -c``, ``env -i`` with cron's variables, no
terminal) with a stand-in interpreter that records its argv and environment; the paths are hostile on purpose.
"""

from __future__ import annotations

import json
import os
import sys

from orchestrator_pex.commands import schedule
from orchestrator_pex.request import ScheduleRequest
from tests.deploy.deploylib import run_like_cron

HOSTILE = "we ird 50% $HOME `id` ;|&<>*?'\"\\"


def test_cron_line_delivers_exact_argv_and_environment(tmp_path):
    odd = tmp_path / HOSTILE
    odd.mkdir()
    record = tmp_path / "record.json"
    fake = odd / "python3"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ), 'stdin_tty': os.isatty(0)}}, "
        f"open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    request = ScheduleRequest(scheduler="cron", pex=str(odd / "o.pex"), python=str(fake),
                              results_dir=str(odd / "results"), pex_root=str(odd / "pex-root"), shard="1/3",
                              run_arg=("--budget-share", "auto"), batch=str(odd / "night%ly.toml"))
    argv, env = schedule.run_command(request)
    line = schedule.cron_line("*/5 * * * *", argv, env, user="root")
    crontab = f"SHELL=/bin/sh\nPATH=/usr/bin:/bin\n{line}\n"
    proc = run_like_cron(crontab, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(record.read_text())
    assert got["argv"] == argv[1:]
    assert got["env"]["PEX_ROOT"] == str(odd / "pex-root")
    assert got["env"]["NO_COLOR"] == "1"
    assert got["env"]["PATH"] == "/usr/bin:/bin"
    assert not got["stdin_tty"]
    assert "TERM" not in got["env"] and "PYTHONPATH" not in got["env"]
    assert os.path.isabs(got["argv"][0]) and got["argv"][1] == "run"
