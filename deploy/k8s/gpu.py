"""Kubernetes settings of the GPU steps, without importing dagster-k8s.

Every asset whose step declares ``pool="gpu"`` (today ``gold/capture_shards``) carries the
``dagster-k8s/config`` op tag built by ``resources.verifier.gpu_k8s_config``: a GPU resource
request/limit, a node selector and a toleration for tainted GPU nodes. ``k8s_job_executor`` reads that tag per step, so the
GPU step runs in its own pod on a GPU node while the CPU steps run on cheap nodes.

Tunable by environment (read when the definitions load):

=============================  ==========================================
TRACELAKE_K8S_GPUS_PER_STEP    GPUs per GPU step (default 1)
TRACELAKE_K8S_GPU_RESOURCE     extended resource name (nvidia.com/gpu)
TRACELAKE_K8S_GPU_NODE_LABEL   node selector ``key=value`` (empty: none)
=============================  ==========================================
"""

from __future__ import annotations

from typing import Any

import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_POOL = "gpu"


def cpu_step_k8s_config() -> dict[str, Any]:
    """Default pod of every other step (executor-wide ``step_k8s_config``)."""
    return {"container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"},
                                               "limits": {"memory": "8Gi"}}}}


def gpu_asset_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    keys = []
    for a in defs.assets or []:
        if isinstance(a, dg.AssetsDefinition) and isinstance(a.node_def, dg.OpDefinition) \
                and a.node_def.pool == GPU_POOL:
            keys.extend(a.keys)
    return keys
