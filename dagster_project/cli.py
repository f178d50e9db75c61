"""`tracelake` command line.

    tracelake demo                    bundled sample sessions → the whole graph, on a local lake
    tracelake materialize [--all]     materialize every session partition, then the datasets
    tracelake export --table T ...    write a training set as JSONL/Parquet for `datasets`
    tracelake export --format atif --out DIR   every session of trace_turns as an ATIF trajectory
    tracelake migrate                 carry a lake of an older version over to today's table names
    tracelake audit [--lake ROOT]     an independent detector scans every table for secrets left
    tracelake rag run --task "..."    answer a task with the local model, gated, logged
    tracelake train [--seed N]        held-out split → student (TRL, LoRA) → draft head
    tracelake eval [--run-id ID]      base vs trained student on the held-out sessions
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib import resources as ir
from pathlib import Path

from dagster_project.instance import local_instance
from resources import settings


# The samples' recording time: a copy gets it as its modification time, so a sample whose
# format has no timestamp (an OpenAI-messages log, a ShareGPT dump, OTLP spans) falls on the
# same day wherever and whenever the demo runs (a session's day is its first timestamp, else
# its file's mtime).
SAMPLES_MTIME = datetime(2026, 1, 16, 18, 0, tzinfo=timezone.utc)


def copy_samples(dest: Path) -> int:
    """Copy the bundled sample sessions into ``dest`` (keeping sub-folders), each with the
    samples' recording time as its modification time."""
    src = ir.files("assets.traces") / "samples"
    n = 0
    stamp = SAMPLES_MTIME.timestamp()
    with ir.as_file(src) as src_dir:
        for p in sorted(Path(src_dir).rglob("*")):
            if p.is_file() and p.suffix in (".jsonl", ".json"):
                target = dest / p.relative_to(src_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(p, target)
                    os.utime(target, (stamp, stamp))
                    n += 1
    return n


def ingest_all(instance=None, log=print, *, defs=None, lake=None, sessions=None, run_config=None,
               reread_unchanged: bool = True, keys=None, job=None) -> list:
    """Ingest every session file under the sessions root (new, changed and deleted ones, and
    the unchanged ones read again): one run of the ingest job per window of days (a run over
    a date range records each day of it; see SessionSource.max_span_days). Returns the runs'
    results (empty when there is nothing to ingest)."""
    from dagster_project.definitions import INGEST_JOB
    from dagster_project.definitions import defs as default_defs
    from resources.lake import DeltaLake
    from resources.sessions import SessionSource
    from sensors.sessions import INGEST_QUEUE_TAG, plan_all, run_request_for

    defs = defs or default_defs
    lake = lake or DeltaLake(root=settings.lake_root())
    sessions = sessions or SessionSource(root=settings.sessions_dir())
    batches, problems = plan_all(sessions, lake, reread_unchanged=reread_unchanged)
    if keys is not None:
        batches = [b for b in ([c for c in b if c.key in set(keys)] for b in batches) if b]
    for path, what in problems:
        log(f"  {path}: {what}")
    results = []
    for batch in batches:
        req = run_request_for(batch)
        tags = {k: v for k, v in req.tags.items() if k != INGEST_QUEUE_TAG}
        config = {**(run_config or {}), **req.run_config}
        days = sorted({c.day for c in batch})
        log(f"ingest + teachers + pairs: {len(batch)} session files of {len(days)} day(s) "
            f"({days[0]} .. {days[-1]}), one run")
        results.append(defs.resolve_job_def(job or INGEST_JOB).execute_in_process(
            run_config=config, instance=instance or local_instance(), tags=tags, partition_key=req.partition_key,
            raise_on_error=False))
    return results


def _quiet() -> dict:
    return {"loggers": {"console": {"config": {"log_level": settings.log_level()}}}}


def _ingest(instance, log, keys=None, **where) -> list:
    results = ingest_all(instance, log, run_config=_quiet(), keys=keys, **where)
    failed = [r.run_id for r in results if not r.success]
    if failed:
        raise SystemExit(f"ingest run(s) {', '.join(failed)} failed")
    return results


def materialize_all(instance=None, log=print) -> dict:
    """Ingest every session file (one run over the days they belong to), then the datasets.

    The ingest run rewrites exactly the sessions of those files (their (day, session) rows);
    the unpartitioned datasets follow in a second run.
    """
    from dagster_project.definitions import DATASETS_JOB, defs
    from resources.sessions import SessionSource

    migrate(log=log)
    instance = instance or local_instance()
    quiet = {"loggers": {"console": {"config": {"log_level": settings.log_level()}}}}
    t0 = time.perf_counter()
    results = ingest_all(instance, log, run_config=quiet)
    if not results:
        raise SystemExit(f"no session files under {SessionSource(root=settings.sessions_dir()).root_path()}")
    summary = {"files": sum(len(r.dagster_run.run_config["ops"]["read_session_files"]["config"]["changes"])
                            for r in results)}
    summary["ingest_runs"] = [r.run_id for r in results]
    summary["ingest_s"] = round(time.perf_counter() - t0, 1)
    failed = [r.run_id for r in results if not r.success]
    if failed:
        raise SystemExit(f"ingest run(s) {', '.join(failed)} failed")
    t0 = time.perf_counter()
    log("datasets: normalized pairs, replay corpus, prompt pool, capture shards, playbooks")
    res = defs.resolve_job_def(DATASETS_JOB).execute_in_process(run_config=quiet, instance=instance)
    summary["datasets_run"] = res.run_id
    summary["datasets_s"] = round(time.perf_counter() - t0, 1)
    if not res.success:
        raise SystemExit(f"datasets run {res.run_id} failed")
    return summary


def migrate(lake=None, log=print) -> list:
    """Rename the tables of an older lake (see dagster_project/migrate.py)."""
    from dagster_project.migrate import migrate_lake
    from resources.lake import DeltaLake

    done = migrate_lake(lake or DeltaLake(root=settings.lake_root()), settings.sessions_dir())
    for m in done:
        log(f"migrated {m}")
    return done


def print_tables(log=print) -> None:
    """Every table of the lake with its version and rows: the asset tables, then those
    created on demand (one capture table per verifier, dtype and schema version)."""
    from dagster_project.definitions import all_tables
    from resources.lake import DeltaLake, count_rows

    lake = DeltaLake(root=settings.LAKE_ROOT)
    log(f"\nlake: {lake.root}")
    specs = all_tables()
    known = {spec.path for spec in specs}
    tables = [(spec.path, lake.table(spec)) for spec in specs]
    tables += [(path, lake.table_at(path)) for path in lake.table_paths() if path not in known]
    for path, dt in tables:
        if dt is not None:  # (not written yet otherwise)
            log(f"  {path:<44} v{dt.version():<4} {count_rows(dt):>8} rows")


DEMO_RAG_TASKS = 2  # sample tasks the demo answers with the rag runtime (local model, no escalation)


def rag_demo_batch(instance=None, tasks: int = DEMO_RAG_TASKS, log=print, *, defs=None) -> dict:
    """A small batch of the bundled rag tasks through the runtime (each run appended to
    gold/rag_runs, the batch a materialization of it), then gold/rag_report refreshed."""
    from assets.rag.tables import RAG_REPORT
    from dagster_project.definitions import defs as default_defs

    defs = defs or default_defs
    instance = instance or local_instance()
    quiet = {"loggers": {"console": {"config": {"log_level": settings.log_level()}}}}
    t0 = time.perf_counter()
    log(f"rag: {tasks} sample tasks through the runtime (local model, gated, logged), then the report")
    res = defs.resolve_job_def("rag_batch_job").execute_in_process(
        run_config={**quiet, "ops": {"rag_batch": {"config": {"limit": tasks, "local_only": True}}}},
        instance=instance)
    if not res.success:
        raise SystemExit(f"rag batch run {res.run_id} failed")
    rep = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config=quiet, instance=instance, asset_selection=[RAG_REPORT.asset_key])
    if not rep.success:
        raise SystemExit(f"rag report run {rep.run_id} failed")
    return {"rag_run": res.run_id, "rag_s": round(time.perf_counter() - t0, 1)}


