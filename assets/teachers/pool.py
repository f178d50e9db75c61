"""The teacher pool: which models are asked at every agent step, and how.

A *teacher pool* is a YAML file (``recipes/teachers.yaml`` is the embedded, fully offline
default; ``recipes/teachers.example-openrouter.yaml`` shows remote teachers). A teacher is a
named model of the one model client (:class:`resources.model_client.ModelSpec`: an
OpenAI-compatible endpoint or a local transformers model, its limits, prices and sampling).
The :class:`TeacherPool` resource finds the file (``config_file`` > ``TRACELAKE_TEACHERS_FILE``
> the embedded default) and opens a :class:`TeacherSet` of clients.

Besides the teachers, a pool sets the run's budget, the demo cap on steps per session, the
response cache's flushing, and spend control (``circuit_breaker``, ``prefilter``; see
``assets/teachers/ask.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources import settings
from resources.model_client import ModelClient, ModelClients, ModelSpec

DEFAULT_TEACHERS_FILE = settings.PROJECT_ROOT / "recipes" / "teachers.yaml"
FLAGS_THAT_TRIP = ("empty", "refusal", "hedge", "truncated", "invalid_tool_json")


class TeacherSpec(ModelSpec):
    """One teacher of the pool (one YAML list item): a named model."""

    name: str


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flush_seconds: float = Field(default=0.5, gt=0)  # max age of an unpersisted answer
    flush_rows: int = Field(default=256, ge=1)  # or flush as soon as this many are waiting
    compact_min_files: int = Field(default=64, ge=2)  # compact the cache table past this
    # every answer is also appended to a local write-ahead spool at once (survives kill -9);
    # fsync each line too (survives a power loss, costs a disk sync per answer)
    spool_fsync: bool = False


class CircuitBreakerSettings(BaseModel):
    """Pause a teacher for the rest of the run when too many of its recent answers are flagged."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # only teachers that cost money (a price set) are paused: an unpriced local model whose
    # short max_tokens truncates most answers is the pool's choice, not spend to save
    priced_only: bool = True
    window: int = Field(default=20, ge=1)  # the last N answers of this run's calls
    max_flagged_share: float = Field(default=0.5, ge=0, le=1)  # trips when the share is above it
    flags: list[str] = Field(default_factory=lambda: list(FLAGS_THAT_TRIP))


class PrefilterSettings(BaseModel):
    """Steps that cannot yield a usable answer are not asked (and not paid for)."""

    model_config = ConfigDict(extra="forbid")

    # the request (bytes/4 + max_tokens) is over the teacher's declared context_window
    over_window: bool = True
    # the context ends with an assistant message or holds nothing to answer (no user/tool text)
    nothing_to_answer: bool = True


class PoolSpec(BaseModel):
    """A teacher pool file."""

    model_config = ConfigDict(extra="forbid")

    teachers: list[TeacherSpec]
    budget_usd: Optional[float] = Field(default=None, ge=0)  # per run; None = unlimited
    # ask about at most N steps of each session (a demo pool's cap; the best-ranked first,
    # see assets/teachers/select.py); None = all
    max_steps_per_session: Optional[int] = Field(default=None, ge=1)
    # which steps are asked at all: all | failed_calls (the step's own call failed) |
    # mistakes (its failure is a mistake by the failure policy: the error-site pairs' steps)
    ask_steps: Literal["all", "failed_calls", "mistakes"] = "all"
    # the failure policy that tells mistakes apart (empty: recipes/failures.yaml)
    failure_policy: str = ""
    # worst-case input tokens are reserved as (request bytes / this); 1.0 is a true upper
    # bound for byte-level BPE tokenizers, larger values reserve less (and may overshoot).
    reserve_bytes_per_token: float = Field(default=1.0, gt=0)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    prefilter: PrefilterSettings = Field(default_factory=PrefilterSettings)

    @model_validator(mode="after")
    def _unique(self) -> "PoolSpec":
        names = [t.name for t in self.teachers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate teacher names: {sorted(dup)}")
        return self

    def teacher(self, name: str) -> TeacherSpec:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"no teacher {name!r} in the pool (teachers: {[t.name for t in self.teachers]})")


def load_pool_spec(path: str | os.PathLike | None = None, text: str | None = None) -> PoolSpec:
    if text is None:
        text = Path(path or DEFAULT_TEACHERS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return PoolSpec.model_validate(data)


class TeacherSet(ModelClients):
    """The clients of a pool's teachers (``async with`` it to open and close connections)."""

    def __init__(self, pool: PoolSpec) -> None:
        self.pool = pool
        super().__init__(pool.teachers)

    @property
    def teachers(self) -> list[ModelClient]:
        return self.clients


class TeacherPool(dg.ConfigurableResource):
    """The teachers asked at every agent step, from a YAML pool file (see recipes/teachers*.yaml).

    ``config_file`` > ``$TRACELAKE_TEACHERS_FILE`` > the embedded offline default
    (three SmolLM2-135M teachers). ``config_yaml`` (inline YAML) wins over both.
    """

    config_file: str = Field(default="", description="Teacher pool YAML (empty: env, then default).")
    config_yaml: str = Field(default="", description="Inline teacher pool YAML (overrides the file).")
    budget_usd: Optional[float] = Field(default=None, description="Per-run budget (overrides the YAML).")
    only: list[str] = Field(default_factory=list, description="Use only these teachers (by name).")

    def source(self) -> str:
        if self.config_yaml:
            return "<inline>"
        return self.config_file or settings.teachers_file()

    def pool_spec(self) -> PoolSpec:
        spec = (load_pool_spec(text=self.config_yaml) if self.config_yaml
                else load_pool_spec(self.source()))
        if self.only:
            missing = set(self.only) - {t.name for t in spec.teachers}
            if missing:
                raise ValueError(f"unknown teachers: {sorted(missing)}")
            spec = spec.model_copy(update={"teachers": [t for t in spec.teachers if t.name in self.only]})
        if self.budget_usd is not None:
            spec = spec.model_copy(update={"budget_usd": self.budget_usd})
        return spec

    def open(self, pool: PoolSpec | None = None) -> TeacherSet:
        return TeacherSet(pool or self.pool_spec())
