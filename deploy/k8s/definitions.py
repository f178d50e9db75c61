"""tracelake on Kubernetes: dataset steps in their own pods, GPU steps on GPU nodes.

The ``ingest_sessions`` job keeps its in-process executor: a sensor tick's run is one pod
(the run pod K8sRunLauncher starts) doing the whole CPU chain; every other job runs each
step in its own pod (the ``gpu``-pool capture step on a GPU node).

    dagster code-server start -f deploy/k8s/definitions.py      # in the user-code image
    dg check defs -f deploy/k8s/definitions.py                 # (or: python -c "import ...")

Needs ``pip install 'dagster-k8s>=0.29.27,<0.30'`` and an instance whose run launcher
is ``K8sRunLauncher`` (the Dagster Helm chart's default; see deploy/k8s/values.yaml).
The lake must be object storage (``TRACELAKE_LAKE_ROOT=s3://…`` / ``gs://…`` / ``az://…``)
since steps run in different pods; credentials come in as env vars from a Secret.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from dagster_k8s import k8s_job_executor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `deploy` importable from a file target

from deploy.k8s.gpu import cpu_step_k8s_config  # noqa: E402
from resources import settings  # noqa: E402

K8S_EXECUTOR = k8s_job_executor.configured(
    {
        "job_namespace": settings.k8s_namespace(),
        # every step pod: the lake / teacher credentials from one Secret
        "env_secrets": [settings.k8s_env_secret()],
        "step_k8s_config": cpu_step_k8s_config(),
        # pods of one run at once (GPU steps are further limited by the `gpu` pool)
        "max_concurrent": settings.k8s_max_pods_per_run(),
    },
    name="tracelake_k8s",
)



def build_defs() -> dg.Definitions:
    # Built in a function: a module that Dagster loads may hold only ONE Definitions object.
    from dagster_project import definitions as base

    gpu = base.defs  # GPU steps carry their dagster-k8s/config op tag (resources.verifier)
    return dg.Definitions(
        assets=list(gpu.assets or []),
        asset_checks=list(gpu.asset_checks or []),
        jobs=list(gpu.jobs or []),
        schedules=list(gpu.schedules or []),
        sensors=list(gpu.sensors or []),
        resources=dict(gpu.resources or {}),
        executor=K8S_EXECUTOR,
    )


defs = build_defs()
