"""Environment files: the secrets an unattended run (cron, systemd, Ansible) hands to every instance.

Where from: ``--env-file PATH`` on ``run``/``resume``/``demo`` (relative to the working directory), else the batch's
top-level ``env_file`` (relative to the batch file's folder). The command line wins; there is no merging of the two.

Syntax (a subset of what systemd's ``EnvironmentFile=`` reads, so one file serves both), one entry per line:

* ``KEY=VALUE``; KEY is letters, digits and ``_``, not starting with a digit; whitespace around the line and around
  the ``=`` is ignored.
* Blank lines, and lines whose first non-blank character is ``#`` or ``;``, are ignored. A ``#`` after a value is
  part of the value.
* VALUE is taken literally to the end of the line. If it starts and ends with the same quote (``"`` or ``'``), the
  pair is removed and what is inside is taken literally (no escapes, no ``$`` expansion); a backslash inside double
  quotes is refused (systemd would read it as an escape). No ``export``, no multi-line values.
* A key given twice: the last line wins.

Guarantees. The file is refused -- one line naming the file (and line), exit 2, nothing started -- when it cannot be
read, is not a regular file, is not owned by the user running orchestrator-pex, or grants any permission to group or
others (it must be ``chmod 600`` or ``400``), or when a line does not parse. The error text never contains a value.
Every value (whatever its key's name) is treated as a secret: the run's masking replaces it with ``***`` in logs,
results, the journal and dry-run output (values shorter than :data:`orchestrator_pex.secrets.MIN_SECRET_LEN`
characters are not masked). Values go into every instance's environment, with this precedence (later wins): the
orchestrator's own environment < the env file < ``[defaults].env`` < the instance's ``env``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import Dict

from orchestrator_pex.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load(path: str) -> Dict[str, str]:
    """The ``KEY: VALUE`` pairs of the env file at ``path``, after the checks in the module docstring."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(path, "", "env file is a symbolic link; give the file itself") from None
        raise ConfigError(path, "", f"cannot read env file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, "", "env file is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise ConfigError(path, "", f"env file is owned by uid {st.st_uid}, not by the user running "
                                        f"orchestrator-pex (uid {os.geteuid()}); chown it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(path, "", f"env file is accessible to group or others (mode "
                                        f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read((1 << 20) + 1)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read env file: {exc.strerror or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > 1 << 20:
        raise ConfigError(path, "", "env file is larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, "", "env file is not valid UTF-8") from None
    return parse(text, path)


def parse(text: str, label: str) -> Dict[str, str]:
    """Parse env-file ``text`` (syntax in the module docstring); errors name ``label`` and the line, never a value."""
    out: Dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(label, f"line {number}", "expected KEY=VALUE (KEY: letters, digits and _)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            if value[0] == '"' and "\\" in value:
                raise ConfigError(label, f"line {number}", f"the value of {key} has a backslash inside double quotes, "
                                                           "read as an escape by systemd; use single quotes")
            value = value[1:-1]
        elif value[:1] in ("'", '"'):
            raise ConfigError(label, f"line {number}", f"unterminated quote in the value of {key}")
        out[key] = value
    return out


def resolve(cli_path: str | None, batch_env_file: str | None, batch_path: str) -> str | None:
    """The env file in force: ``--env-file`` (as given) else the batch's ``env_file`` (from the batch's folder)."""
    if cli_path:
        return os.path.abspath(cli_path)
    if batch_env_file:
        if os.path.isabs(batch_env_file):
            return batch_env_file
        return os.path.normpath(os.path.join(os.path.dirname(batch_path) or os.getcwd(), batch_env_file))
    return None
