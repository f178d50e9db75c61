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
        rows.sort(key=lambda r: (r.get("session_key") or "", r.get("step_id") or "", r[_id_column(table)]))
    out = trl_rows(table, rows, all_columns=all_columns, tools_format=tools_format)
    ext = "jsonl" if fmt == "jsonl" else "parquet"
    return write_rows(out, fmt, Path(out_dir) / f"{table}.{ext}"), len(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dagster_project.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True, choices=sorted(TRL_COLUMNS))
    ap.add_argument("--format", default="jsonl", choices=FORMATS)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--lake-root", default=None, help="lake root (default: $TRACELAKE_LAKE_ROOT or ./lakehouse)")
    ap.add_argument("--session", action="append", default=None, help="only these sessions (session keys)")
    ap.add_argument("--all-columns", action="store_true", help="keep provenance columns too")
    ap.add_argument("--tools-format", default="auto", choices=("auto", "objects", "json"))
    args = ap.parse_args(argv)
    from resources import settings
    from resources.lake import DeltaLake

    root = args.lake_root or settings.lake_root()
    path, n = export_table(DeltaLake(root=root), args.table, args.format, args.out,
                           all_columns=args.all_columns, sessions=args.session,
                           tools_format=args.tools_format)
    print(f"wrote {n} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
