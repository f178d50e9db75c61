"""Normalize preference pairs with a data-juicer recipe, explaining every drop.

A recipe is a data-juicer YAML config (``recipes/replaysim/<name>.yaml``) whose
``process`` list names built-in ops and ours (assets/pairs/dj_ops.py). We run it in
process, op by op, the way data-juicer's executor does (``op.run`` / ``op.process``), but
stop between stats and reduction so that for every row a Filter or Deduplicator drops we
keep the op, its ``__dj__stats__`` values (or hash) and a readable reason.

Each pair becomes one data-juicer sample with rendered text fields the recipe's ops use:

- ``text``: the prompt's last user/tool turn + chosen + rejected (per-turn dedup key);
- ``chosen_text`` / ``rejected_text``: the answer's text with tool calls as ``name(args)``;
- ``chosen_content``: the chosen answer's prose only (language ID);
- ``prompt`` / ``chosen`` / ``rejected`` / ``tools``: the JSON columns, unchanged;
- ``strategy`` / ``rejected_failure``: what made the pair (for ``pair_validity_filter``);
- ``invalid_rule`` / ``invalid_reason``: a rule the pair judge already applied (``judge_*``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assets.pairs.dj_env import block_runtime_installs
from assets.pairs.messages import dumps, last_turn_text, loads, message_text
from resources import settings

RECIPES_DIR = settings.RECIPES_DIR / "replaysim"
ROW_ID = "__tl_row__"
SAMPLE_FIELDS = ("text", "chosen_text", "rejected_text", "chosen_content",
                 "prompt", "chosen", "rejected", "tools", "strategy", "rejected_failure",
                 "invalid_rule", "invalid_reason")
_BOUND_ATTRS = ("min_len", "max_len", "min_ratio", "max_ratio", "min_num", "max_num",
                "min_score", "max_score", "min_val", "max_val")


_DJ_LOCK = threading.Lock()
_DJ_READY = False


def ensure_data_juicer():
    """Block installs, import data-juicer's ops and register ours. Returns the registry."""
    global _DJ_READY
    with _DJ_LOCK:
        block_runtime_installs()
        if not _DJ_READY:
            import data_juicer.ops  # noqa: F401  (registers the built-in ops)

            import assets.pairs.dj_ops  # noqa: F401  (registers ours)

            _DJ_READY = True
    from data_juicer.ops.base_op import OPERATORS

    return OPERATORS


