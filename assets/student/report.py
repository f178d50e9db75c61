"""Reports over runs: a markdown table and a plot (PNG with matplotlib when installed,
else a Vega-Lite spec) of the student evaluations and draft heads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import dagster as dg

from assets.metadata import md_table

STUDENT_SERIES = (("ll_base", "ll base"), ("ll_trained", "ll trained"), ("pair_acc_base", "pair acc base"),
                  ("pair_acc_trained", "pair acc trained"), ("reward_acc", "reward acc"))


def _f(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def runs_table(rows: Sequence[Mapping], limit: int = 20) -> tuple[list[str], list[list[str]]]:
    rows = sorted(rows, key=lambda r: r["created_at"])[-limit:]
    head = ["run", "seed", "pairs", "ll base", "ll trained", "gain", "pair acc base", "pair acc trained",
            "reward acc", "tool valid b/t", "rag pass b/t"]
    body = [[r["run_id"][:12], _f(r.get("seed")), f"{r.get('n_pairs')} ({r.get('pair_source')})", _f(r.get("ll_base")),
             _f(r.get("ll_trained")), _f(r.get("ll_gain")), _f(r.get("pair_acc_base")), _f(r.get("pair_acc_trained")),
             _f(r.get("reward_acc")), f"{_f(r.get('tool_valid_base'), 2)}/{_f(r.get('tool_valid_trained'), 2)}",
             f"{_f(r.get('rag_pass_base'), 2)}/{_f(r.get('rag_pass_trained'), 2)}"] for r in rows]
    return head, body


def vega_spec(rows: Sequence[Mapping], series=STUDENT_SERIES) -> dict:
    values = [{"run": i, "run_id": r["run_id"][:12], "metric": label, "value": r.get(key)}
              for i, r in enumerate(sorted(rows, key=lambda r: r["created_at"]))
              for key, label in series if r.get(key) is not None]
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "data": {"values": values},
            "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "run", "type": "ordinal", "title": "evaluation (oldest first)"},
                         "y": {"field": "value", "type": "quantitative"},
                         "color": {"field": "metric", "type": "nominal"}}}


def png(rows: Sequence[Mapping], path: str, series=STUDENT_SERIES) -> bool:
    """Write the plot as PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = sorted(rows, key=lambda r: r["created_at"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key, label in series:
        pts = [(i, r[key]) for i, r in enumerate(rows) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("evaluation (oldest first)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def spec_json(rows, series=STUDENT_SERIES) -> str:
    return json.dumps(vega_spec(rows, series), default=str)


# ------------------------------------------------------------------ the assets' metadata
# Each report renders what its asset shows beside the write's metadata.

def _r(v, nd: int = 4):
    return "–" if v is None else round(v, nd)


@dataclass
class SplitReport:
    rows: Sequence[Mapping]  # the session_split rows
    eval_share: float
    seed: str
    split_version: int

    def metadata(self) -> dict[str, Any]:
        from assets.student.split import EVAL, TRAIN

        side = {s: [r for r in self.rows if r["split"] == s] for s in (TRAIN, EVAL)}
        return {
            "eval_share": self.eval_share, "seed": self.seed, "split_version": self.split_version,
            "train_sessions": len(side[TRAIN]), "eval_sessions": len(side[EVAL]),
            "forced": sum(r["forced"] for r in self.rows),
            "rows_by_side": md_table(("side", "sessions", "sft", "pairs", "kto"), [
                (s, len(v), sum(r["n_sft"] for r in v), sum(r["n_pairs"] for r in v), sum(r["n_kto"] for r in v))
                for s, v in side.items()]),
        }


@dataclass
class TrainReport:
    row: Mapping  # the student_runs row
    metrics: Mapping  # the trainer's metrics (stages, trainable_params)
    data: Mapping  # rows per kind (StudentData.counts)

    def metadata(self) -> dict[str, Any]:
        row, stages = self.row, self.metrics["stages"]
        return {
            "run_id": row["run_id"], "artifact_uri": dg.MetadataValue.path(row["artifact_uri"]),
            "device": row["device"], "dtype": row["dtype"], "base_model": row["base_model"],
            "train_seconds": row["train_seconds"], "trainable_params": self.metrics["trainable_params"],
            "stages": md_table(("stage", "rows", "steps", "loss first", "loss last", "seconds"), [
                (s, m.get("rows", "–"), m.get("steps", m.get("skipped")), m.get("loss_first"), m.get("loss_last"),
                 m.get("seconds")) for s, m in stages.items()]),
            "data": md_table(("what", "rows"), sorted(self.data.items())),
        }


@dataclass
class EvalReport:
    row: Mapping  # the student_evals row
    device: str
    history: Sequence[Mapping]  # every student_evals row (the over-runs table)

    def metadata(self) -> dict[str, Any]:
        row, f = self.row, _r
        head, body = runs_table(self.history)
        return {
            "run_id": row["run_id"], "device": self.device,
            "pair_source": row["pair_source"], "n_pairs": row["n_pairs"], "n_answers": row["n_answers"],
            "ll_gain": f(row["ll_gain"]), "pair_acc_trained": f(row["pair_acc_trained"]),
            "this_run": md_table(("metric", "base", "trained"), [
                ("chosen-answer log-likelihood / token", f(row["ll_base"]), f(row["ll_trained"])),
                (f"pair accuracy ({row['n_pairs']} pairs: {row['pair_source']})", f(row["pair_acc_base"]),
                 f(row["pair_acc_trained"])),
                (f"implicit-reward accuracy (ref = {json.loads(row['details'] or '{}').get('reward_reference', 'base')})", 0.5,
                 f(row["reward_acc"])),
                (f"tool-call validity ({row['n_tool_prompts']} prompts)", f(row["tool_valid_base"]),
                 f(row["tool_valid_trained"])),
                (f"rag gate pass ({row['n_rag_tasks']} tasks)", f(row["rag_pass_base"]), f(row["rag_pass_trained"]))]),
            "over_runs": md_table(head, body),
            "eval_seconds": row["eval_seconds"],
        }


@dataclass
class DraftReport:
    row: Mapping  # the draft_heads row
    result: Mapping  # evaluate_draft's figures
    history: Sequence[Mapping]  # the last draft_heads rows, oldest first

    def metadata(self) -> dict[str, Any]:
        row, r = self.row, self.result
        return {
            "run_id": row["run_id"], "artifact_uri": dg.MetadataValue.path(row["artifact_uri"]),
            "shard_table": row["shard_table"], "train_tokens": row["n_train_tokens"],
            "eval_positions": row["n_eval_positions"],
            "this_run": md_table(("metric", "draft head", "bigram baseline"), [
                ("top-1 agreement with the verifier", round(r["top1_agreement"], 4),
                 round(r["baseline_top1_agreement"], 4)),
                (f"accepted tokens per {r['chain']}-token chain", round(r["accept_len"], 4),
                 round(r["baseline_accept_len"], 4)),
                ("accepted-length histogram 0..chain", r["accept_hist"], r["baseline_accept_hist"])]),
            "max_scorable_accept_len": round(r["max_scorable_accept_len"], 4),
            "over_runs": md_table(("run", "seed", "top-1", "baseline top-1", "accept len", "baseline accept len"), [
                (h["run_id"][:22], h["seed"], round(h["top1_agreement"] or 0, 3),
                 round(h["baseline_top1_agreement"] or 0, 3), round(h["accept_len"] or 0, 3),
                 round(h["baseline_accept_len"] or 0, 3)) for h in self.history]),
            "plot_vega_lite": dg.MetadataValue.json(vega_spec(self.history, (
                ("accept_len", "draft head"), ("baseline_accept_len", "bigram"))) | {}),
        }
