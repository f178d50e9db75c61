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
import shutil
import sys
import time
from importlib import resources as ir
from pathlib import Path

from dagster_project.instance import local_instance
from resources import settings


def copy_samples(dest: Path) -> int:
    """Copy the bundled sample sessions into ``dest`` (keeping sub-folders)."""
    src = ir.files("assets.traces") / "samples"
    n = 0
    with ir.as_file(src) as src_dir:
        for p in sorted(Path(src_dir).rglob("*")):
            if p.is_file() and p.suffix in (".jsonl", ".json"):
                target = dest / p.relative_to(src_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(p, target)
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


def rag_demo_batch(instance=None, tasks: int = DEMO_RAG_TASKS, log=print) -> dict:
    """A small batch of the bundled rag tasks through the runtime (each run appended to
    gold/rag_runs, the batch a materialization of it), then gold/rag_report refreshed."""
    from assets.rag.tables import RAG_REPORT
    from dagster_project.definitions import defs

    instance = instance or _instance()
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


def cmd_demo(args) -> int:
    sessions = Path(settings.sessions_dir())
    sessions.mkdir(parents=True, exist_ok=True)
    copied = copy_samples(sessions)
    print(f"sample sessions: {copied} copied into {sessions}")
    summary = materialize_all()
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
