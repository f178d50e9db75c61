"""The Dagster UI in a real browser: `dagster dev` + headless Chromium (Playwright).

1. `dagster dev -m dagster_project.definitions` starts in a temp DAGSTER_HOME, with the
   lake and the session directory in tmp (two bundled sample sessions, one with planted
   secrets). It runs from a subprocess that restores SIGINT (`dagster dev` hangs on
   SIGTERM otherwise) and is stopped with SIGINT, then its process group is killed.
2. The daemon ticks the `session_files` sensor, which asks for ONE run per tick (the
   newest file's days first; the other file, ten months older, waits). That run stays queued (a `dagster/sensor_name` run limit of 0 in this
   instance's dagster.yaml) so the 2 shared cores go to the run launched from the UI.
3. Chromium opens the `traces` group's asset graph (session_files + raw_traces →
   trace_turns → agent_steps → …), then raw_traces' page, clicks "Materialize…" (raw_traces
   is read in one step with the session_files registry: the UI says both materialize),
   types the day of the Claude Code session into the partition dialog and launches the
   run; that run (no file list: a backfill of the day) finds the day's file on disk, reads
   it and registers it. It waits for the run page to say Success, then reads rows_written /
   lines / secrets_scrubbed / lines_quarantined / table_rows off the asset page and
   compares them with the Delta table.

Screenshots go to tmp_path, and to docs/screenshots/ with TRACELAKE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from testsupport.e2e import ROOT, SAMPLES, base_env, free_port, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("TRACELAKE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAGSTER = Path(sys.executable).parent / "dagster"  # the venv running the tests
SCREENSHOTS = ROOT / "docs" / "screenshots"
SESSION_FILES = [  # (relative path under the samples, has secrets)
    "claude-code/-home-dev-invoicer/5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b.jsonl",
    "sharegpt/invoicer-helpdesk.jsonl",
]
KEY = "claude-code~-home-dev-invoicer~5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b.jsonl"
DAY = "2026-01-14"  # the UTC day that session started (its first timestamp): its partition
INSTANCE_YAML = """\
telemetry:
  enabled: false
# no "Join the Dagster community" dialog: it pops up ~1s after a page loads, over menus
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      # the sensor's runs wait in the queue: this test launches its own run from the UI
      - key: dagster/sensor_name
        value: session_files
        limit: 0
"""


def _restore_sigint():  # runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def dagster_dev(cwd: Path, env: dict, port: int, log: Path):
    exe = str(DAGSTER) if DAGSTER.exists() else shutil.which("dagster")
    fh = open(log, "wb")
    proc = subprocess.Popen(
        [exe, "dev", "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_restore_sigint,
    )
    try:
        yield proc
    finally:
        try:
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:  # the code server / daemon / webserver children of *this* process group only
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        fh.close()


def _server_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _metadata(page) -> dict[str, str]:
    """{key: value} of the metadata table on an asset page (key, timestamp, value cells)."""
    out = {}
    for row in page.locator("tr").all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        if len(cells) >= 2 and cells[0] and cells[0] not in out:
            out[cells[0]] = cells[-1]
    return out


def _pick_partition(page, dialog, attempts: int = 3):
    """Type DAY into the dialog's partition selection (all partitions shown: the day is
    older than the last 90 days the dialog starts with) until it says one partition is
    selected (its launch button reads "Launch 1 run")."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    launch = dialog.get_by_role("button", name="Launch 1 run")
    for attempt in range(attempts):
        if launch.count():
            break
        try:
            show_all = dialog.get_by_role("button", name="Show all partitions")
            if show_all.count():
                show_all.click(timeout=10_000)
                page.wait_for_timeout(500)
            box = dialog.locator("input[type=text]").first
            box.click(timeout=10_000)
            box.fill(DAY)
            box.press("Enter")
            expect(launch).to_be_visible(timeout=15_000)
        except (AssertionError, PlaywrightError):
            if attempt == attempts - 1:
                raise
            page.wait_for_timeout(500)
    expect(launch).to_be_visible()


