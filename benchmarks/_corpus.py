"""Text of the real agent transcripts in ../shared/realdata (prose, code, tool output), for benchmarks."""

import json
from pathlib import Path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "claude-code"


def transcript_texts(min_len: int = 0, max_len: int = 10**9) -> list[str]:
    """Every text block of every message, min_len < len < max_len; empty if realdata is absent."""
    texts: list[str] = []
    for f in sorted(REALDATA.glob("*.jsonl")) if REALDATA.is_dir() else []:
        for line in f.read_text(errors="replace").splitlines():
            try:
                content = json.loads(line).get("message", {}).get("content")
            except (ValueError, AttributeError):
                continue
            for block in content if isinstance(content, list) else [content]:
                text = block if isinstance(block, str) else (
                    (block.get("text") or block.get("content")) if isinstance(block, dict) else None)
                if isinstance(text, str) and min_len < len(text) < max_len:
                    texts.append(text)
    return texts
