"""Embedded defaults, each overridable by an environment variable."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


LAKE_ROOT = env("TRACELAKE_LAKE_ROOT", "./lakehouse")
SESSIONS_DIR = env("TRACELAKE_SESSIONS_DIR", "./data/sessions")
RECIPES_DIR = Path(env("TRACELAKE_RECIPES_DIR", str(PROJECT_ROOT / "recipes")))
# The datasets refresh once ingestion has been quiet this long (one refresh per burst).
REFRESH_QUIET_SECONDS = float(env("TRACELAKE_REFRESH_QUIET_SECONDS", "60"))
AUTOMATION_INTERVAL_SECONDS = int(env("TRACELAKE_AUTOMATION_INTERVAL_SECONDS", "30"))
