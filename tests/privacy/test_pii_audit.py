"""The personal-data half of the audit: a detector that is not the scrubber (DataFog's
Rust detectors, a separate reading of home paths) counts what the policy asks to
pseudonymize, by kind, never the text -- before scrubbing it agrees with the scrubber on
the real transcripts, after it finds nothing."""

from __future__ import annotations

from collections import Counter

from resources.privacy import PiiPolicy, Privacy
from resources.privacy.pii_audit import PiiAuditor

P = Privacy(PiiPolicy(), b"audit-salt")
TEXT = ("cd /Users/Jane_Smith/x; mail jane.doe@acme-corp.com, call +44 20 7946 0958 or (415) 555-2671, "
        "card 4539 1488 0343 6467, server 203.0.113.77, folder C--Users-jdoe-proj")


def test_each_kind_counted_and_nothing_after_scrubbing():
    a = PiiAuditor(P)
    assert a.scan([TEXT]) == Counter({"home_user": 2, "email": 1, "phone": 2, "payment_card": 1, "ip_address": 1})
    assert a.scan([P.scrub_text(TEXT)[0]]) == Counter()


def test_policy_exemptions_are_not_findings():
    a = PiiAuditor(P)
    keep = ["local 127.0.0.1 and 10.0.0.0, netmask 255.255.255.0", "noreply@anthropic.com, user@example.com",
            "/Users/Shared/x /home/user/x -Users-user_3f9a2c1b-proj /Users/user_3f9a2c1b/y",
            "order 1234567890123456 (not Luhn)", "email_5d1e07aa@example.invalid [PII:ip_77b0c2d9]"]
    assert a.scan(keep) == Counter()
    # a kind the policy turns off is not asked for
    off = PiiAuditor(Privacy(PiiPolicy(email=False, phone=False), b"audit-salt"))
    assert off.scan([TEXT]) == Counter({"home_user": 2, "payment_card": 1, "ip_address": 1})


def test_real_transcripts_agree_with_the_scrubber_then_nothing_left(realdata_root):
    lines = []
    for f in sorted(realdata_root.rglob("*")):
        if f.is_file() and f.suffix in (".jsonl", ".json", ".traj"):
            lines += f.read_text(errors="replace").splitlines()
    a = PiiAuditor(P)
    before = a.scan(lines)
    out, counts = P.scrub_texts(lines)
    scrubbed = Counter()
    for c in counts.values():
        scrubbed.update(c)
    # two detectors, one count (tests/privacy/test_pii.py asserts the scrubber's: 267 / 40)
    assert before == Counter({"home_user": 267, "email": 40}) == scrubbed
    assert a.scan(out) == Counter()