# The demo's replay corpus budget (rows): the sessions arrive in two bursts of days and the
# corpus is refreshed after each; the second refresh adds rows and evicts the oldest ones of
# the first beyond the budget (only rows the refresh itself added are protected).
DEMO_CORPUS_MAX_ROWS = 300
# The demo captures the verifier over the shortest prompts of the pool only (CPU forward
# passes over every prompt token cost minutes here); `tracelake materialize` captures all.
DEMO_CAPTURE_PROMPTS = 32


def demo_bursts(days: list[str]) -> list[list[str]]:
    """The days of the sample sessions in two bursts, as files would arrive: the earlier
    half of the days (the middle day with them), then the rest (one burst for one day)."""
    days = sorted(set(days))
    half = (len(days) + 1) // 2
    return [d for d in (days[:half], days[half:]) if d]


def demo_run(instance=None, log=print, *, defs=None, lake=None, sessions=None) -> dict:
    """The demo over the sessions under the sessions root: per burst of days, the ingest run
    (traces, teachers, pairs, training sets) then a refresh of the replay corpus under the
    demo's budget, as of the end of the burst's last day (the first burst: normalized pairs
    and the corpus only; the last: every dataset)."""
    from assets.corpus.tables import REPLAY_CORPUS, REPLAY_EVICTIONS
    from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS
    from dagster_project.definitions import DATASETS_JOB
    from dagster_project.definitions import defs as default_defs
    from resources.lake import DeltaLake
    from resources.sessions import SessionSource
    from sensors.sessions import plan_all

    defs = defs or default_defs
    lake = lake or DeltaLake(root=settings.lake_root())
    sessions = sessions or SessionSource(root=settings.sessions_dir())
    migrate(lake, log=log)
    instance = instance or local_instance()
    batches, _ = plan_all(sessions, lake)
    changes = [c for b in batches for c in b]
    if not changes:
        raise SystemExit(f"no session files under {sessions.root_path()}")
    bursts = demo_bursts([c.day for c in changes])
    summary: dict = {"files": len(changes), "bursts": [[b[0], b[-1]] for b in bursts], "ingest_runs": []}
    for i, days in enumerate(bursts):
        last = i == len(bursts) - 1
        keys = [c.key for c in changes if c.day in set(days)]
        t0 = time.perf_counter()
        log(f"burst {i + 1}/{len(bursts)}: {len(keys)} session files of {days[0]} .. {days[-1]}")
        summary["ingest_runs"] += [r.run_id for r in _ingest(instance, log, keys, defs=defs, lake=lake,
                                                             sessions=sessions)]
        summary[f"ingest_{i + 1}_s"] = round(time.perf_counter() - t0, 1)
        as_of = f"{days[-1]}T23:59:59Z"
        corpus = {"max_rows": DEMO_CORPUS_MAX_ROWS, "as_of": as_of}
        t0 = time.perf_counter()
        if not last:
            log(f"replay corpus refresh as of {as_of} (budget {DEMO_CORPUS_MAX_ROWS} rows)")
            res = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                run_config={**_quiet(), "ops": {"gold__replay_corpus": {"config": corpus}}}, instance=instance,
                asset_selection=[NORMALIZED_PAIRS.asset_key, PAIR_REJECTIONS.asset_key, REPLAY_CORPUS.asset_key,
                                 REPLAY_EVICTIONS.asset_key])
        else:
            log(f"datasets as of {as_of}: normalized pairs, replay corpus (budget {DEMO_CORPUS_MAX_ROWS} rows), "
                f"prompt pool, capture shards ({DEMO_CAPTURE_PROMPTS} shortest prompts), playbooks")
            res = defs.resolve_job_def(DATASETS_JOB).execute_in_process(run_config={**_quiet(), "ops": {
                "gold__replay_corpus": {"config": corpus},
                "gold__replay_sample": {"config": {"reference_time": as_of}},
                "gold__capture_shards": {"config": {"max_prompts": DEMO_CAPTURE_PROMPTS}}}}, instance=instance)
        if not res.success:
            raise SystemExit(f"datasets run {res.run_id} failed")
        summary[f"datasets_{i + 1}_s"] = round(time.perf_counter() - t0, 1)
    return summary


