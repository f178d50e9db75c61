"""`tracelake train` / `tracelake eval`: the student family's assets from a command line.

    tracelake train [--seed N] [--base-model PATH] [--stages sft,dpo] [--no-draft]
        gold/session_split → gold/student_runs (TRL + LoRA) → gold/draft_heads
    tracelake eval [--run-id ID]
        gold/student_evals: base vs trained on the held-out sessions

Both run the assets in the local Dagster instance (so the runs, metadata and lineage are
in the UI) on the device and dtype of the verifier resource (CUDA when present).
"""

from __future__ import annotations

import json

from dagster_project.instance import local_instance

SPLIT, RUNS, EVALS, DRAFT = "gold__session_split", "gold__student_runs", "gold__student_evals", "gold__draft_heads"


def _run(selection: list[str], ops: dict, log=print):
    import dagster as dg

    from dagster_project.definitions import defs
    from resources import settings

    keys = [dg.AssetKey(s.split("__")) for s in selection]
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        run_config={"ops": {k: {"config": v} for k, v in ops.items() if k in selection},
                    "loggers": {"console": {"config": {"log_level": settings.log_level()}}}},
        instance=local_instance(), asset_selection=keys, raise_on_error=False)
    if not res.success:
        raise SystemExit(f"run {res.run_id} failed")
    return res


def _newest(spec) -> dict | None:
    from resources import settings
    from resources.lake import DeltaLake

    lake = DeltaLake(root=settings.LAKE_ROOT)
    if not lake.exists(spec):
        return None
    rows = lake.read(spec).to_pylist()
    return max(rows, key=lambda r: r["created_at"]) if rows else None


def cmd_train(args) -> int:
    from assets.student.tables import DRAFT_HEADS, STUDENT_RUNS

    ops = {SPLIT: {"eval_share": args.eval_share},
           RUNS: {"seed": args.seed, "base_model": args.base_model, "stages": args.stages.split(","),
                  **({"sft_max_steps": args.sft_steps} if args.sft_steps is not None else {}),
                  **({"dpo_max_steps": args.dpo_steps} if args.dpo_steps is not None else {})},
           DRAFT: {"seed": args.seed}}
    selection = [SPLIT, RUNS] + ([] if args.no_draft else [DRAFT])
    _run(selection, ops)
    run = _newest(STUDENT_RUNS)
    print(f"student run {run['run_id']}: {run['artifact_uri']} ({run['train_seconds']} s)")
    print(json.dumps(json.loads(run["metrics"])["stages"], indent=1))
    if not args.no_draft:
        d = _newest(DRAFT_HEADS)
        print(f"draft head {d['run_id']}: top-1 {d['top1_agreement']:.3f} (bigram {d['baseline_top1_agreement']:.3f}), "
              f"accepted per {d['chain']}-chain {d['accept_len']:.3f} (bigram {d['baseline_accept_len']:.3f})")
    return 0


def cmd_eval(args) -> int:
    from assets.student.tables import STUDENT_EVALS

    given = {k: getattr(args, k) for k in ("max_pairs", "max_answers", "max_rag_tasks") if getattr(args, k) is not None}
    _run([EVALS], {EVALS: {"run_id": args.run_id or "", **given}})  # the rest: the asset config's defaults
    e = _newest(STUDENT_EVALS)
    print(f"evaluation {e['eval_id']} ({e['n_eval_sessions']} held-out sessions, {e['n_pairs']} pairs: {e['pair_source']})")
    for name in ("ll", "pair_acc", "tool_valid", "rag_pass"):
        print(f"  {name:<12} base {e[name + '_base']}  trained {e[name + '_trained']}")
    d = json.loads(e["details"] or "{}")
    print(f"  reward_acc   {e['reward_acc']} (ref = {d.get('reward_reference', 'base')}; against the base "
          f"{d.get('reward_acc_vs_base', e['reward_acc'])})   ll_gain {e['ll_gain']}")
    if d.get("n_real_pairs"):
        print(f"  on the {d['n_real_pairs']} real pairs: pair_acc base {d.get('pair_acc_real_base')}  trained "
              f"{d.get('pair_acc_real_trained')}  reward_acc {d.get('reward_acc_real')}")
    for kind, k in d.get("pair_acc_by_kind", {}).items():
        print(f"    {kind} pairs ({k['n']}): pair_acc base {k['base']}  trained {k['trained']}")
    return 0


def add_student_commands(sub) -> None:
    p = sub.add_parser("train", help="train the student (TRL, LoRA) and a draft head on the lake")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-model", default="smollm2-135m", help="smollm2-135m, an HF directory or a .gguf")
    p.add_argument("--stages", default="sft,dpo", help="comma-separated: sft, dpo, kto")
    p.add_argument("--eval-share", type=float, default=0.3, help="share of sessions held out")
    p.add_argument("--sft-steps", type=int, default=None)
    p.add_argument("--dpo-steps", type=int, default=None)
    p.add_argument("--no-draft", action="store_true", help="skip the draft head")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("eval", help="evaluate the newest (or --run-id) student run: base vs trained")
    p.add_argument("--run-id", default="")
    p.add_argument("--max-pairs", type=int, default=None, help="held-out pairs scored (default: the asset config's)")
    p.add_argument("--max-answers", type=int, default=None, help="held-out SFT answers scored (default: the asset config's)")
    p.add_argument("--max-rag-tasks", type=int, default=None, help="rag batch tasks run (default: the asset config's)")
    p.set_defaults(fn=cmd_eval)
