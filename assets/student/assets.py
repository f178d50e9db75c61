"""Thin Dagster assets of the student family: session_split → student_runs → student_evals,
and capture shards → draft_heads. Training and evaluation run in the ``gpu`` pool, on the
verifier resource's device and dtype (CUDA when present, else CPU), and only when asked
(the ``student`` job, ``tracelake train`` / ``tracelake eval``): they are not refreshed by
the datasets automation.
"""


import tempfile
import uuid
from datetime import datetime, timezone

import dagster as dg

from assets.capture.assets import GPU_OP_TAGS
from assets.capture.tables import CAPTURE_ASSET_KEY, PROMPT_POOL
from assets.checks import table_check
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.tables import RAG_PLAYBOOKS
from assets.student import report
from assets.student.artifacts import artifact_uri, upload_dir
from assets.student.evaluate import EvalSettings
from assets.student.pipeline import (RAG_TASKS, build_data, compute_split, data_versions, draft_run,  # noqa: F401
                                     evaluate_run, read_split, summary_json)
from assets.student.split import TRAIN
from assets.student.tables import (DRAFT_HEADS, RECIPE_VERSION, SESSION_SPLIT, SPLIT_VERSION,
                                   STUDENT_EVALS, STUDENT_RUNS, TABLES)
from resources.lake import DeltaLake
from resources.verifier import VerifierResource

GROUP = "student"
MANUAL = {"tracelake/manual": "true"}  # not refreshed by the datasets automation


# --------------------------------------------------------------------------- split
class SplitConfig(dg.Config):
    eval_share: float = 0.3
    seed: str = "tracelake"


@dg.asset(key=SESSION_SPLIT.asset_key, group_name=GROUP, kinds={"delta", "gold"},
          deps=[SFT_EXAMPLES.asset_key, NORMALIZED_PAIRS.asset_key, KTO_EXAMPLES.asset_key],
          description=SESSION_SPLIT.description)
def session_split(context: dg.AssetExecutionContext, config: SplitConfig, lake: DeltaLake):
    rows = compute_split(lake, config.eval_share, config.seed)
    now = datetime.now(timezone.utc)
    for r in rows:
        r["created_at"] = now
    res = lake.overwrite(SESSION_SPLIT, rows)
    return dg.MaterializeResult(metadata=res.metadata() | report.SplitReport(
        rows, config.eval_share, config.seed, SPLIT_VERSION).metadata())


# --------------------------------------------------------------------------- training
class StudentTrainConfig(dg.Config):
    base_model: str = "smollm2-135m"  # the embedded model, an HF directory, or a .gguf
    seed: int = 0
    stages: list[str] = ["sft", "dpo"]  # add "kto" to train on the KTO examples too
    sft_max_steps: int = 10
    dpo_max_steps: int = 6
    kto_max_steps: int = 6
    sft_lr: float = 5e-4
    dpo_lr: float = 1e-4
    beta: float = 0.1
    dpo_sft_weight: float = 0.0  # > 0: DPO loss + this × NLL of the chosen answer
    sft_on_chosen: bool = False  # SFT also on the chosen answers of the real training pairs
    lora_r: int = 8
    lora_layers: int = 8  # top decoder layers with adapters (0 = all)
    batch_size: int = 4
    max_prompt_tokens: int = 64
    max_answer_tokens: int = 64
    min_pairs: int = 16  # fewer real pairs than this → context-mismatch pairs are mined (labelled)
    mine_pairs: bool = True

    def hyper(self):
        """The training hyperparameters: this config's fields of the same names, LoRA alpha 2 x r."""
        from dataclasses import fields

        from assets.student.train import StudentHyper

        mine = self.model_dump()
        return StudentHyper(**{f.name: mine[f.name] for f in fields(StudentHyper) if f.name in mine},
                            lora_alpha=2 * self.lora_r)


def _threads(verifier: VerifierResource, device: str) -> int | None:
    return verifier.cpu_threads if device == "cpu" else None


@dg.asset(key=STUDENT_RUNS.asset_key, group_name=GROUP, kinds={"pytorch", "delta", "gold"}, pool="gpu",
          op_tags=GPU_OP_TAGS, tags=MANUAL, description=STUDENT_RUNS.description,
          deps=[SESSION_SPLIT.asset_key, SFT_EXAMPLES.asset_key, NORMALIZED_PAIRS.asset_key, KTO_EXAMPLES.asset_key])
def student_runs(context: dg.AssetExecutionContext, config: StudentTrainConfig, lake: DeltaLake,
                 verifier: VerifierResource):
    from assets.student.train import load_base, train_student

    device, dtype = verifier.resolved_device(), verifier.resolved_dtype()
    hp = config.hyper()
    split = read_split(lake)
    tok, model = load_base(config.base_model, device, dtype)
    d = build_data(lake, split, tok, max_prompt_tokens=hp.max_prompt_tokens, max_answer_tokens=hp.max_answer_tokens,
                   min_pairs=config.min_pairs, mine=config.mine_pairs)
    if not d.sft_train and not d.pairs_train:
        raise RuntimeError(f"no training rows from the train sessions ({d.counts})")
    run_id = "student_" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "_" + uuid.uuid4().hex[:6]
    uri = artifact_uri(lake, "runs", run_id)
    with tempfile.TemporaryDirectory(prefix="tracelake-student-") as tmp:
        res = train_student(config.base_model, d.sft_train, d.pairs_train, d.kto_train, hp, tmp, device=device,
                            dtype=dtype, threads=_threads(verifier, device), base=(tok, model),
                            progress=context.log.info)
        nbytes = upload_dir(lake, tmp, uri)
    metrics = {**res.metrics, "data": d.counts, "artifact_bytes": nbytes,
               "train_sessions": sorted({r["session_key"] for r in split if r["split"] == TRAIN})}
    row = {"run_id": run_id, "dagster_run_id": context.run.run_id, "base_model": config.base_model,
           "device": device, "dtype": dtype, "seed": hp.seed, "recipe_version": RECIPE_VERSION,
           "stages": ",".join(hp.stages), "hyperparameters": hp.to_json(),
           "data_versions": summary_json(data_versions(lake)), "split_version": split[0]["split_version"] if split else None,
           "n_train_sessions": d.counts["train_sessions"], "n_sft_rows": len(d.sft_train),
           "n_pair_rows": len(d.pairs_train), "n_kto_rows": len(d.kto_train), "artifact_uri": uri,
           "metrics": summary_json(metrics), "train_seconds": round(res.seconds, 1),
           "created_at": datetime.now(timezone.utc)}
    w = lake.merge(STUDENT_RUNS, [row])
    return dg.MaterializeResult(metadata=w.metadata() | report.TrainReport(row, res.metrics, d.counts).metadata())


