"""The verifier resource: the model that capture runs, on a GPU (CUDA) when present, else CPU.

``VerifierResource`` is configuration plus a loader; the model itself is loaded once per
process (``resources.models.load_causal_lm`` caches it, and loads a ``.gguf`` verifier from
its dequantized copy, see ``resources.models.dequantized_gguf_dir``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from resources import settings
from resources.models import DEFAULT_MODEL, ModelRef, load_causal_lm, pick_device, pick_dtype

# the embedded default's model id on the Hugging Face hub
KNOWN_MODEL_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
CONFIG_FILES = ("config.json", "generation_config.json")
_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
_SAMPLES, _SAMPLE_BYTES = 16, 64 * 1024


def _looks_like_hub_id(v: Any) -> bool:
    return (isinstance(v, str) and v.count("/") == 1 and not v.startswith(("/", ".", "~"))
            and all(part.strip() for part in v.split("/")) and not Path(v).exists())


def verifier_model_id(path: str) -> str:
    """The verifier's model id: ``org/name`` where known (the embedded default; a config's
    ``_name_or_path`` naming a hub model; a GGUF's general.organization/name), else the
    file or directory name."""
    if path in KNOWN_MODEL_IDS:
        return KNOWN_MODEL_IDS[path]
    p = Path(path).expanduser()
    if p.is_dir():
        try:
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        name = cfg.get("_name_or_path") or cfg.get("name_or_path")
        if _looks_like_hub_id(name):
            return name
    elif p.suffix == ".gguf" and p.is_file():
        try:
            from gguf import GGUFReader

            fields = GGUFReader(str(p)).fields

            def text(key):
                f = fields.get(key)
                return bytes(f.parts[f.data[0]]).decode("utf-8", "replace") if f is not None and f.data else None

            org, name = text("general.organization"), text("general.name") or text("general.basename")
            if org and name:
                return f"{org}/{name}".replace(" ", "-")
        except Exception:  # an unreadable header is no identity: fall back to the file name
            pass
    return ModelRef(path).model_id


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's size and 16 evenly spaced 64 KiB samples (whole file when small)."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLES * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - _SAMPLE_BYTES) // (_SAMPLES - 1)
            for i in range(_SAMPLES):
                f.seek(i * step)
                h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


def verifier_fingerprint(path: str) -> str:
    """A fingerprint of the verifier's weights and config (16 hex).

    Config files are hashed as canonical JSON without keys that name rather than define the
    model (``_name_or_path``, ``transformers_version``, the dtype); each weight file by its
    name, size and 16 samples spread over it, so two checkpoints of one run
    (``run1/final``, ``run2/final``) differ while a copy of the same files does not. A
    multi-GB checkpoint costs about 1 MiB of reads per file.
    """
    if path in (DEFAULT_MODEL, "", "default"):
        from resources.models import find_smollm2_gguf

        path = str(find_smollm2_gguf())
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.name if f == p else str(f.relative_to(p))
        if f.name in CONFIG_FILES:
            try:
                cfg = json.loads(f.read_text(encoding="utf-8"))
                cfg = {k: v for k, v in cfg.items() if k not in _IGNORED_CONFIG_KEYS}
                h.update(f"config:{rel}:".encode() + json.dumps(cfg, sort_keys=True).encode())
            except (OSError, ValueError):
                continue
        elif f.suffix in WEIGHT_SUFFIXES:
            st = f.stat()
            h.update(f"weights:{rel}:".encode() + _file_digest(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


@dataclass
class LoadedVerifier:
    """A loaded verifier and what identifies its capture tables."""

    tokenizer: Any
    model: Any
    verifier_id: str
    dtype: str  # compute dtype name: float32 | float16 | bfloat16
    device: str
    path: str
    model_id: str = ""
    fingerprint: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


class VerifierResource(dg.ConfigurableResource):
    """The verifier model used by capture, placed on a GPU when one is present.

    ``verifier`` is a local HF-format directory, a ``.gguf`` file, or ``smollm2-135m`` (the
    embedded default). ``batch_tokens`` bounds a forward batch as (longest sequence ×
    sequences), padding included; ``max_length`` bounds one sequence (prompt + generated).
    """

    device: str = Field(default="auto", description="auto (cuda > mps > cpu), cuda, cuda:1, cpu…")
    dtype: str = Field(default="auto", description="auto (fp16 on CUDA, fp32 else), float32, float16, bfloat16")
    batch_tokens: int = Field(default=8192, description="Token budget of one forward batch, padding included.")
    max_length: int = Field(default=2048, description="Maximum tokens of one captured sequence.")
    verifier: str = Field(default=DEFAULT_MODEL, description="HF directory, .gguf file, or smollm2-135m.")
    verifier_id: str | None = Field(default=None, description="Override the id that names the tables (the "
                                    "weights' fingerprint is still checked against the table's).")
    top_k: int = Field(default=8, description="Next-token candidates stored per position.")
    hidden_layer: int = Field(default=-1, description="Index into hidden_states (-1 = last, after the final norm).")
    cache_dir: str | None = Field(default=None, description="Where dequantized GGUF verifiers are cached.")
    cpu_threads: int | None = Field(
        default=None, description="torch intra-op threads when running on CPU (None = torch default). "
        "On a CPU shared with other jobs, 1 avoids OpenMP oversubscription stalls.")

    def resolved_device(self) -> str:
        return pick_device(self.device)

    def resolved_dtype(self) -> str:
        return str(pick_dtype(self.dtype, self.resolved_device())).removeprefix("torch.")

    def model_id(self) -> str:
        """``org/name`` where known, else the file or directory name."""
        return verifier_model_id(self.verifier)

    def fingerprint(self) -> str:
        """Fingerprint of the verifier's weights and config (see :func:`verifier_fingerprint`)."""
        return verifier_fingerprint(self.verifier)

    def resolved_verifier_id(self) -> str:
        """The id that names the capture table: ``verifier_id`` when set, else the model id
        plus the first 8 hex of the fingerprint (two checkpoints never share a table)."""
        return self.verifier_id or f"{self.model_id()}@{self.fingerprint()[:8]}"

    def identity(self) -> tuple[str, str]:
        """(verifier id, compute dtype) — names the capture table, without loading the model."""
        return self.resolved_verifier_id(), self.resolved_dtype()

    def load(self) -> LoadedVerifier:
        device = self.resolved_device()
        if device == "cpu" and self.cpu_threads:
            import torch

            torch.set_num_threads(int(self.cpu_threads))
        tok, model = load_causal_lm(self.verifier, device=device, dtype=self.dtype,
                                    gguf_cache=self.cache_dir or True)
        return LoadedVerifier(
            tokenizer=tok,
            model=model,
            verifier_id=self.resolved_verifier_id(),
            dtype=str(model.dtype).removeprefix("torch."),
            device=device,
            path=self.verifier,
            model_id=self.model_id(),
            fingerprint=self.fingerprint(),
        )


def gpu_k8s_config(gpus: int | None = None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` of a GPU step: GPU request/limit, a toleration for tainted
    GPU nodes, an optional node selector. Tunable by environment, read at definition load:
    TRACELAKE_K8S_GPUS_PER_STEP (1), TRACELAKE_K8S_GPU_RESOURCE (nvidia.com/gpu),
    TRACELAKE_K8S_GPU_NODE_LABEL (key=value, empty: none)."""
    gpus = int(gpus if gpus is not None else settings.k8s_gpus_per_step())
    resource = settings.k8s_gpu_resource()
    cfg: dict[str, Any] = {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "24Gi", resource: str(gpus)},
                "limits": {"memory": "32Gi", resource: str(gpus)},
            },
        },
        "pod_spec_config": {
            "tolerations": [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    label = settings.k8s_gpu_node_label()
    if "=" in label:
        k, v = label.split("=", 1)
        cfg["pod_spec_config"]["node_selector"] = {k: v}
    return cfg
