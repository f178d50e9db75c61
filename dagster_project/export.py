"""Export a pairs-family table as files a trainer loads unchanged.

``python -m dagster_project.export --table sft_examples --format jsonl --out DIR`` writes
``DIR/sft_examples.jsonl`` (or ``.parquet``) that ``datasets.load_dataset("json", ...)`` /
``("parquet", ...)`` reads as TRL conversational rows: JSON columns decoded into nested
lists/dicts, tool-call ``arguments`` kept as JSON strings, ``content`` always a string.

The replay sample (gold/replay_sample, old rows to mix into a new fine-tune) exports as
two tables of the same shapes: ``replay_messages`` (prose and instruction rows:
``messages``) and ``replay_preference`` (``prompt``/``chosen``/``rejected``), in rank order
with their ``replay:`` ids.

``tools`` is decoded too (``--tools-format objects``). When the tool schemas of the rows
cannot share one Arrow type (e.g. a property's ``default`` is a number in one schema and a
string in another), ``auto`` (the default) keeps ``tools`` as a JSON string per row, the
form TRL also accepts for tools; ``objects`` then fails instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from assets.pairs.tables import NORMALIZED_PAIRS, PREFERENCE_PAIRS

from assets.examples.tables import KTO_EXAMPLES, SDPO_EXAMPLES, SFT_EXAMPLES

from assets.corpus.tables import REPLAY_SAMPLE
from resources.lake import string_field

TABLES = {s.name: s for s in (SFT_EXAMPLES, KTO_EXAMPLES, SDPO_EXAMPLES, PREFERENCE_PAIRS,
                              NORMALIZED_PAIRS)}
# the replay sample, split by the trainer each part feeds: {export name: preference rows?}
REPLAY_PARTS = {"replay_messages": False, "replay_preference": True}
TABLES.update(dict.fromkeys(REPLAY_PARTS, REPLAY_SAMPLE))
JSON_COLUMNS = ("messages", "prompt", "chosen", "rejected", "completion", "hinted_prompt", "tools")
TRL_COLUMNS = {
    "sft_examples": ("messages", "tools"),
    "kto_examples": ("prompt", "completion", "label", "tools"),
    "sdpo_examples": ("prompt", "hinted_prompt", "completion", "hint", "error_kind", "tools"),
    "preference_pairs": ("prompt", "chosen", "rejected", "tools"),
    "normalized_pairs": ("prompt", "chosen", "rejected", "tools"),
    "replay_messages": ("messages", "tools"),
    "replay_preference": ("prompt", "chosen", "rejected", "tools"),
}
FORMATS = ("jsonl", "parquet")
ATIF = "atif"  # --format atif: every session of silver/trace_turns as an ATIF trajectory file


def _id_column(table: str) -> str:
    if table in REPLAY_PARTS:
        return "id"
    return "pair_id" if table.endswith("pairs") else "example_id"


def trl_rows(table: str, rows: Iterable[Mapping[str, Any]], *, all_columns: bool = False,
             tools_format: str = "auto") -> list[dict]:
    """Table rows → trainer rows (JSON columns decoded). ``all_columns`` keeps provenance."""
    if table not in TRL_COLUMNS:
        raise KeyError(f"unknown table {table!r}; exportable: {sorted(TRL_COLUMNS)}")
    if tools_format not in ("auto", "objects", "json"):
        raise ValueError("tools_format must be auto | objects | json")
    keep = None if all_columns else (_id_column(table), *TRL_COLUMNS[table])
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            if keep is not None and k not in keep:
                continue
            if k in JSON_COLUMNS and k != "tools" and isinstance(v, str):
                v = json.loads(v)
            elif k == "tools" and tools_format != "json" and isinstance(v, str):
                v = json.loads(v) if v else None
            elif isinstance(v, (dt.datetime, dt.date)):
                v = v.isoformat()
            row[k] = v
        out.append(row)
    if out and "tools" in out[0] and tools_format == "auto":
        try:
            pa.array([r.get("tools") for r in out])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            for r in out:
                if r.get("tools") is not None:
                    r["tools"] = json.dumps(r["tools"], ensure_ascii=False)
    return out


def write_rows(rows: Sequence[dict], fmt: str, path: str | Path) -> Path:
    """Write rows as JSONL / Parquet. Every string in them goes through the privacy scrubber
    first: exports leave the machine (idempotent on already-scrubbed data)."""
    from resources import privacy

    rows, _ = privacy.scrub_json(list(rows))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(rows)) if rows else pa.table({})
        pq.write_table(table, path)
    else:
        raise ValueError(f"format must be one of {FORMATS}")
    return path


def export_table(lake, table: str, fmt: str, out_dir: str | Path, *, all_columns: bool = False,
                 sessions: Sequence[str] | None = None, tools_format: str = "auto") -> tuple[Path, int]:
    """Read ``table`` through the lake and write ``out_dir/<table>.<fmt>``; (path, rows)."""
    spec = TABLES[table]
    if table in REPLAY_PARTS:
        is_pref = string_field("section_type") == "preference"
        rows = lake.read(spec, filter=is_pref if REPLAY_PARTS[table] else ~is_pref).to_pylist()
        rows.sort(key=lambda r: r["rank"])
    else:
        flt = string_field("session_key").isin(list(sessions)) if sessions else None
        rows = lake.read(spec, filter=flt).to_pylist()
        if table == "preference_pairs":  # candidates that break a validity rule are not training data
            rows = [r for r in rows if not r.get("invalid_rule")]
        rows.sort(key=lambda r: (r.get("session_key") or "", r.get("step_id") or "", r[_id_column(table)]))
    out = trl_rows(table, rows, all_columns=all_columns, tools_format=tools_format)
    ext = "jsonl" if fmt == "jsonl" else "parquet"
    return write_rows(out, fmt, Path(out_dir) / f"{table}.{ext}"), len(out)


def export_atif(lake, out_dir: str | Path, *, sessions: Sequence[str] | None = None) -> tuple[Path, int]:
    """Every conversation of trace_turns as ``out_dir/<session>.atif.json`` (ATIF v1.4,
    validated against the RFC's schema before it is written); (directory, files)."""
    import hashlib
    import re

    from assets.traces.atif import trajectories_from_turns, validate
    from assets.traces.tables import TRACE_TURNS

    turns = lake.read(TRACE_TURNS, filter=string_field("session_key").isin(list(sessions)) if sessions else None
                      ).to_pylist()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    from resources import privacy

    for traj in trajectories_from_turns(turns):
        traj, _ = privacy.scrub_json(traj)
        validate(traj)
        sid = traj["session_id"]
        key = traj["extra"]["tracelake"]["session_key"]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", sid)[-80:].strip("_") or "session"
        digest = hashlib.sha1(f"{key}\0{sid}".encode()).hexdigest()[:10]
        path = out / f"{stem}-{digest}.atif.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(traj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        n += 1
    return out, n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dagster_project.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=None, choices=sorted(TRL_COLUMNS),
                    help="training table to export (not needed with --format atif)")
    ap.add_argument("--format", default="jsonl", choices=FORMATS + (ATIF,),
                    help="jsonl | parquet (a training table) | atif (every session of trace_turns)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--lake-root", default=None, help="lake root (default: $TRACELAKE_LAKE_ROOT or ./lakehouse)")
    ap.add_argument("--session", action="append", default=None, help="only these sessions (session keys)")
    ap.add_argument("--all-columns", action="store_true", help="keep provenance columns too")
    ap.add_argument("--tools-format", default="auto", choices=("auto", "objects", "json"))
    args = ap.parse_args(argv)
    from resources import settings
    from resources.lake import DeltaLake

    root = args.lake_root or settings.lake_root()
    if args.format == ATIF:
        path, n = export_atif(DeltaLake(root=root), args.out, sessions=args.session)
        print(f"wrote {n} ATIF trajectories to {path}")
        return 0
    if args.table is None:
        ap.error("--table is required for --format jsonl / parquet")
    path, n = export_table(DeltaLake(root=root), args.table, args.format, args.out,
                           all_columns=args.all_columns, sessions=args.session,
                           tools_format=args.tools_format)
    print(f"wrote {n} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