# --------------------------------------------------------------------------- evaluation
class StudentEvalConfig(dg.Config):
    run_id: str = ""  # the student_runs row to evaluate ("" = the newest)
    max_answers: int = EvalSettings.max_answers
    max_pairs: int = EvalSettings.max_pairs
    max_tool_prompts: int = EvalSettings.max_tool_prompts
    max_rag_tasks: int = EvalSettings.max_rag_tasks
    rag_tasks_path: str = ""  # default: the rag family's sample tasks


@dg.asset(key=STUDENT_EVALS.asset_key, group_name=GROUP, kinds={"pytorch", "delta", "gold"}, pool="gpu",
          op_tags=GPU_OP_TAGS, tags=MANUAL, description=STUDENT_EVALS.description,
          deps=[STUDENT_RUNS.asset_key, SESSION_SPLIT.asset_key, RAG_PLAYBOOKS.asset_key])
def student_evals(context: dg.AssetExecutionContext, config: StudentEvalConfig, lake: DeltaLake,
                  verifier: VerifierResource):
    runs = lake.read(STUDENT_RUNS).to_pylist() if lake.exists(STUDENT_RUNS) else []
    if config.run_id:
        runs = [r for r in runs if r["run_id"] == config.run_id]
    if not runs:
        raise RuntimeError(f"no student run {config.run_id or ''} in gold/student_runs: train first")
    run = max(runs, key=lambda r: r["created_at"])
    device, dtype = verifier.resolved_device(), verifier.resolved_dtype()
    row = evaluate_run(lake, run, device, dtype, config, _threads(verifier, device), log=context.log.info)
    w = lake.merge(STUDENT_EVALS, [row])
    history = lake.read(STUDENT_EVALS).to_pylist()
    plot = {}
    png_uri = artifact_uri(lake, "reports", "student_evals") + "/student_evals.png"
    with tempfile.TemporaryDirectory() as tmp:
        if report.png(history, f"{tmp}/student_evals.png"):
            upload_dir(lake, tmp, png_uri.rsplit("/", 1)[0])
            plot["plot"] = dg.MetadataValue.path(png_uri)
        else:
            plot["plot_vega_lite"] = dg.MetadataValue.json(report.vega_spec(history))
    return dg.MaterializeResult(metadata=w.metadata() | plot | report.EvalReport(row, device, history).metadata())


# --------------------------------------------------------------------------- draft head
class DraftHeadConfig(dg.Config):
    seed: int = 0
    epochs: int = 2
    min_steps: int = 100  # at least this many optimizer steps (more epochs on a small capture table)
    draft_vocab: int = 2048
    unroll: int = 2
    chain: int = 4
    lr: float = 2e-3
    eval_share: float = 0.3  # for prompts of no known session (prompt files); sessions follow session_split
    split_seed: str = "tracelake"


@dg.asset(key=DRAFT_HEADS.asset_key, group_name=GROUP, kinds={"pytorch", "delta", "gold"}, pool="gpu",
          op_tags=GPU_OP_TAGS, tags=MANUAL, description=DRAFT_HEADS.description,
          deps=[CAPTURE_ASSET_KEY, PROMPT_POOL.asset_key, SESSION_SPLIT.asset_key])
def draft_heads(context: dg.AssetExecutionContext, config: DraftHeadConfig, lake: DeltaLake,
                verifier: VerifierResource):
    row, r = draft_run(lake, verifier, config, log=context.log.info)
    row["dagster_run_id"] = context.run.run_id
    w = lake.merge(DRAFT_HEADS, [row])
    history = sorted(lake.read(DRAFT_HEADS).to_pylist(), key=lambda x: x["created_at"])[-20:]
    return dg.MaterializeResult(metadata=w.metadata() | report.DraftReport(row, r, history).metadata())


STUDENT_JOB = "student"
student_job = dg.define_asset_job(
    STUDENT_JOB,
    selection=dg.AssetSelection.assets(SESSION_SPLIT.asset_key, STUDENT_RUNS.asset_key, STUDENT_EVALS.asset_key,
                                       DRAFT_HEADS.asset_key),
    description="Held-out split → student training (TRL, LoRA) → base-vs-trained evaluation, and the draft head.",
)

ASSETS = [session_split, student_runs, student_evals, draft_heads]
CHECKS = [table_check(SESSION_SPLIT)]

# the verifier resource comes with the capture family (same key, same configuration)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=[student_job])
