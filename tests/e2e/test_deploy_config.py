"""The execution settings of docs/operations.md load: the dagster.yaml pool limits, the GPU
pod tags of the Kubernetes variant, and deploy/k8s/definitions.py itself (with dagster-k8s)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import dagster as dg
import pytest

from testsupport.e2e import ROOT

DEPLOY = ROOT / "deploy"


def _steps(job: dg.JobDefinition):
    from dagster._core.execution.api import create_execution_plan

    return create_execution_plan(job).steps


def test_dagster_yaml_limits_the_gpu_pool(tmp_path):
    shutil.copyfile(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.default_pool_limit == 1
        assert cfg.pool_config.pool_granularity.value == "op"
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.limit == 1 and info.using_default_limit, info
        # what `dagster instance concurrency set gpu 2` does on a 2-GPU machine
        instance.event_log_storage.set_concurrency_slots("gpu", 2)
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.limit == 2 and not info.using_default_limit, info


def test_gpu_steps_get_k8s_gpu_pods():
    from dagster_project.definitions import DATASETS_JOB, defs
    from deploy.k8s.gpu import K8S_CONFIG_TAG, gpu_asset_keys

    gpu_keys = set(gpu_asset_keys(defs))
    if not gpu_keys:
        pytest.skip("no asset declares pool='gpu' in definitions.py yet")
    k8s_defs = defs
    tagged = set()
    for job_name in {j.name for j in defs.jobs} | {DATASETS_JOB}:
        for step in _steps(k8s_defs.resolve_job_def(job_name)):
            cfg = step.tags.get(K8S_CONFIG_TAG)
            cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
            if step.pool == "gpu":
                assert cfg, step.key
                res = cfg["container_config"]["resources"]
                assert res["limits"]["nvidia.com/gpu"] == "1" == res["requests"]["nvidia.com/gpu"]
                tagged.add(step.key)
            else:
                assert cfg is None, f"{step.key} is not a GPU step but got a GPU pod"
    assert tagged


def test_k8s_definitions_load():
    pytest.importorskip(
        "dagster_k8s",
        reason="dagster-k8s is not installed (pip install 'dagster-k8s>=0.29.27,<0.30') - "
               "deploy/k8s/definitions.py not loaded",
    )
    spec = importlib.util.spec_from_file_location("tracelake_k8s_definitions", DEPLOY / "k8s" / "definitions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dg.Definitions.validate_loadable(mod.defs)
    assert mod.defs.executor.name == "tracelake_k8s"
    # the ingest job's CPU chain runs in its run pod (one process); the datasets job's steps
    # each get a pod, the GPU step on a GPU node
    assert mod.defs.resolve_job_def("ingest_sessions").executor_def.name == "in_process"
    assert mod.defs.resolve_job_def("build_datasets").executor_def.name == "tracelake_k8s"
