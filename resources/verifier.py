"""The verifier resource: the model that capture runs, on a GPU (CUDA) when present, else CPU.

``VerifierResource`` is configuration plus a loader; the model itself is loaded once per
process (``resources.models.load_causal_lm`` caches it, and loads a ``.gguf`` verifier from
its dequantized copy, see ``resources.models.dequantized_gguf_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from resources import settings
from resources.models import DEFAULT_MODEL, ModelRef, load_causal_lm, pick_device, pick_dtype

@dataclass
class LoadedVerifier:
    """A loaded verifier and what identifies its capture tables."""

    tokenizer: Any
    model: Any
    verifier_id: str
    dtype: str  # compute dtype name: float32 | float16 | bfloat16
    device: str
    path: str

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
    verifier_id: str | None = Field(default=None, description="Override the id that names the tables.")
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

    def resolved_verifier_id(self) -> str:
        return self.verifier_id or ModelRef(self.verifier).model_id

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
