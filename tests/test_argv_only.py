"""No instance is ever started through a shell: argv only (SECURITY.md, "Execution").

Two checks: the package source has no way of starting a process through a shell, and an instance whose arguments
are full of shell syntax receives them verbatim (nothing is expanded, nothing extra runs).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "orchestrator_pex"
SHELL_CALLS = {"os.system", "os.popen", "asyncio.create_subprocess_shell", "subprocess.getoutput",
               "subprocess.getstatusoutput"}


def test_package_source_never_starts_a_process_through_a_shell():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = ast.unparse(func)
            if name in SHELL_CALLS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}()")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: shell=...")
    assert offenders == []
    assert (PACKAGE / "runtime.py").read_text().count("open_process(") == 1  # the one place instances start


def test_shell_syntax_in_argv_reaches_the_instance_verbatim(run_batch, write_batch, tmp_path):
    hostile = ["$(touch pwned-1)", "`touch pwned-2`", "a; touch pwned-3", "| touch pwned-4", "*", "$HOME", "'\""]
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    argv = json.dumps([sys.executable, "-c", script, *hostile])
    path = write_batch(f'[[instances]]\nname = "literal"\nargv = {argv}\n')
    res = run_batch(path)
    assert res.code == 0, res.stderr
    assert res.inst("literal")["status"] == "succeeded"
    log = Path(res.inst("literal")["stdout_log"]).read_text(encoding="utf-8")
    assert json.loads(log) == hostile
    assert not list(tmp_path.rglob("pwned-*"))
