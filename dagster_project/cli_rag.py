"""`tracelake rag ...`: answer a task with the local model grounded in playbooks, gated, logged.

    tracelake rag run --task "..." [--local-only] [--allow-escalation] [--no-retrieval] [--check LINE ...]
    tracelake rag export-log --out runs.jsonl     the run log as replay_run.v1 JSONL records
    tracelake rag report

Config: recipes/rag.yaml (or --recipe / TRACELAKE_RAG_RECIPE) < TRACELAKE_RAG_* env < flags.
Escalation by environment alone: TRACELAKE_RAG_ESCALATION_BASE_URL, TRACELAKE_RAG_ESCALATION_MODEL,
TRACELAKE_RAG_ESCALATION_API_KEY_ENV (the NAME of the variable holding the key).
The lake root is TRACELAKE_LAKE_ROOT (default ./lakehouse) unless --lake-root.
Every run is appended to gold/rag_runs and reported as a materialization of that asset on the
Dagster instance (DAGSTER_HOME), so rag_playbooks and rag_report can follow it.
Exit status of `run`: 0 when the gate passed, 1 when it failed (the run is logged either way),
2 when the command cannot run (e.g. --allow-escalation without an escalation endpoint).
"""

from __future__ import annotations

import argparse
import sys


def add_rag_commands(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rag", help="retrieval-grounded local model runs (gated, escalated, logged)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="rag_command", required=True)

    r = sub.add_parser("run", help="answer one task: retrieval → bundle → local model → gate → escalation")
    r.add_argument("--task", required=True)
    r.add_argument("--local-only", action="store_true", help="never call the escalation model")
    r.add_argument("--allow-escalation", action="store_true", help="escalate when the gate fails")
    r.add_argument("--no-retrieval", action="store_true", help="baseline: no playbooks in the prompt")
    r.add_argument("--check", action="append", default=[], metavar="LINE",
                   help="a validation line the answer must cover (repeatable)")
    r.add_argument("--lake-root", default=None)
    r.add_argument("--recipe", default=None, help="rag recipe YAML (default recipes/rag.yaml)")
    r.add_argument("--local-model", default=None)
    r.add_argument("--max-new-tokens", type=int, default=None)
    r.add_argument("--retrieval-mode", choices=["lexical", "embedding", "hybrid"], default=None)
    r.add_argument("--top-k", type=int, default=None)
    r.add_argument("--min-chars", type=int, default=None)
    r.add_argument("--escalation-base-url", default=None)
    r.add_argument("--escalation-model", default=None)
    r.add_argument("--escalation-api-key-env", default=None, help="NAME of the env var holding the key")
    r.add_argument("--json", action="store_true", help="print the logged row as JSON")
    r.set_defaults(fn=cmd_rag_run)

    ex = sub.add_parser("export-log", help="write gold/rag_runs as replay_run.v1 JSONL records")
    ex.add_argument("--out", required=True, help="JSONL file to write")
    ex.add_argument("--lake-root", default=None)
    ex.set_defaults(fn=cmd_rag_export_log)

    rep = sub.add_parser("report", help="pass and escalation rates, with vs without retrieval")
    rep.add_argument("--lake-root", default=None)
    rep.set_defaults(fn=cmd_rag_report)
    return p


def _lake(root: str | None):
    from resources import settings
    from resources.lake import DeltaLake

    return DeltaLake(root=root or settings.LAKE_ROOT)


def cmd_rag_run(args) -> int:
    import json

    from assets.rag.assets import record_run_materialization
    from assets.rag.config import load_rag_config
    from assets.rag.runtime import EscalationNotConfigured, RagRuntime
    from assets.rag.tables import RAG_RUNS

    cfg = load_rag_config(
        args.recipe, local_model=args.local_model, max_new_tokens=args.max_new_tokens,
        retrieval_mode=args.retrieval_mode, top_k=args.top_k, min_chars=args.min_chars,
        escalation_base_url=args.escalation_base_url, escalation_model=args.escalation_model,
        escalation_api_key_env=args.escalation_api_key_env,
    )
    allow = True if args.allow_escalation else None
    if args.allow_escalation and not args.local_only and not cfg.escalation_configured:
        print(f"error: --allow-escalation: {cfg_help()}", file=sys.stderr)
        return 2
    lake = _lake(args.lake_root)
    runtime = RagRuntime(cfg, lake=lake)
    try:
        out = runtime.run(args.task, local_only=args.local_only, allow_escalation=allow,
                          no_retrieval=args.no_retrieval, source="cli", checks=args.check)
    except EscalationNotConfigured as exc:  # the recipe allows escalation without an endpoint
        print(f"error: {exc}", file=sys.stderr)
        return 2
    row = out.row
    from dagster_project.instance import local_instance

    record_run_materialization(local_instance(), lake, row, out.logged, runtime.run_log.last_write)
    passed = out.gate_passed
    if args.json:
        print(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()},
                         ensure_ascii=False))
        return 0 if passed else 1
    print(f"recorded_run_id: {row['recorded_run_id']}")
    if row["no_retrieval"]:
        print("retrieval: off (--no-retrieval)")
    else:
        src = (f"rag_playbooks v{row['playbooks_version']}" if row["playbooks_version"] is not None
               else "rag_playbooks (not materialized yet)")
        print(f"retrieval: {row['retrieval_mode']}, {len(out.hits)} hit(s) from {src}")
        for h in out.hits:
            title = runtime.index.records[h.index].get("title", "")
            label = runtime.index.records[h.index].get("label", "")
            print(f"  {h.score:.4f}  {h.id}  [{label}] {title[:70]}")
    print("escalation path: " + " -> ".join(row["escalation_path"]))
    print(f"model: {row['model_used']}")
    verdict = "PASS" if passed else "FAIL (" + ", ".join(out.failed_rules) + ")"
    print(f"gate: {verdict}")
    if row["error"]:
        print(f"error: {row['error']}")
    if out.logged:
        print(f"logged: {lake.uri(RAG_RUNS)}")
    else:
        print(f"logged: SPOOLED to {runtime.run_log.spool.dir} ({out.log_error})")
    print(f"timings ms: retrieval {row['retrieval_ms']:.1f}, local {row['local_ms']:.0f}, "
          f"escalation {row['escalation_ms'] or 0:.0f}, total {row['duration_ms']:.0f}")
    print("answer:")
    print(out.response)
    return 0 if passed else 1


def cfg_help() -> str:
    from assets.rag.config import ESCALATION_HELP

    return ESCALATION_HELP


def cmd_rag_export_log(args) -> int:
    from assets.rag.runlog import export_log

    lake = _lake(args.lake_root)
    n = export_log(lake, args.out)
    print(f"{n} replay_run.v1 records -> {args.out}")
    return 0


def cmd_rag_report(args) -> int:
    from assets.rag.assets import RUN_COLUMNS
    from assets.rag.report import markdown, report_rows
    from assets.rag.runlog import migrate_rag_runs, report_view
    from assets.rag.tables import RAG_RUNS

    lake = _lake(args.lake_root)
    migrate_rag_runs(lake)
    runs = report_view(lake.read(RAG_RUNS, columns=RUN_COLUMNS).to_pylist())
    rows = report_rows(runs)
    print(f"{len(runs)} runs\n\n{markdown(rows)}\n\n{markdown(rows, per_day=True)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracelake")
    sub = parser.add_subparsers(dest="command", required=True)
    add_rag_commands(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
