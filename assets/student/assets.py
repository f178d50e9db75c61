"""Thin Dagster assets of the student family: session_split → student_runs → student_evals,
and capture shards → draft_heads. Training and evaluation run in the ``gpu`` pool, on the
verifier resource's device and dtype (CUDA when present, else CPU), and only when asked
(the ``student`` job, ``tracelake train`` / ``tracelake eval``): they are not refreshed by
the datasets automation.
"""


import json
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from assets.capture.assets import GPU_OP_TAGS
from assets.capture.tables import CAPTURE_ASSET_KEY, PROMPT_POOL
from assets.checks import table_check
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.tables import RAG_PLAYBOOKS
from assets.student import report
from assets.student.artifacts import artifact_uri, download_dir, upload_dir
from assets.student.pipeline import build_data, compute_split, data_versions, eval_answers, summary_json
from assets.student.split import TRAIN, check_no_leak
from assets.student.tables import (DRAFT_HEADS, DRAFT_VERSION, RECIPE_VERSION, SESSION_SPLIT, SPLIT_VERSION,
                                   STUDENT_EVALS, STUDENT_RUNS, TABLES)
from resources.lake import DeltaLake
from resources.verifier import VerifierResource

GROUP = "student"
MANUAL = {"tracelake/manual": "true"}  # not refreshed by the datasets automation
RAG_TASKS = Path(__file__).resolve().parents[1] / "rag" / "sample_tasks.jsonl"


# --------------------------------------------------------------------------- split
class SplitConfig(dg.Config):
    eval_share: float = 0.3
    seed: str = "tracelake"


def read_split(lake: DeltaLake) -> list[dict]:
    if not lake.exists(SESSION_SPLIT):
        raise RuntimeError("gold/session_split is missing: materialize it first (tracelake train does)")
    return lake.read(SESSION_SPLIT).to_pylist()


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
    lora_r: int = 8
    lora_layers: int = 8  # top decoder layers with adapters (0 = all)
    batch_size: int = 4
    max_prompt_tokens: int = 64
    max_answer_tokens: int = 40
    min_pairs: int = 16  # fewer real pairs than this → context-mismatch pairs are mined (labelled)
    mine_pairs: bool = True

    def hyper(self):
        from assets.student.train import StudentHyper

        return StudentHyper(seed=self.seed, stages=tuple(self.stages), sft_max_steps=self.sft_max_steps,
                            dpo_max_steps=self.dpo_max_steps, kto_max_steps=self.kto_max_steps,
                            sft_lr=self.sft_lr, dpo_lr=self.dpo_lr, beta=self.beta, lora_r=self.lora_r,
                            lora_alpha=2 * self.lora_r, lora_layers=self.lora_layers, batch_size=self.batch_size,
                            max_prompt_tokens=self.max_prompt_tokens, max_answer_tokens=self.max_answer_tokens)


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
    max_answers: int = 16
    max_pairs: int = 12
    max_tool_prompts: int = 3
    max_rag_tasks: int = 3
    rag_tasks_path: str = ""  # default: the rag family's sample tasks


def evaluate_run(lake: DeltaLake, run: dict, device: str, dtype: str, cfg: StudentEvalConfig,
                 threads: int | None = None, log=print) -> dict:
    """Evaluate one student_runs row on the held-out sessions (base vs trained) → an evals row."""
    import torch

    from assets.rag.runtime import read_tasks
    from assets.student.evaluate import EvalSettings, evaluate, rag_gate_runner
    from assets.student.train import load_trained

    if threads and device == "cpu":
        torch.set_num_threads(int(threads))
    hp = json.loads(run["hyperparameters"])
    with tempfile.TemporaryDirectory(prefix="tracelake-student-eval-") as tmp:
        local = download_dir(lake, run["artifact_uri"], tmp)
        tok, model = load_trained(run["base_model"], local, device, dtype)
    split = read_split(lake)
    check_no_leak(json.loads(run["metrics"]).get("train_sessions", []), split)
    d = build_data(lake, split, tok, max_prompt_tokens=hp["max_prompt_tokens"],
                   max_answer_tokens=hp["max_answer_tokens"])
    tasks = read_tasks(cfg.rag_tasks_path or RAG_TASKS)[: cfg.max_rag_tasks]
    s = EvalSettings(max_answers=cfg.max_answers, max_pairs=cfg.max_pairs, max_tool_prompts=cfg.max_tool_prompts,
                     max_rag_tasks=cfg.max_rag_tasks, beta=hp.get("beta", 0.1))
    t0 = time.perf_counter()
    ev = evaluate(model, tok, eval_answers(d), d.pairs_eval, d.tools_eval,
                  rag_gate_runner(lake, tasks) if tasks else None, s, progress=log)
    keys = ("ll_base", "ll_trained", "ll_gain", "pair_acc_base", "pair_acc_trained", "reward_acc", "reward_margin",
            "tool_valid_base", "tool_valid_trained", "rag_pass_base", "rag_pass_trained")
    return {"eval_id": f"{run['run_id']}:{uuid.uuid4().hex[:8]}", "run_id": run["run_id"],
            "base_model": run["base_model"], "seed": run.get("seed"), "n_eval_sessions": d.counts["eval_sessions"],
            "n_answers": ev["n_answers"], "n_pairs": ev["n_pairs"], "pair_source": d.pair_source,
            "n_tool_prompts": ev.get("n_tool_prompts"), "n_rag_tasks": ev.get("n_rag_tasks"),
            **{k: ev.get(k) for k in keys},
            "details": summary_json({k: v for k, v in ev.items() if k not in keys} | {"data": d.counts}),
            "eval_seconds": round(time.perf_counter() - t0, 1), "created_at": datetime.now(timezone.utc)}


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
    draft_vocab: int = 2048
    unroll: int = 2
    chain: int = 4
    lr: float = 2e-3
    eval_share: float = 0.3  # for prompts of no known session (prompt files); sessions follow session_split
    split_seed: str = "tracelake"


