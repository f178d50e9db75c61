"""Fixtures of the privacy tests: the real transcripts in ../shared/realdata."""

from __future__ import annotations

from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata_root() -> Path:
    if not (REALDATA / "claude-code").is_dir():
        pytest.skip(f"real transcripts not found at {REALDATA} (they live beside the project, in shared/realdata)")
    return REALDATA


@pytest.fixture(scope="session")
def realdata(realdata_root) -> Path:
    return realdata_root / "claude-code"
