"""Secret scrubbing: every kind, JSON validity after scrubbing, and false-positive guards."""

from __future__ import annotations

import json

import orjson
import pytest

from resources.privacy import secrets
from resources.privacy.secrets import scrub, scrub_bytes, scrub_many, scrub_obj, suspicious

# Made-up credentials of every kind (none is real); (kind, secret-bearing text, part that must vanish)
FAKE_ANT = "sk-ant-api03-" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz" * 3 + "-AbCdEfAA"
CASES = [
    ("anthropic_key", f"key: {FAKE_ANT}", FAKE_ANT),
    ("openai_key", "OPENAI=sk-proj-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY" * 2, "sk-proj-aB3d"),
    ("openai_key", "legacy sk-" + "T3BlbkFJ" + "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6", "T3BlbkFJ"),
    ("openrouter_key", "sk-or-v1-" + "0123456789abcdef" * 4, "0123456789abcdef"),
    ("google_api_key", "maps AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q here", "AIzaSyA1b2"),
    ("aws_access_key_id", "id=AKIAIOSFODNN7EXAMPLE;", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key_id", "sts ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_key", 'aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', "wJalrXUtnFEMI"),
    ("aws_secret_key", '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}', "wJalrXUtnFEMI"),
    ("github_token", "token ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2"),
    ("github_token", "gho_" + "Z" * 20 + "1" * 16, "gho_ZZZ"),
    ("github_token", "github_pat_11ABCDEFG0" + "a1b2c3d4e5_" * 6, "github_pat_11"),
    ("slack_token", "xoxb-2048-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-2048"),
    ("slack_token", "https://hooks.slack.com/services/T0ABC1234/B0DEF5678/a1b2c3d4e5f6g7h8i9j0", "T0ABC1234"),
    ("hf_token", "HF_HUB hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ12345678", "hf_aBcD"),
    ("bearer_token", "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2lnbmF0dXJl1'",
     "eyJhbGciOiJIUzI1NiJ9"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1x2y3z\nQ29kZSBpcyBwb2V0cnk=\n"
                    "-----END RSA PRIVATE KEY-----\n", "MIIEpAIBAAKCAQEA"),
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n"
                    "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXk"),
    ("env_secret", "DEBUG=1\nSTRIPE_SECRET=rk_live_abc123\nDB_PASSWORD=hunter2x\n", "rk_live_abc123"),
    ("env_secret", "export SERVICE_TOKEN=\"t0k3n-value-42\"\n", "t0k3n-value-42"),
    ("secret_field", '{"password": "correct-horse-battery", "user": "bob"}', "correct-horse-battery"),
]


