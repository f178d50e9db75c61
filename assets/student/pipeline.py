"""Lake → split → training rows → train → evaluate, without Dagster (assets, CLI and the
benchmark all call these)."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from assets.capture.tables import PROMPT_POOL
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.student import data as D
from assets.student.artifacts import artifact_uri, download_dir, upload_dir
from assets.student.split import EVAL, TRAIN, check_no_leak, partition_rows, split_sessions
from assets.student.tables import DRAFT_VERSION, SESSION_SPLIT
from resources.lake import DeltaLake

if TYPE_CHECKING:
    from resources.verifier import VerifierResource

RAG_TASKS = Path(__file__).resolve().parents[1] / "rag" / "sample_tasks.jsonl"

SOURCES = {"sft": SFT_EXAMPLES, "pairs": NORMALIZED_PAIRS, "kto": KTO_EXAMPLES}


def read_source(lake: DeltaLake, spec) -> list[dict]:
    return lake.read(spec).to_pylist() if lake.exists(spec) else []


def data_versions(lake: DeltaLake, specs=(SFT_EXAMPLES, NORMALIZED_PAIRS, KTO_EXAMPLES, SESSION_SPLIT)) -> dict:
    return {s.path: lake.version(s) for s in specs}


def compute_split(lake: DeltaLake, eval_share: float, seed: str) -> list[dict]:
    rows = {name: read_source(lake, spec) for name, spec in SOURCES.items()}
    counts: dict[str, dict[str, int]] = {}
    for name, rs in rows.items():
        for r in rs:
            c = counts.setdefault(r["session_key"], {})
            c[name] = c.get(name, 0) + 1
    return split_sessions(counts.keys(), eval_share, seed, counts)


@dataclass
class StudentData:
    sft_train: list[dict] = field(default_factory=list)
    pairs_train: list[dict] = field(default_factory=list)
    kto_train: list[dict] = field(default_factory=list)
    answers_eval: list[dict] = field(default_factory=list)
    pairs_eval: list[dict] = field(default_factory=list)
    tools_eval: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def pair_source(self) -> str:
        srcs = sorted({p["pair_source"] for p in self.pairs_eval})
        return "+".join(srcs) or "none"


def build_data(lake: DeltaLake, split_rows: Sequence[Mapping], tok, *, max_prompt_tokens: int = 64,
               max_answer_tokens: int = 40, min_pairs: int = 16, mine: bool = True) -> StudentData:
    """Training rows from train sessions only; evaluation rows from eval sessions only.

    When a side holds fewer than ``min_pairs`` real preference pairs and ``mine`` is on,
    context-mismatch pairs mined from that side's own SFT rows fill it up (labelled)."""
    s = D.RenderSettings(max_prompt_tokens=max_prompt_tokens, max_answer_tokens=max_answer_tokens)
    count = D.token_counter(tok)
    out = StudentData()
    c = out.counts
    sft_tr, sft_ev, sft_unk = partition_rows(read_source(lake, SFT_EXAMPLES), split_rows)
    pr_tr, pr_ev, pr_unk = partition_rows(read_source(lake, NORMALIZED_PAIRS), split_rows)
    kto_tr, _kto_ev, kto_unk = partition_rows(read_source(lake, KTO_EXAMPLES), split_rows)
    c["unsplit_rows_skipped"] = len(sft_unk) + len(pr_unk) + len(kto_unk)
    out.sft_train, c["sft_train_dropped"] = D.build_rows(sft_tr, D.sft_example, count, s)
    out.answers_eval, c["sft_eval_dropped"] = D.build_rows(sft_ev, D.sft_example, count, s)
    out.pairs_train, c["pairs_train_dropped"] = D.build_rows(pr_tr, D.pair_example, count, s)
    out.pairs_eval, c["pairs_eval_dropped"] = D.build_rows(pr_ev, D.pair_example, count, s)
    out.kto_train, c["kto_train_dropped"] = D.build_rows(kto_tr, D.kto_example, count, s)
    c["real_pairs_train"], c["real_pairs_eval"] = len(out.pairs_train), len(out.pairs_eval)
    if mine and len(out.pairs_train) < min_pairs:
        out.pairs_train += D.mined_pairs(out.sft_train, min_pairs - len(out.pairs_train))
    if mine and len(out.pairs_eval) < min_pairs:
        out.pairs_eval += D.mined_pairs(out.answers_eval, min_pairs - len(out.pairs_eval))
    c["mined_pairs_train"] = len(out.pairs_train) - c["real_pairs_train"]
    c["mined_pairs_eval"] = len(out.pairs_eval) - c["real_pairs_eval"]
    # chosen answers of held-out real pairs count as held-out answers too
    out.tools_eval = [r for r in out.answers_eval if r.get("has_tool_call") and D.tool_names(r.get("tools"))]
    c.update(sft_train=len(out.sft_train), answers_eval=len(out.answers_eval), pairs_train=len(out.pairs_train),
             pairs_eval=len(out.pairs_eval), kto_train=len(out.kto_train), tools_eval=len(out.tools_eval),
             train_sessions=sum(r["split"] == TRAIN for r in split_rows),
             eval_sessions=sum(r["split"] == EVAL for r in split_rows))
    return out


def eval_answers(d: StudentData) -> list[dict]:
    """Held-out answers scored for log-likelihood: SFT answers + chosen side of real pairs."""
    real = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in d.pairs_eval
            if p["pair_source"] == "normalized_pairs"]
    return list(d.answers_eval) + real


def summary_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def read_split(lake: DeltaLake) -> list[dict]:
    if not lake.exists(SESSION_SPLIT):
        raise RuntimeError("gold/session_split is missing: materialize it first (tracelake train does)")
    return lake.read(SESSION_SPLIT).to_pylist()


def evaluate_run(lake: DeltaLake, run: dict, device: str, dtype: str, cfg: Any,
                 threads: int | None = None, log=print) -> dict:
    """Evaluate one student_runs row on the held-out sessions (base vs trained) → an evals row.
    ``cfg``: the fields of the student_evals config (max_answers, max_pairs, ...)."""
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
                     tool_max_new_tokens=hp["max_answer_tokens"] + 8, max_rag_tasks=cfg.max_rag_tasks, beta=hp.get("beta", 0.1))
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


def draft_run(lake: DeltaLake, verifier: VerifierResource, cfg: Any, log=print,
              run_id: str | None = None, artifact_root: str | None = None) -> tuple[dict, dict]:
    """Train and evaluate a draft head on the verifier's capture table → (draft_heads row, eval).
    ``cfg``: the fields of the draft_heads config (seed, epochs, ...)."""
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
    hp = DraftHyper(seed=cfg.seed, epochs=cfg.epochs, min_steps=cfg.min_steps, draft_vocab=cfg.draft_vocab, unroll=cfg.unroll,
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
