"""Secret names, env redaction, and scrubbing secret values from text, bytes, JSON data and chunked streams."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from orchestrator_pex import secrets
from orchestrator_pex.secrets import Redactor, is_secret_name, redact_env

CANARY = "sk-ant-api03-CANARY-" + "x7Q9" * 8


@pytest.mark.parametrize(
    "name",
    [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "MY_SERVICE_KEY",
        "deploy_token",
        "WEBHOOK_SECRET",
        "DB_PASSWORD",
        "PASSWORD",
        "PGPASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "SMTP_CREDENTIALS",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name, environ={})


@pytest.mark.parametrize("name", ["PATH", "HOME", "KEYBOARD", "MONKEY", "TOKENIZER_MODE", "LANG", "FOO", "SECRETARY"])
def test_plain_names(name):
    assert not is_secret_name(name, environ={})


def test_user_list_from_environment(monkeypatch):
    env = {secrets.USER_NAMES_ENV: "ACME_LICENSE, INTERNAL_*:other"}
    assert is_secret_name("ACME_LICENSE", environ=env)
    assert is_secret_name("internal_url", environ=env)
    assert is_secret_name("OTHER", environ=env)
    assert not is_secret_name("ACME_LICENSE", environ={})
    monkeypatch.setenv(secrets.USER_NAMES_ENV, "ACME_LICENSE")
    assert is_secret_name("ACME_LICENSE")


def test_redact_env_masks_only_secret_values():
    env = {"ANTHROPIC_API_KEY": CANARY, "FOO": "bar", "X_TOKEN": "t0k3n"}
    assert redact_env(env, environ={}) == {"ANTHROPIC_API_KEY": "***", "FOO": "bar", "X_TOKEN": "***"}
    assert env["ANTHROPIC_API_KEY"] == CANARY  # the input is not modified


def test_redactor_from_env_and_batch_tables():
    environ = {"ANTHROPIC_API_KEY": CANARY, "HOME": "/root", "SHORT_KEY": "ab"}
    batch_env = {"DB_PASSWORD": "hunter22", "MODE": "fast"}
    r = Redactor.from_env(environ, batch_env, None)
    text = f"key={CANARY} home=/root pw=hunter22 mode=fast short=ab"
    assert r.scrub(text) == "key=*** home=/root pw=*** mode=fast short=ab"
    assert r.scrub(text.encode()) == b"key=*** home=/root pw=*** mode=fast short=ab"
    assert bool(r)


def test_redactor_catches_escaped_forms():
    secret = 'p"a\\ss/wörd&x'
    r = Redactor([secret])
    as_json = json.dumps({"error": f"login failed for {secret}"})
    assert secret not in r.scrub(as_json) and "***" in r.scrub(as_json)
    assert json.dumps(secret)[1:-1] not in r.scrub(as_json)
    ascii_json = json.dumps({"e": secret}, ensure_ascii=True)
    assert r.scrub(ascii_json) == '{"e": "***"}'
    url = "https://u:" + urllib.parse.quote(secret, safe="") + "@host/"
    assert r.scrub(url) == "https://u:***@host/"


def test_longest_secret_is_masked_whole():
    r = Redactor(["abcd", "abcdefgh"])
    assert r.scrub("xx abcdefgh yy abcd") == "xx *** yy ***"


def test_scrub_data_recurses():
    r = Redactor([CANARY])
    data = {"instances": [{"result": f"echo {CANARY}", "n": 3, CANARY: [CANARY, None]}]}
    out = r.scrub_data(data)
    assert CANARY not in json.dumps(out)
    assert out["instances"][0]["n"] == 3 and out["instances"][0]["result"] == "echo ***"


def test_empty_redactor_is_identity():
    r = Redactor([])
    assert not r
    assert r.scrub("abc") == "abc" and r.scrub(b"abc") == b"abc"
    s = r.stream()
    assert s.feed(b"abc") + s.flush() == b"abc"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 16, 1000])
def test_stream_scrubber_catches_secrets_split_across_chunks(chunk_size):
    r = Redactor([CANARY, "hunter22"])
    payload = (f'{{"type":"x","text":"{CANARY}"}}\nplain line hunter22 end\n' * 3 + "tail hunt").encode()
    expected = r.scrub(payload)
    s = r.stream()
    out = b"".join(s.feed(payload[i : i + chunk_size]) for i in range(0, len(payload), chunk_size)) + s.flush()
    assert out == expected
    assert CANARY.encode() not in out and b"hunter22" not in out
    assert out.endswith(b"tail hunt")