@pytest.mark.parametrize("kind,text,gone", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_kind_scrubbed_plain_and_inside_json(kind, text, gone):
    out, counts = scrub(text)
    assert gone not in out and f"[REDACTED:{kind}]" in out, out
    assert counts.get(kind, 0) >= 1
    # the same secret inside a JSON line: once and twice JSON-escaped (Codex tool output)
    for line in (orjson.dumps({"content": text}).decode(),
                 orjson.dumps({"output": orjson.dumps({"output": text}).decode()}).decode()):
        s, c = scrub(line)
        assert gone not in s
        assert c.get(kind, 0) >= 1, (kind, s)
        orjson.loads(s)  # still valid JSON
    # the bulk pre-filter must flag it (else scrub_many would skip the line)
    assert suspicious([text]) == [True]
    assert scrub_many([text])[0][0] == out


def test_key_name_stays_for_assignments():
    out, _ = scrub("DB_PASSWORD=hunter2x\nAPI_KEY=abc123def")
    assert out == "DB_PASSWORD=[REDACTED:env_secret]\nAPI_KEY=[REDACTED:env_secret]"
    out, _ = scrub('curl -H "Authorization: Bearer abcdef0123456789xyz"')
    assert out == 'curl -H "Authorization: Bearer [REDACTED:bearer_token]"'


def test_pem_block_in_json_escaped_line_removed_whole():
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="] * 5) + \
          "\n-----END PRIVATE KEY-----"
    line = json.dumps({"type": "user", "message": {"content": f"here:\n{pem}\nthanks"}})
    out, counts = scrub(line)
    assert counts == {"private_key": 1}
    assert orjson.loads(out)["message"]["content"] == "here:\n[REDACTED:private_key]\nthanks"


def test_truncated_pem_does_not_eat_closing_quote():
    line = json.dumps({"c": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBase64Body"}) + ""
    out, counts = scrub(line)
    assert counts == {"private_key": 1}
    assert orjson.loads(out) == {"c": "[REDACTED:private_key]"}


def test_secret_right_after_escape_sequence():
    # "\nsk-ant-..." inside JSON: the escape's letter n must not hide the token start
    line = json.dumps({"c": f"first line\n{FAKE_ANT}\nnext"})
    out, counts = scrub(line)
    assert counts == {"anthropic_key": 1} and FAKE_ANT not in out
    assert orjson.loads(out)["c"] == "first line\n[REDACTED:anthropic_key]\nnext"


NOT_SECRETS = [
    "commit 3f2a9c1d4e5b6a7f8c9d0e1f2a3b4c5d6e7f8a9b is on main",  # git SHA
    "session 0bdd2740-b6f7-4e7b-b1c9-f159cc83b104",  # UUID
    "msg_01XU4B1nvSytVjiR8jEYREvX toolu_018t5jce2ZNoGr2ADsHGQife req_011CStqPRADRX9fx9ReRNWHf",
    "the risk-assessment-2024-03-15-final-report-v2 and task-runner-2024-01-01-abcdefghij",
    "pip install scikit-learn; sk-learn-model-selection-helpers-and-more",
    "The bearer of bad news carries the tokens",
    '{"usage": {"input_tokens": 9, "output_tokens": 152, "cache_read_input_tokens": 0}}',
    "max_tokens=512 and token_count=3 in the config",
    "def f(token=None, password=None): pass",  # code, not an env line
    "PASSWORD=${DB_PASSWORD}",  # a reference, not a value
    "AKIA is a prefix; AKIAshort",
    "hf_hub_download(repo_id='x') and the github_pat_ prefix alone",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "Signature: EpcDCkYICxgCKkDwuQFKira33iZ2L/tmVcq0xOv73b2DuAub/AN47GWt",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_no_false_positives(text):
    out, counts = scrub(text)
    assert counts == {} and out == text


def test_scrub_obj_and_bytes():
    obj = {"a": [f"x {FAKE_ANT}", {"b": "AKIAIOSFODNN7EXAMPLE"}], "n": 3}
    out, counts = scrub_obj(obj)
    assert counts == {"anthropic_key": 1, "aws_access_key_id": 1}
    assert out == {"a": ["x [REDACTED:anthropic_key]", {"b": "[REDACTED:aws_access_key_id]"}], "n": 3}
    assert obj["n"] == 3 and FAKE_ANT in obj["a"][0]  # input untouched
    data = b"\xff\xfe key=" + FAKE_ANT.encode() + b" \xc3"
    out_b, counts = scrub_bytes(data)
    assert out_b == b"\xff\xfe key=[REDACTED:anthropic_key] \xc3" and counts == {"anthropic_key": 1}


def test_register_custom_rule():
    rule = secrets.register("acme_token", ["acme_"], r"acme_[0-9a-f]{16}")
    try:
        out, counts = scrub("use acme_0123456789abcdef now")
        assert out == "use [REDACTED:acme_token] now" and counts == {"acme_token": 1}
        assert scrub_many(["x ACME_0123456789abcdef", "acme_0123456789abcdef"])[0] == [
            "x ACME_0123456789abcdef", "[REDACTED:acme_token]"]
    finally:
        secrets.unregister(rule)


def test_realdata_lines_need_no_scrubbing(realdata):
    """The real transcripts hold no credentials: scrubbing must leave every line unchanged."""
    for p in sorted(realdata.glob("*.jsonl")):
        lines = p.read_text().splitlines()
        out, per = scrub_many(lines)
        assert out == lines and not any(per), p.name