def test_materialize_from_the_ui_and_read_metadata_back(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    import dagster as dg
    from playwright.sync_api import expect

    from assets.traces.tables import RAW_TRACES
    from assets.traces.tables import SESSION_FILES as SESSION_FILES_SPEC
    from resources.lake import DeltaLake, string_field

    sessions = tmp_path / "sessions"
    for rel in SESSION_FILES:
        (sessions / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / rel, sessions / rel)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    (home / ".nux").mkdir()  # "seen" marker: belt and braces with nux.enabled=false
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    lake_root = tmp_path / "lake"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = base_env(DAGSTER_HOME=str(home), TRACELAKE_LAKE_ROOT=str(lake_root),
                   TRACELAKE_SESSIONS_DIR=str(sessions))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    timings = {}

    with dagster_dev(tmp_path, env, port, tmp_path / "dagster_dev.log") as proc:
        def up():
            assert proc.poll() is None, (tmp_path / "dagster_dev.log").read_text(errors="replace")[-3000:]
            return _server_up(url)

        wait_for(up, 240, 0.5, "dagster dev to answer")
        timings["server_up_s"] = round(time.time() - t0, 1)
        instance = dg.DagsterInstance.from_config(str(home))
        # the sensor tick (daemon) asks for one run for both files (held in the queue)
        def sensor_run():
            runs = [r.dagster_run for r in instance.get_run_records()
                    if r.dagster_run.tags.get("dagster/sensor_name") == "session_files"]
            return runs[0] if runs else None

        held = wait_for(sensor_run, 120, 1.0, "the session sensor's run")
        changes = held.run_config["ops"]["read_session_files"]["config"]["changes"]
        # the two files started ~10 months apart: a tick's run covers one window of days
        # (newest first), the other file waits for the next tick
        assert [c["key"] for c in changes] == ["sharegpt~invoicer-helpdesk.jsonl"]
        timings["partitions_s"] = round(time.time() - t0, 1)

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            # the community dialog is off on the server (nux.enabled=false); also mark it seen
            # in localStorage, and should it still show up, dismiss it without waiting on it
            page.add_init_script("try { localStorage.setItem('communityNux', JSON.stringify('1')) }"
                                 " catch (e) {}")
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(timeout=5_000),
                no_wait_after=True)
            try:
                # 1. the asset graph of the trace chain
                page.goto(f"{url}/locations/dagster_project.definitions/asset-groups/traces",
                          wait_until="domcontentloaded")
                page.get_by_text("raw_traces", exact=True).first.wait_for()
                page.get_by_text("agent_steps", exact=True).first.wait_for()
                wait_for(lambda: page.get_by_text("Loading…").count() == 0, 60, 0.5, "graph statuses")
                page.screenshot(path=shots / "asset-graph.png")

                # 2. launch raw_traces for one day from the asset page's partition dialog
                runs_before = {r.dagster_run.run_id for r in instance.get_run_records()}
                page.goto(f"{url}/assets/bronze/raw_traces", wait_until="domcontentloaded")
                materialize = page.get_by_role("button", name="Materialize…").first
                expect(materialize).to_be_enabled()
                materialize.click()
                # raw_traces is read in one step with the registry: the UI says so first
                page.get_by_text("bronze / session_files").first.wait_for()
                page.get_by_role("button", name="Confirm").click()
                expect(page.get_by_text("Additional assets will be materialized")).to_be_hidden()
                page.wait_for_timeout(1000)  # the alert's backdrop fades out
                dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
                expect(dialog).to_be_visible()
                _pick_partition(page, dialog)
                launch = dialog.get_by_role("button", name="Launch 1 run")
                expect(launch).to_be_enabled()
                launch.click()
                expect(dialog).to_be_hidden()

                def ui_run():
                    for r in instance.get_run_records():
                        run = r.dagster_run
                        if run.run_id not in runs_before and run.tags.get("dagster/partition") == DAY \
                                and "dagster/sensor_name" not in run.tags:
                            return run
                    return None

                run = wait_for(ui_run, 60, 0.5, "the run launched from the UI")
                assert run.asset_selection == {RAW_TRACES.asset_key, SESSION_FILES_SPEC.asset_key}
                timings["launched_s"] = round(time.time() - t0, 1)

                def finished():
                    r = instance.get_run_by_id(run.run_id)
                    return r if r.is_finished else None

                done = wait_for(finished, 240, 1.0, f"run {run.run_id} to finish")
                assert done.status == dg.DagsterRunStatus.SUCCESS, [
                    e.user_message for e in instance.all_logs(run.run_id)][-20:]
                timings["run_done_s"] = round(time.time() - t0, 1)
                page.goto(f"{url}/runs/{run.run_id}", wait_until="domcontentloaded")
                page.get_by_text("Success", exact=True).first.wait_for()
                page.get_by_text("RUN_SUCCESS").first.wait_for()
                page.wait_for_timeout(1500)
                page.screenshot(path=shots / "run.png")

                # 3. the asset page: metadata of the materialization, read off the page
                page.goto(f"{url}/assets/bronze/raw_traces", wait_until="domcontentloaded")
                page.get_by_text("secrets_scrubbed").first.wait_for()
                page.wait_for_timeout(1000)
                shown = _metadata(page)
                page.get_by_text("Metadata", exact=True).first.scroll_into_view_if_needed()
                page.screenshot(path=shots / "asset-metadata.png")

                # 4. the graph again, for the README: the held sensor runs are canceled first
                for r in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])):
                    instance.report_run_canceled(r.dagster_run)
                page.goto(f"{url}/locations/dagster_project.definitions/asset-groups/traces",
                          wait_until="domcontentloaded")
                page.get_by_text("agent_steps", exact=True).first.wait_for()
                wait_for(lambda: page.get_by_text("Loading…").count() == 0, 60, 0.5, "graph statuses")
                page.wait_for_timeout(1500)
                page.screenshot(path=shots / "asset-graph.png")
            finally:
                page.screenshot(path=shots / "last-page.png")
                browser.close()

    if os.environ.get("TRACELAKE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("asset-graph.png", "run.png", "asset-metadata.png"):
            shutil.copyfile(shots / name, SCREENSHOTS / name)
    print("timings", timings)

    # what the page showed is what the Delta table holds
    lake = DeltaLake(root=str(lake_root))
    from resources.sessions import SessionNames

    # the key as the lake stores it: the folder's user name ("dev") pseudonymized with the lake's salt
    key = SessionNames.for_lake(sessions, str(lake_root)).key(KEY.replace("~", "/"))
    assert "dev" not in key.split("~")[1]
    part = lake.read(RAW_TRACES, filter=string_field("session_key") == key)
    # the day's run read that file only (the other one starts today), and registered it
    assert set(lake.read(RAW_TRACES, columns=["day"])["day"].to_pylist()) == {DAY}
    assert [r["session_key"] for r in lake.read(SESSION_FILES_SPEC).to_pylist()] == [key]
    whole = lake.read(RAW_TRACES, columns=["session_key"])
    assert part.num_rows > 0
    assert int(shown["rows_written"]) == part.num_rows
    assert int(shown["lines"]) == part.num_rows
    # the run's figures are the sums of the rows' (secrets; personal data, counted apart)
    assert int(shown["secrets_scrubbed"]) > 0
    assert int(shown["secrets_scrubbed"]) == sum(part["secrets_scrubbed"].to_pylist())
    assert int(shown["personal_data_replaced"]) == sum(part["personal_data_replaced"].to_pylist())
    assert int(shown["lines_quarantined"]) == sum(part["quarantined"].to_pylist())
    assert int(shown["table_rows"]) == whole.num_rows
    assert int(shown["partitions_replaced"]) == 1
    # and the file: one row per physical line
    data = (sessions / SESSION_FILES[0]).read_bytes()
    assert part.num_rows == data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
