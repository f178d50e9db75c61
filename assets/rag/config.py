"""Runtime configuration of rag: defaults < recipes/rag.yaml < TRACELAKE_RAG_* env < explicit overrides.

No secret is ever part of the config: endpoints name the environment variable that holds
their key (``*_api_key_env``), and the client reads it at call time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from assets.rag.bundle import BundleConfig
from assets.rag.gate import GateConfig
from assets.rag.retrieval import RetrievalConfig
from resources import settings

ENV_PREFIX = settings.RAG_PREFIX
ESCALATION_HELP = (
    "escalation is allowed but no escalation endpoint is configured: set "
    "TRACELAKE_RAG_ESCALATION_BASE_URL (an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1) and "
    "TRACELAKE_RAG_ESCALATION_MODEL, and TRACELAKE_RAG_ESCALATION_API_KEY_ENV to the NAME of the "
    "environment variable holding its key if it needs one (or escalation.base_url / escalation.model in "
    "the rag recipe, or --escalation-base-url / --escalation-model)"
)


@dataclass(frozen=True)
class RagConfig:
    # local model: the embedded SmolLM2 (or an HF dir / .gguf), or an OpenAI-compatible endpoint
    local_model: str = "smollm2-135m"
    local_base_url: str | None = None
    local_api_key_env: str | None = None
    local_device: str = "cpu"
    local_threads: int = 1  # torch threads while the local model generates (0: torch default)
    local_gguf_cache: bool = True  # load a GGUF from its cached safetensors copy (~2 s instead of ~70 s)
    local_dtype: str = "float32"  # float32 | int8 (Linear layers quantized: ~2.5x faster on a CPU) | ...
    max_new_tokens: int = 128
    max_input_tokens: int = 2048
    # escalation target (used only when the gate fails and escalation is allowed)
    escalation_base_url: str | None = None
    escalation_model: str | None = None
    escalation_api_key_env: str | None = None
    escalation_max_tokens: int = 512
    allow_escalation: bool = False
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    # retrieval
    retrieval_mode: str = "hybrid"
    top_k: int = 8
    lexical_weight: float = 0.5
    embedding_weight: float = 0.5
    lexical_metric: str = "jaccard"
    min_score: float = 0.0
    embedding_device: str = "cpu"
    # bundle
    n_exemplars: int = 3
    n_failures: int = 2
    max_validation_steps: int = 8
    max_exemplar_chars: int = 700
    max_failure_chars: int = 350
    max_bundle_tokens: int = 1200
    # gate
    min_chars: int = 80  # the design's minimum answer length
    min_checklist_overlap: int = 1
    # where a run goes if the lake cannot take it (flushed on the next successful append)
    spool_dir: str | None = None

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(mode=self.retrieval_mode, top_k=self.top_k, lexical_weight=self.lexical_weight,
                               embedding_weight=self.embedding_weight, lexical_metric=self.lexical_metric,
                               min_score=self.min_score)

    def bundle(self) -> BundleConfig:
        return BundleConfig(n_exemplars=self.n_exemplars, n_failures=self.n_failures,
                            max_validation_steps=self.max_validation_steps,
                            max_exemplar_chars=self.max_exemplar_chars,
                            max_failure_chars=self.max_failure_chars, max_bundle_tokens=self.max_bundle_tokens)

    def gate(self) -> GateConfig:
        return GateConfig(min_chars=self.min_chars, min_checklist_overlap=self.min_checklist_overlap)

    @property
    def escalation_configured(self) -> bool:
        return bool(self.escalation_base_url and self.escalation_model)

    def replace(self, **kw) -> "RagConfig":
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})

    def public(self) -> dict:
        """The config as logged with every run (names of key variables only, never keys)."""
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(RagConfig)}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    default = _FIELDS[name].default
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if value == "":
        return None
    return str(value)


def flatten_recipe(data: Mapping[str, Any]) -> dict:
    """Nested YAML sections map to prefixed fields: escalation.base_url → escalation_base_url."""
    out: dict[str, Any] = {}
    for key, val in (data or {}).items():
        if isinstance(val, Mapping):
            for k, v in val.items():
                name = f"{key}_{k}" if f"{key}_{k}" in _FIELDS else k
                if name not in _FIELDS:
                    raise ValueError(f"unknown rag config key {key}.{k}")
                out[name] = v
        else:
            if key not in _FIELDS:
                raise ValueError(f"unknown rag config key {key}")
            out[key] = val
    return out


def default_recipe_path() -> Path:
    return settings.rag_recipe()


def load_rag_config(recipe: str | Path | None = None, env: Mapping[str, str] | None = None,
                    **overrides: Any) -> RagConfig:
    env = settings.environ() if env is None else env
    values: dict[str, Any] = {}
    path = Path(recipe) if recipe else default_recipe_path()
    if path.is_file():
        values.update(flatten_recipe(yaml.safe_load(path.read_text()) or {}))
    elif recipe:
        raise FileNotFoundError(f"rag recipe not found: {path}")
    for name in _FIELDS:
        v = env.get(ENV_PREFIX + name.upper())
        if v is not None and v != "":
            values[name] = v
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown rag config keys: {sorted(unknown)}")
    return RagConfig(**{k: _coerce(k, v) for k, v in values.items()})