# ------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    text: str
    config: dict

    @property
    def version(self) -> str:
        """Content hash of the YAML: any edit to a recipe is a new version."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def process(self) -> list[dict]:
        return self.config.get("process") or []

    @property
    def num_proc(self) -> int:
        return int(self.config.get("np") or 1)

    @property
    def text_key(self) -> str:
        keys = self.config.get("text_keys") or "text"
        return keys[0] if isinstance(keys, list) else keys

    @property
    def op_names(self) -> list[str]:
        return [next(iter(p)) for p in self.process]


def list_recipes(recipes_dir: str | Path | None = None) -> list[str]:
    d = Path(recipes_dir or RECIPES_DIR)
    return sorted({p.stem for p in d.glob("*.y*ml") if p.suffix in (".yaml", ".yml")})


def load_recipe(name: str = "default", recipes_dir: str | Path | None = None) -> Recipe:
    """A recipe by name (a YAML file in ``recipes_dir``) or by path; validated."""
    d = Path(recipes_dir or RECIPES_DIR)
    p = Path(name)
    if p.suffix not in (".yaml", ".yml") or not p.is_file():
        p = next((d / f"{name}{ext}" for ext in (".yaml", ".yml") if (d / f"{name}{ext}").is_file()), None)
        if p is None:
            raise FileNotFoundError(f"no recipe {name!r} in {d} (have: {list_recipes(d)})")
    text = p.read_text(encoding="utf-8")
    config = yaml.safe_load(text) or {}
    recipe = Recipe(name=p.stem, path=p.resolve(), text=text, config=config)
    validate_recipe(recipe)
    return recipe


def validate_recipe(recipe: Recipe) -> None:
    cfg = recipe.config
    if not isinstance(cfg, dict) or not isinstance(cfg.get("process"), list) or not cfg["process"]:
        raise ValueError(f"recipe {recipe.name}: needs a non-empty 'process' list")
    if cfg.get("skip_op_error"):
        raise ValueError(f"recipe {recipe.name}: skip_op_error must stay false (op errors are never swallowed)")
    registry = ensure_data_juicer()
    seen: Counter = Counter()
    for item in cfg["process"]:
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"recipe {recipe.name}: each process item is {{op_name: {{args}}}}, got {item!r}")
        name, args = next(iter(item.items()))
        if name not in registry.modules:
            raise KeyError(f"recipe {recipe.name}: unknown data-juicer op {name!r}")
        if (args or {}).get("skip_op_error"):
            raise ValueError(f"recipe {recipe.name}: {name}: skip_op_error must stay false")
        if _installs_at_runtime(registry.modules[name]):
            raise ValueError(f"recipe {recipe.name}: op {name!r} runs pip/mim install itself; "
                             "tracelake never installs packages at run time")
        seen[name] += 1
    from data_juicer.ops.base_op import Filter

    for name, n in seen.items():
        if n > 1 and issubclass(registry.modules[name], Filter):
            # data-juicer caches a Filter's stats by key: a second instance would reuse the
            # first one's statistics (even on another text_key) and silently filter on them
            raise ValueError(f"recipe {recipe.name}: filter {name!r} appears {n} times; data-juicer "
                             "would reuse the first one's stats for the others")


_SUBPROCESS_INSTALL = re.compile(r"""subprocess\.\w+\(\s*\[[^\]]*["'](?:pip|mim|uv)["']""")


def _installs_at_runtime(op_cls) -> bool:
    """Some data-juicer ops call ``pip install`` themselves (not through LazyLoader)."""
    import inspect

    try:
        return bool(_SUBPROCESS_INSTALL.search(inspect.getsource(inspect.getmodule(op_cls))))
    except (OSError, TypeError):
        return False


def build_ops(recipe: Recipe, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list:
    """Instantiate the recipe's ops like data-juicer's config does, errors never skipped."""
    ensure_data_juicer()
    from data_juicer.ops import load_ops

    process = []
    for item in copy.deepcopy(recipe.process):
        name, args = next(iter(item.items()))
        args = dict(args or {})
        args.setdefault("text_key", recipe.text_key)
        if recipe.num_proc <= 1 and "num_proc" not in args:
            # in this process: datasets>=4 forks a pool even for num_proc=1, which would
            # reload every model per op and per run; num_proc=None maps in process
            args.setdefault("auto_op_parallelism", False)
            args["num_proc"] = None
        else:
            args.setdefault("num_proc", recipe.num_proc)
        args["skip_op_error"] = False
        args.update((overrides or {}).get(name, {}))
        process.append({name: args})
    return load_ops(process)


# ------------------------------------------------------------------------ samples

def pair_sample(row: Mapping[str, Any], i: int) -> dict:
    prompt = loads(row["prompt"], [])
    chosen = (loads(row["chosen"], []) or [{}])[0]
    rejected = (loads(row["rejected"], []) or [{}])[0]
    chosen_text, rejected_text = message_text(chosen), message_text(rejected)
    return {
        ROW_ID: i,
        "text": f"{last_turn_text(prompt)}\n\n### chosen\n{chosen_text}\n\n### rejected\n{rejected_text}",
        "chosen_text": chosen_text,
        "rejected_text": rejected_text,
        "chosen_content": chosen.get("content") or "",
        "prompt": row["prompt"],
        "chosen": row["chosen"],
        "rejected": row["rejected"],
        "tools": row.get("tools") or "",
        "strategy": row.get("strategy") or "",
        "rejected_failure": row.get("rejected_failure") or "",
        "invalid_rule": row.get("invalid_rule") or "",  # set by the pair judge (judge_*)
        "invalid_reason": row.get("invalid_reason") or "",
    }


def to_dataset(samples: list[dict]):
    ensure_data_juicer()
    from data_juicer.core.data import NestedDataset

    return NestedDataset.from_list(samples)


# ----------------------------------------------------------------------- running

@dataclass
class OpReport:
    name: str
    kind: str
    rows_in: int
    dropped: int
    seconds: float


@dataclass
class Drop:
    row: int
    op: str
    reason: str
    stats: dict


@dataclass
class NormalizeResult:
    recipe: str
    recipe_version: str
    rows_in: int
    kept: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    ops: list[OpReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def drops_by_op(self) -> dict[str, int]:
        return {r.name: r.dropped for r in self.ops}

    def check_accounting(self) -> None:
        if len(self.kept) + len(self.rejections) != self.rows_in:
            raise AssertionError(f"normalize accounting: kept {len(self.kept)} + dropped "
                                 f"{len(self.rejections)} != rows in {self.rows_in}")


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (list, tuple)) and len(v) > 16:
        return f"<{len(v)} values>"
    return v


def describe_drop(op, stats: dict) -> str:
    if hasattr(op, "drop_reason"):
        return op.drop_reason(stats)
    vals = ", ".join(f"{k}={_plain(v)}" for k, v in stats.items())
    bounds = [f"{a}={getattr(op, a)}" for a in _BOUND_ATTRS
              if getattr(op, a, None) is not None and getattr(op, a) != sys.maxsize]
    if getattr(op, "reversed_range", False):
        return f"{vals} inside the excluded range [{', '.join(bounds)}]"
    return f"{vals} outside [{', '.join(bounds)}]" if bounds else vals


@contextlib.contextmanager
def quiet_progress():
    """No per-op progress bars in asset logs (restored afterwards)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def run_ops(ds, ops) -> tuple[Any, list[Drop], list[OpReport]]:
    """Run data-juicer ops one by one on a dataset carrying ``ROW_ID``.

    Filters: ``op.run(ds, reduce=False)`` computes ``__dj__stats__``, then the same
    ``filter(op.process)`` data-juicer's own ``Filter.run`` does. Deduplicators:
    ``compute_hash`` then ``op.process``. Other ops: ``op.run``. Rows missing afterwards
    are recorded with the op, its stats and a reason.
    """
    from data_juicer.ops.base_op import Deduplicator, Filter
    from data_juicer.utils.constant import Fields

    drops: list[Drop] = []
    reports: list[OpReport] = []
    for op in ops:
        t0 = time.perf_counter()
        rows_in = len(ds)
        cols_before = set(ds.column_names)
        if rows_in == 0:
            reports.append(OpReport(op._name, type(op).__mro__[1].__name__, 0, 0, 0.0))
            continue
        if isinstance(op, Filter):
            kind = "filter"
            staged = op.run(ds, reduce=False)
            out = staged.filter(op.process, num_proc=op.runtime_np(), batch_size=op.batch_size,
                                desc=op._name + "_process")
        elif isinstance(op, Deduplicator):
            kind = "deduplicator"
            staged = op.run(ds, reduce=False)
            out, _ = op.process(staged)
        else:
            kind = type(op).__mro__[1].__name__.lower()
            staged = ds
            out = op.run(ds)
        kept_ids = set(out[ROW_ID])
        ids = staged[ROW_ID]
        dropped_pos = [p for p, r in enumerate(ids) if r not in kept_ids]
        if dropped_pos:
            if kind == "filter":
                before = (ds.select(dropped_pos)[Fields.stats] if Fields.stats in cols_before
                          else [{}] * len(dropped_pos))
                after = staged.select(dropped_pos)[Fields.stats]
                for p, b, st in zip(dropped_pos, before, after):
                    st = {k: _plain(v) for k, v in (st or {}).items() if v is not None}
                    # the op's own statistics: keys it added (all stats if it reused cached ones)
                    own = {k: v for k, v in st.items() if k not in (b or {})} or st
                    drops.append(Drop(ids[p], op._name, describe_drop(op, own), own))
            elif kind == "deduplicator":
                hash_cols = [c for c in staged.column_names if c not in cols_before]
                first: dict = {}
                scalar = [c for c in hash_cols if not isinstance(staged[0][c], (list, dict))]
                if scalar:
                    for r, h in zip(out[ROW_ID], out[scalar[0]]):
                        first.setdefault(h, r)
                sel = staged.select(dropped_pos)
                for p, rec in zip(dropped_pos, sel):
                    st = {c: _plain(rec[c]) for c in hash_cols}
                    dup = first.get(rec[scalar[0]]) if scalar else None
                    if dup is not None:
                        st["duplicate_of_row"] = dup
                    drops.append(Drop(ids[p], op._name,
                                      "duplicate" + ("" if dup is None else " of an earlier pair"), st))
            else:
                for p in dropped_pos:
                    drops.append(Drop(ids[p], op._name, f"removed by {kind} {op._name}", {}))
        # drop hash columns of deduplicators (as data-juicer's exporter does) to keep ds lean
        extra = [c for c in out.column_names if c not in cols_before and c != Fields.stats]
        if extra and kind == "deduplicator":
            out = out.remove_columns(extra)
        ds = out
        reports.append(OpReport(op._name, kind, rows_in, len(dropped_pos), time.perf_counter() - t0))
    return ds, drops, reports


def _dedup_key(ops, name: str) -> str:
    op = next((o for o in ops if o._name == name), None)
    key = getattr(op, "text_key", "text")
    return "last turn + chosen + rejected" if key == "text" else key


def normalize_pairs(pairs: Sequence[Mapping[str, Any]], recipe: Recipe, *,
                    overrides: Mapping[str, Mapping[str, Any]] | None = None,
                    ops: list | None = None) -> NormalizeResult:
    """Run ``recipe`` over pair rows (PREFERENCE_PAIRS shape).

    Returns kept rows (NORMALIZED_PAIRS shape: + language, recipe, recipe_version) and
    rejections (PAIR_REJECTIONS shape: + op, reason, stats JSON, recipe, recipe_version);
    kept + rejections == rows in, always.
    """
    t0 = time.perf_counter()
    res = NormalizeResult(recipe.name, recipe.version, len(pairs))
    if not pairs:
        return res
    ops = ops if ops is not None else build_ops(recipe, overrides)
    ds = to_dataset([pair_sample(r, i) for i, r in enumerate(pairs)])
    with quiet_progress():
        final, drops, res.ops = run_ops(ds, ops)
    tag = {"recipe": recipe.name, "recipe_version": recipe.version}

    from data_juicer.ops.base_op import Mapper
    from data_juicer.utils.constant import Fields

    kept_ids = final[ROW_ID]
    langs = [None] * len(kept_ids)
    if Fields.stats in final.column_names and "offline_language_id_filter" in recipe.op_names:
        langs = [(st or {}).get("offline_lang") for st in final[Fields.stats]]
    changed: dict[str, list] = {}
    if any(isinstance(op, Mapper) for op in ops):  # a mapper may rewrite the JSON columns
        changed = {c: final[c] for c in ("prompt", "chosen", "rejected", "tools")}
    for k, (rid, lang) in enumerate(zip(kept_ids, langs)):
        row = dict(pairs[rid])
        for c, vals in changed.items():
            row[c] = vals[k] or None if c == "tools" else vals[k]
        res.kept.append(row | {"language": lang} | tag)
    pair_ids = [p["pair_id"] for p in pairs]
    for d in drops:
        st = dict(d.stats)
        reason = d.reason
        if "duplicate_of_row" in st:
            st["duplicate_of"] = pair_ids[st.pop("duplicate_of_row")]
            reason = f"duplicate of pair {st['duplicate_of']} (same {_dedup_key(ops, d.op)})"
        res.rejections.append(dict(pairs[d.row]) | {"op": d.op, "reason": reason,
                                                    "stats": dumps(st)} | tag)
    res.seconds = time.perf_counter() - t0
    res.check_accounting()
    return res
