"""Lake → split → training rows → train → evaluate, without Dagster (assets, CLI and the
benchmark all call these)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.student import data as D
from assets.student.split import EVAL, TRAIN, partition_rows, split_sessions
from assets.student.tables import SESSION_SPLIT
from resources.lake import DeltaLake

SOURCES = {"sft": SFT_EXAMPLES, "pairs": NORMALIZED_PAIRS, "kto": KTO_EXAMPLES}


def read_source(lake: DeltaLake, spec) -> list[dict]:
    return lake.read(spec).to_pylist() if lake.exists(spec) else []


def data_versions(lake: DeltaLake, specs=(SFT_EXAMPLES, NORMALIZED_PAIRS, KTO_EXAMPLES, SESSION_SPLIT)) -> dict:
    return {s.path: lake.version(s) for s in specs}


def compute_split(lake: DeltaLake, eval_share: float, seed: str) -> list[dict]:
    rows = {name: read_source(lake, spec) for name, spec in SOURCES.items()}
    counts: dict[str, dict[str, int]] = {}
    for name, rs in rows.items():
        for r in rs:
            c = counts.setdefault(r["session_key"], {})
            c[name] = c.get(name, 0) + 1
    return split_sessions(counts.keys(), eval_share, seed, counts)


@dataclass
class StudentData:
    sft_train: list[dict] = field(default_factory=list)
    pairs_train: list[dict] = field(default_factory=list)
    kto_train: list[dict] = field(default_factory=list)
    answers_eval: list[dict] = field(default_factory=list)
    pairs_eval: list[dict] = field(default_factory=list)
    tools_eval: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def pair_source(self) -> str:
        srcs = sorted({p["pair_source"] for p in self.pairs_eval})
        return "+".join(srcs) or "none"


def build_data(lake: DeltaLake, split_rows: Sequence[Mapping], tok, *, max_prompt_tokens: int = 64,
               max_answer_tokens: int = 40, min_pairs: int = 16, mine: bool = True) -> StudentData:
    """Training rows from train sessions only; evaluation rows from eval sessions only.

    When a side holds fewer than ``min_pairs`` real preference pairs and ``mine`` is on,
    context-mismatch pairs mined from that side's own SFT rows fill it up (labelled)."""
    s = D.RenderSettings(max_prompt_tokens=max_prompt_tokens, max_answer_tokens=max_answer_tokens)
    count = D.token_counter(tok)
    out = StudentData()
    c = out.counts
    sft_tr, sft_ev, sft_unk = partition_rows(read_source(lake, SFT_EXAMPLES), split_rows)
    pr_tr, pr_ev, pr_unk = partition_rows(read_source(lake, NORMALIZED_PAIRS), split_rows)
    kto_tr, _kto_ev, kto_unk = partition_rows(read_source(lake, KTO_EXAMPLES), split_rows)
    c["unsplit_rows_skipped"] = len(sft_unk) + len(pr_unk) + len(kto_unk)
    out.sft_train, c["sft_train_dropped"] = D.build_rows(sft_tr, D.sft_example, count, s)
    out.answers_eval, c["sft_eval_dropped"] = D.build_rows(sft_ev, D.sft_example, count, s)
    out.pairs_train, c["pairs_train_dropped"] = D.build_rows(pr_tr, D.pair_example, count, s)
    out.pairs_eval, c["pairs_eval_dropped"] = D.build_rows(pr_ev, D.pair_example, count, s)
    out.kto_train, c["kto_train_dropped"] = D.build_rows(kto_tr, D.kto_example, count, s)
    c["real_pairs_train"], c["real_pairs_eval"] = len(out.pairs_train), len(out.pairs_eval)
    if mine and len(out.pairs_train) < min_pairs:
        out.pairs_train += D.mined_pairs(out.sft_train, min_pairs - len(out.pairs_train))
    if mine and len(out.pairs_eval) < min_pairs:
        out.pairs_eval += D.mined_pairs(out.answers_eval, min_pairs - len(out.pairs_eval))
    c["mined_pairs_train"] = len(out.pairs_train) - c["real_pairs_train"]
    c["mined_pairs_eval"] = len(out.pairs_eval) - c["real_pairs_eval"]
    # chosen answers of held-out real pairs count as held-out answers too
    out.tools_eval = [r for r in out.answers_eval if r.get("has_tool_call") and D.tool_names(r.get("tools"))]
    c.update(sft_train=len(out.sft_train), answers_eval=len(out.answers_eval), pairs_train=len(out.pairs_train),
             pairs_eval=len(out.pairs_eval), kto_train=len(out.kto_train), tools_eval=len(out.tools_eval),
             train_sessions=sum(r["split"] == TRAIN for r in split_rows),
             eval_sessions=sum(r["split"] == EVAL for r in split_rows))
    return out


def eval_answers(d: StudentData) -> list[dict]:
    """Held-out answers scored for log-likelihood: SFT answers + chosen side of real pairs."""
    real = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in d.pairs_eval
            if p["pair_source"] == "normalized_pairs"]
    return list(d.answers_eval) + real


def summary_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