def draft_run(lake: DeltaLake, verifier: VerifierResource, cfg: DraftHeadConfig, log=print,
              run_id: str | None = None, artifact_root: str | None = None) -> tuple[dict, dict]:
    """Train and evaluate a draft head on the verifier's capture table → (draft_heads row, eval)."""
    from assets.capture.reader import load_table
    from assets.capture.shards import open_shard_table
    from assets.student.draft import (Bigram, DraftHyper, evaluate_draft, save_head, sequences_from_capture,
                                      split_prompts, train_head)

    device = verifier.resolved_device()
    verifier_id, dtype = verifier.identity()
    spec, dt, _props = open_shard_table(lake, verifier_id, dtype)
    table, props = load_table(lake, verifier_id, dtype)
    seqs = sequences_from_capture(table, props)
    src = {}
    for spec_, key in ((SFT_EXAMPLES, "example_id"), (NORMALIZED_PAIRS, "pair_id")):
        if lake.exists(spec_):
            src.update({r[key]: r["session_key"] for r in lake.read(spec_, columns=[key, "session_key"]).to_pylist()})
    pool = lake.read(PROMPT_POOL, columns=["prompt_id", "source_id"]).to_pylist() if lake.exists(PROMPT_POOL) else []
    session_of = {r["prompt_id"]: src[r["source_id"]] for r in pool if r["source_id"] in src}
    split = read_split(lake) if lake.exists(SESSION_SPLIT) else []
    tr, ev = split_prompts(seqs.prompt_ids, session_of, split, cfg.eval_share, cfg.split_seed)
    if not tr or not ev:
        raise RuntimeError(f"draft head needs train and eval prompts (got {len(tr)} / {len(ev)})")
    train, test = seqs.select(tr), seqs.select(ev)
    hp = DraftHyper(seed=cfg.seed, epochs=cfg.epochs, draft_vocab=cfg.draft_vocab, unroll=cfg.unroll,
                    chain=cfg.chain, lr=cfg.lr)
    v = verifier.load()
    emb, lm = v.model.get_input_embeddings().weight, v.model.get_output_embeddings().weight
    head, tm = train_head(train, emb, lm, hp, device=device, progress=log)
    result = evaluate_draft(head, Bigram(train), test, hp.chain, device=device)
    run_id = run_id or "draft_" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "_" + uuid.uuid4().hex[:6]
    if artifact_root:  # e.g. a benchmark that leaves the lake untouched
        uri = f"{artifact_root}/{run_id}"
        save_head(head, hp, {**tm, **result}, uri)
    else:
        uri = artifact_uri(lake, "draft_heads", run_id)
        with tempfile.TemporaryDirectory() as tmp:
            save_head(head, hp, {**tm, **result}, tmp)
            upload_dir(lake, tmp, uri)
    row = {"run_id": run_id, "shard_table": spec.path, "shard_version": dt.version(), "verifier_id": verifier_id,
           "device": device, "seed": cfg.seed, "draft_version": DRAFT_VERSION,
           "hyperparameters": summary_json(tm["hyperparameters"]), "n_train_prompts": len(tr),
           "n_eval_prompts": len(ev), "n_train_tokens": train.n_tokens, "n_eval_positions": result["n_positions"],
           "top1_agreement": result.get("top1_agreement"),
           "baseline_top1_agreement": result.get("baseline_top1_agreement"),
           "accept_len": result.get("accept_len"), "baseline_accept_len": result.get("baseline_accept_len"),
           "chain": hp.chain, "artifact_uri": uri, "metrics": summary_json({**tm, **result}),
           "train_seconds": tm["train_seconds"], "created_at": datetime.now(timezone.utc)}
    return row, result


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
