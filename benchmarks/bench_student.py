"""Does the lake's data train anything? Student and draft head against same-run baselines.

On a lake built by ``tracelake demo`` (read-only here: the split is computed in memory,
artifacts go to a temporary directory), for each seed:

* student: TRL SFT → DPO with a LoRA adapter from SmolLM2-135M (the recipe defaults of the
  ``gold/student_runs`` asset), then base vs trained on the held-out sessions — mean
  per-token log-likelihood of the chosen answers, pair accuracy (length-normalized
  log-likelihood of chosen > rejected, same rule for both), implicit-reward accuracy
  (β·log π/π_base margin > 0), tool-call validity and rag gate pass rate. The base model's
  figures do not depend on the seed and are measured once.
* draft head: EAGLE-style head on the capture table of the verifier (``--draft-seeds``
  seeds), against a bigram model of the same training rows: top-1 agreement with the
  verifier and accepted tokens per 4-token chain on held-out prompts.

    TRACELAKE_LAKE_ROOT=/path/to/demo/lake .venv/bin/python benchmarks/bench_student.py
    .venv/bin/python benchmarks/bench_student.py --lake /tmp/demo/lake --seeds 0 1 2 --draft-seeds 1

Ends with ``RESULT student_ll_gain=… pair_acc_base=… pair_acc_trained=… draft_accept_len=…
baseline_accept_len=…`` (means over the seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs, nd=4):
    m, s = mean_sd(xs)
    return "n/a" if m is None else f"{m:.{nd}f} ± {s:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=os.environ.get("TRACELAKE_LAKE_ROOT", "./lakehouse"))
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--draft-seeds", type=int, default=1, help="how many of --seeds also train a draft head")
    ap.add_argument("--eval-share", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--rag-tasks", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe", default="{}", help='JSON overrides of the gold/student_runs config, e.g. '
                    '\'{"stages": ["dpo"], "dpo_max_steps": 12}\'')
    ap.add_argument("--verifier-id", default=None, help="capture table id (default: the verifier's own)")
    args = ap.parse_args(argv)

    import torch

    from assets.rag.runtime import read_tasks
    from assets.student.assets import RAG_TASKS, DraftHeadConfig, StudentTrainConfig, draft_run
    from assets.student.evaluate import EvalSettings, evaluate, rag_gate_runner
    from assets.student.pipeline import build_data, compute_split, eval_answers
    from assets.student.train import attach_reference, load_base, train_student
    from resources.lake import DeltaLake
    from resources.verifier import VerifierResource

    torch.set_num_threads(args.threads)
    lake = DeltaLake(root=args.lake)
    t_all = time.perf_counter()
    split = compute_split(lake, args.eval_share, "tracelake")
    if not split:
        print(f"no training tables under {args.lake}: run `tracelake demo` first", file=sys.stderr)
        return 2
    recipe = json.loads(args.recipe)
    cfg = StudentTrainConfig(base_model=args.base_model, **recipe)
    hp0 = cfg.hyper()
    tok, _ = load_base(args.base_model, args.device, "float32")
    data = build_data(lake, split, tok, max_prompt_tokens=hp0.max_prompt_tokens,
                      max_answer_tokens=hp0.max_answer_tokens, min_pairs=cfg.min_pairs)
    print(f"lake {args.lake}: {data.counts}\nrecipe {hp0.to_json()}")
    if data.counts["real_pairs_eval"] < 10:
        print(f"NOTE: only {data.counts['real_pairs_eval']} real preference pairs in the held-out sessions; "
              f"pair accuracy also counts {data.counts['mined_pairs_eval']} mined context-mismatch pairs")
    tasks = read_tasks(RAG_TASKS)[: args.rag_tasks]
    rag = rag_gate_runner(lake, tasks) if tasks else None
    s = EvalSettings(max_rag_tasks=len(tasks))
    cache: dict = {}
    per_seed = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        hp = StudentTrainConfig(base_model=args.base_model, **{**recipe, "seed": seed}).hyper()
        with tempfile.TemporaryDirectory() as tmp:
            res = train_student(args.base_model, data.sft_train, data.pairs_train, data.kto_train, hp, tmp,
                                device=args.device, base=load_base(args.base_model, args.device, "float32"),
                                progress=lambda m: None)
            attach_reference(res.model, tmp)  # DPO's reference (the SFT model), for its implicit reward
        train_s = time.perf_counter() - t0
        ev = evaluate(res.model, res.tokenizer, eval_answers(data), data.pairs_eval, data.tools_eval, rag, s,
                      progress=lambda m: None, cache=cache)
        total_s = time.perf_counter() - t0
        row = {"seed": seed, "train_s": round(train_s, 1), "eval_s": ev["eval_seconds"], "total_s": round(total_s, 1),
               **{k: ev.get(k) for k in ("ll_base", "ll_trained", "ll_gain", "pair_acc_base", "pair_acc_trained",
                                         "reward_acc", "reward_reference", "reward_acc_vs_base", "pair_acc_real_base",
                                         "pair_acc_real_trained", "reward_acc_real",
                                         "n_real_pairs", "tool_valid_base", "tool_valid_trained", "rag_pass_base",
                                         "rag_pass_trained", "n_answers", "n_pairs", "pair_acc_by_kind")},
               "dpo": res.metrics["stages"].get("dpo", {})}
        per_seed.append(row)
        print(json.dumps(row, default=str))
        del res

    drafts = []
    verifier = VerifierResource(device=args.device, cpu_threads=args.threads, verifier_id=args.verifier_id)
    for seed in args.seeds[: args.draft_seeds]:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            _row, r = draft_run(DeltaLake(root=args.lake), verifier, DraftHeadConfig(seed=seed), log=lambda m: None,
                                run_id=f"bench_{seed}", artifact_root=tmp)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        drafts.append(r)
        print(json.dumps({"draft_seed": seed, **{k: r[k] for k in ("n_positions", "top1_agreement",
                          "baseline_top1_agreement", "accept_len", "baseline_accept_len", "max_scorable_accept_len",
                          "seconds")}}))

    col = lambda k: [r[k] for r in per_seed]  # noqa: E731
    print(f"\nseeds {args.seeds}  held-out: {per_seed[0]['n_answers']} answers, {per_seed[0]['n_pairs']} pairs "
          f"({data.pair_source}), {data.counts['eval_sessions']} sessions")
    print(f"  chosen-answer log-likelihood / token: base {fmt(col('ll_base'))}  trained {fmt(col('ll_trained'))}  "
          f"gain {fmt(col('ll_gain'))}")
    print(f"  pair accuracy: base {fmt(col('pair_acc_base'), 3)}  trained {fmt(col('pair_acc_trained'), 3)}  "
          f"implicit-reward accuracy {fmt(col('reward_acc'), 3)} (reference: {per_seed[0].get('reward_reference')}"
          + (f"; against the base {fmt(col('reward_acc_vs_base'), 3)})" if per_seed[0].get("reward_acc_vs_base")
             is not None else ")"))
    if per_seed[0].get("n_real_pairs"):
        print(f"  on the {per_seed[0]['n_real_pairs']} real (not mined) pairs: pair accuracy base "
              f"{fmt(col('pair_acc_real_base'), 3)}  trained {fmt(col('pair_acc_real_trained'), 3)}  "
              f"implicit-reward accuracy {fmt(col('reward_acc_real'), 3)}")
    for kind, k in per_seed[0].get("pair_acc_by_kind", {}).items():
        print(f"    {kind} pairs ({k['n']}): pair accuracy base {k['base']:.3f}  trained "
              f"{fmt([r['pair_acc_by_kind'][kind]['trained'] for r in per_seed], 3)}")
    print(f"  tool-call validity: base {fmt(col('tool_valid_base'), 2)}  trained {fmt(col('tool_valid_trained'), 2)}")
    print(f"  rag gate pass: base {fmt(col('rag_pass_base'), 2)}  trained {fmt(col('rag_pass_trained'), 2)}")
    print(f"  per seed train+eval: {fmt(col('total_s'), 1)} s (the first includes the base model's evaluation)")
    if drafts:
        print(f"  draft head top-1 agreement {fmt([d['top1_agreement'] for d in drafts], 3)} vs bigram "
              f"{fmt([d['baseline_top1_agreement'] for d in drafts], 3)}; accepted per 4-chain "
              f"{fmt([d['accept_len'] for d in drafts], 3)} vs bigram {fmt([d['baseline_accept_len'] for d in drafts], 3)}")
    print(f"  wall time {time.perf_counter() - t_all:.0f} s")
    m = lambda xs: mean_sd(xs)[0]  # noqa: E731
    dm = lambda k: m([d[k] for d in drafts]) if drafts else float("nan")  # noqa: E731
    print(f"RESULT student_ll_gain={m(col('ll_gain')):.4f} pair_acc_base={m(col('pair_acc_base')):.3f} "
          f"pair_acc_trained={m(col('pair_acc_trained')):.3f} draft_accept_len={dm('accept_len'):.3f} "
          f"baseline_accept_len={dm('baseline_accept_len'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
