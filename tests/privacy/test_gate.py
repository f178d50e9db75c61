"""The gate (one Hyperscan pass for every pre-filter pattern) picks the same texts as the
polars pre-filters it replaced: on the planted corpus in every wrapping, real transcripts,
personal data and pathological lines. A text it passes over is never changed by a rule."""

from __future__ import annotations

import orjson
import pytest

from resources.privacy import PiiPolicy, Privacy
from resources.privacy.gate import HYPERSCAN, Gate
from resources.privacy.secrets import bulk_patterns
from tests.privacy.planted import planted

P = Privacy(PiiPolicy(), b"gate-salt")


def _texts(realdata_root) -> list[str]:
    items = planted()
    texts = [t for _, t, _ in items]
    texts += [orjson.dumps({"type": "user", "message": {"content": t}}).decode() for t in texts]
    texts += [orjson.dumps({"output": orjson.dumps({"output": t}).decode()}).decode() for t in texts[: len(items)]]
    texts += ["cd /Users/Jane_Smith/x", "-Users-jdoe-proj", "mail a.b@acme.io", "+44 20 7946 0958", "(415) 555-2671",
              "card 4539 1488 0343 6467", "ip 203.0.113.7", "C:\\\\Users\\\\JSmith", "", "plain text", "é ü 漢字 🙂",
              "sk-" * 5000, "eyJ" + "a" * 100_000, "1" * 200_000]
    for p in sorted(realdata_root.rglob("*")):
        if p.is_file() and p.suffix in (".jsonl", ".json", ".traj"):
            texts += p.read_text(errors="replace").splitlines()
    return texts


@pytest.mark.skipif(not HYPERSCAN, reason="hyperscan is not installed (the gate runs its polars path)")
def test_hyperscan_gate_picks_what_the_polars_prefilters_pick(realdata_root):
    texts = _texts(realdata_root)
    pats = P.pii.prefilter_patterns
    hs, pl = Gate(bulk_patterns(), pats, use_hyperscan=True), Gate(bulk_patterns(), pats, use_hyperscan=False)
    assert hs.engine == "hyperscan" and pl.engine == "polars"
    hs_sec, hs_pii = hs.scan(texts)
    pl_sec, pl_pii = pl.scan(texts)
    assert set(pl_sec) <= set(hs_sec) and set(pl_pii) <= set(hs_pii)  # never fewer texts
    assert hs_sec == pl_sec and hs_pii == pl_pii  # and here: the very same
    assert len(hs_sec) >= len(planted()) and len(hs_pii) > 100
    # the raw bytes give the same answer as the texts
    assert hs.scan(texts, [t.encode() for t in texts]) == (hs_sec, hs_pii)


def test_texts_the_gate_passes_over_are_never_changed(realdata_root):
    texts = _texts(realdata_root)
    sec, per = Gate(bulk_patterns(), P.pii.prefilter_patterns).scan(texts)
    picked = set(sec) | set(per)
    skipped = [t for i, t in enumerate(texts) if i not in picked][:3000]
    # each skipped text alone, through every rule (no gate): unchanged
    from resources.privacy.secrets import scrub

    for t in skipped:
        assert scrub(t)[0] == t
    out, counts = P.pii.scrub_many(skipped, list(range(len(skipped))))
    assert counts == {}