def cmd_demo(args) -> int:
    sessions = Path(settings.sessions_dir())
    sessions.mkdir(parents=True, exist_ok=True)
    copied = copy_samples(sessions)
    print(f"sample sessions: {copied} copied into {sessions}")
    summary = demo_run()
    summary |= rag_demo_batch()
    print(summary)
    print_tables()
    print("\nbrowse it: make dev  (Dagster UI on http://127.0.0.1:3000)")
    return 0


def cmd_materialize(args) -> int:
    print(materialize_all())
    print_tables()
    return 0


def cmd_migrate(args) -> int:
    done = migrate()
    if not done:
        print("nothing to migrate")
    return 0


def export_main(argv: list[str]) -> int:
    from dagster_project.export import main as export

    return export(argv) or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracelake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the whole graph on the bundled sample sessions").set_defaults(fn=cmd_demo)
    sub.add_parser("materialize", help="materialize all session files under TRACELAKE_SESSIONS_DIR"
                   ).set_defaults(fn=cmd_materialize)
    sub.add_parser("migrate", help="rename the tables of a lake written by an older version"
                   ).set_defaults(fn=cmd_migrate)
    sub.add_parser("audit", help="scan every table of the lake for secrets with an independent detector")
    # `tracelake export ...` hands its arguments to dagster_project.export (see `tracelake export -h`)
    sub.add_parser("export", help="write a training set as JSONL/Parquet for datasets.load_dataset")
    from dagster_project.cli_rag import add_rag_commands

    add_rag_commands(sub)
    from dagster_project.cli_student import add_student_commands

    add_student_commands(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    if argv[:1] == ["audit"]:
        from dagster_project.cli_audit import main as audit

        return audit(argv[1:])
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
