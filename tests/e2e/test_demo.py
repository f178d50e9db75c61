"""The demo's shape, on the whole graph (a loopback teacher and a tiny verifier instead of
the local models): the bundled sessions fall on fixed days wherever and whenever it runs,
arrive in two bursts of days, and the second refresh of the replay corpus evicts rows of
the first to meet the demo's budget; every table the demo prints has rows."""

import os
from datetime import datetime, timezone

import dagster as dg
import pytest

from assets.corpus.tables import REPLAY_CORPUS, REPLAY_EVICTIONS
from assets.rag.assets import RagResource
from assets.rag.tables import RAG_REPORT, RAG_RUNS
from assets.teachers.pool import TeacherPool
from dagster_project import cli
from dagster_project.definitions import all_tables, build_definitions
from resources.lake import DeltaLake, count_rows
from resources.sessions import SessionSource
from resources.verifier import VerifierResource
from testsupport.e2e import fake_teacher_pool
from testsupport.fake_openai import FakeOpenAI
from testsupport.models import build_tiny_llama


def test_demo_bursts_split_the_days_in_two():
    assert cli.demo_bursts(["2026-01-16", "2026-01-12", "2026-01-14", "2026-01-15", "2026-01-14"]) == [
        ["2026-01-12", "2026-01-14"], ["2026-01-15", "2026-01-16"]]
    assert cli.demo_bursts(["2026-01-12", "2026-01-13", "2026-01-14"]) == [["2026-01-12", "2026-01-13"], ["2026-01-14"]]
    assert cli.demo_bursts(["2026-01-12"]) == [["2026-01-12"]]


def test_sample_copies_carry_the_recording_time(tmp_path):
    assert cli.copy_samples(tmp_path) >= 10
    stamps = {os.stat(p).st_mtime for p in tmp_path.rglob("*.json*")}
    assert stamps == {cli.SAMPLES_MTIME.timestamp()}
    assert cli.copy_samples(tmp_path) == 0  # nothing copied twice


@pytest.mark.slow
def test_demo_evicts_under_its_budget_and_fills_every_table(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-test-not-a-real-key-0000000000000000")
    monkeypatch.setattr(cli, "DEMO_CAPTURE_PROMPTS", 2)
    # the loopback teacher answers every step (the local ones, a few): more pairs, a larger
    # corpus; a budget between what the second burst adds and the whole
    monkeypatch.setattr(cli, "DEMO_CORPUS_MAX_ROWS", 300)
    cli.copy_samples(tmp_path / "sessions")
    lake = DeltaLake(root=str(tmp_path / "lake"))
    sessions = SessionSource(root=str(tmp_path / "sessions"))
    tiny = build_tiny_llama(tmp_path / "tiny-llama")
    with FakeOpenAI() as teacher:
        built = build_definitions(lake=lake, sessions=sessions)
        defs = dg.Definitions(
            assets=built.assets, asset_checks=built.asset_checks, jobs=built.jobs,
            resources={**built.resources,
                       "teachers": TeacherPool(config_file=str(fake_teacher_pool(tmp_path / "pool.yaml", teacher.url))),
                       "verifier": VerifierResource(verifier=str(tiny), top_k=4, batch_tokens=512, max_length=256),
                       "rag": RagResource(local_base_url=teacher.url, local_model="fake/rag", retrieval_mode="lexical",
                                          spool_dir=str(tmp_path / "rag-spool"))})
        instance = dg.DagsterInstance.ephemeral()
        summary = cli.demo_run(instance, log=lambda *_: None, defs=defs, lake=lake, sessions=sessions)
        summary |= cli.rag_demo_batch(instance, log=lambda *_: None, defs=defs)

    # fixed days: the timestamp-less samples fall on the recording day, not on today
    assert summary["bursts"] == [["2026-01-12", "2026-01-14"], ["2026-01-15", "2026-01-16"]]
    # the second refresh evicted the oldest rows of the first, down to the budget
    corpus = lake.read(REPLAY_CORPUS, columns=["section_id", "added_at"]).to_pylist()
    evicted = lake.read(REPLAY_EVICTIONS).to_pylist()
    assert len(corpus) <= cli.DEMO_CORPUS_MAX_ROWS < len(corpus) + len(evicted)
    assert evicted and {r["section_id"] for r in evicted}.isdisjoint(r["section_id"] for r in corpus)
    first_refresh_end = datetime(2026, 1, 14, 23, 59, 59, tzinfo=timezone.utc)
    assert all(r["added_at"] <= first_refresh_end for r in evicted)  # only rows of the first burst went
    # the rag step: each task a logged run, and the report over them
    assert count_rows(lake.table(RAG_RUNS)) == cli.DEMO_RAG_TASKS and count_rows(lake.table(RAG_REPORT)) > 0
    # every table of the graph the demo runs has rows; the student's are `tracelake train`'s
    # and capture_rejections has rows only when a captured answer fails the post-filter
    rows = {spec.path: count_rows(lake.table(spec)) if lake.exists(spec) else None for spec in all_tables(defs)}
    left = {p for p in rows if p.startswith(("gold/student_", "gold/draft_")) or p == "gold/capture_rejections"}
    assert {p: n for p, n in rows.items() if p not in left and not n} == {}
