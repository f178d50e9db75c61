"""Kubernetes settings of the GPU steps, without importing dagster-k8s.

Every asset whose step declares ``pool="gpu"`` (today ``gold/capture_shards``) gets the
``dagster-k8s/config`` op tag: a GPU resource request/limit, a node selector and a
toleration for tainted GPU nodes. ``k8s_job_executor`` reads that tag per step, so the
GPU step runs in its own pod on a GPU node while the CPU steps run on cheap nodes.

Tunable by environment (read when the definitions load):

=============================  ==========================================
TRACELAKE_K8S_GPUS_PER_STEP    GPUs per GPU step (default 1)
TRACELAKE_K8S_GPU_RESOURCE     extended resource name (nvidia.com/gpu)
TRACELAKE_K8S_GPU_NODE_LABEL   node selector ``key=value`` (empty: none)
=============================  ==========================================
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_POOL = "gpu"


def gpu_k8s_config(gpus: int | None = None) -> dict[str, Any]:
    gpus = int(gpus if gpus is not None else os.environ.get("TRACELAKE_K8S_GPUS_PER_STEP", "1"))
    resource = os.environ.get("TRACELAKE_K8S_GPU_RESOURCE", "nvidia.com/gpu")
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
    label = os.environ.get("TRACELAKE_K8S_GPU_NODE_LABEL", "")
    if "=" in label:
        k, v = label.split("=", 1)
        cfg["pod_spec_config"]["node_selector"] = {k: v}
    return cfg


def cpu_step_k8s_config() -> dict[str, Any]:
    """Default pod of every other step (executor-wide ``step_k8s_config``)."""
    return {"container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"},
                                               "limits": {"memory": "8Gi"}}}}


def _with_op_tags(a: dg.AssetsDefinition, tags: Mapping[str, Any]) -> dg.AssetsDefinition:
    """The same asset whose op carries extra tags (step tags are op tags, not asset tags)."""
    op = a.node_def
    assert isinstance(op, dg.OpDefinition), f"{a.keys}: not a single-op asset"
    new_op = dg.OpDefinition.dagster_internal_init(
        name=op.name,
        ins={d.name: dg.In.from_definition(d) for d in op.input_defs},
        outs={d.name: dg.Out.from_definition(d) for d in op.output_defs},
        compute_fn=op.compute_fn,
        config_schema=op.config_schema,
        description=op.description,
        tags={**op.tags, **tags},
        required_resource_keys=op.required_resource_keys,
        code_version=op.version,
        retry_policy=op.retry_policy,
        version=None,
        pool=op.pool,
    )
    return dg.AssetsDefinition.dagster_internal_init(**{**a.get_attributes_dict(), "node_def": new_op})


def gpu_asset_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    keys = []
    for a in defs.assets or []:
        if isinstance(a, dg.AssetsDefinition) and isinstance(a.node_def, dg.OpDefinition) \
                and a.node_def.pool == GPU_POOL:
            keys.extend(a.keys)
    return keys


def with_gpu_pods(defs: dg.Definitions, gpus: int | None = None) -> dg.Definitions:
    """``defs`` with the ``dagster-k8s/config`` GPU tag on every gpu-pool step."""
    cfg = gpu_k8s_config(gpus)
    assets = []
    for a in defs.assets or []:
        if isinstance(a, dg.AssetsDefinition) and isinstance(a.node_def, dg.OpDefinition) \
                and a.node_def.pool == GPU_POOL:
            a = _with_op_tags(a, {K8S_CONFIG_TAG: cfg})
        assets.append(a)
    return dg.Definitions(
        assets=assets,
        asset_checks=list(defs.asset_checks or []),
        jobs=list(defs.jobs or []),
        schedules=list(defs.schedules or []),
        sensors=list(defs.sensors or []),
        resources=dict(defs.resources or {}),
        executor=defs.executor,
        loggers=dict(defs.loggers or {}),
        metadata=dict(defs.metadata or {}),
    )
