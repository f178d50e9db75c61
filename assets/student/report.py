"""Reports over runs: a markdown table and a plot (PNG with matplotlib when installed,
else a Vega-Lite spec) of the student evaluations and draft heads."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

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
