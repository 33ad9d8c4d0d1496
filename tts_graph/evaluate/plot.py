"""Accuracy against cost for several runs (PNG, drawn offline with matplotlib's Agg)."""

from __future__ import annotations

import io
from pathlib import Path

from ..files import write_whole
from .summary import Summary


def accuracy_vs_cost(summaries: list[Summary], path: str | Path, *,
                     front: list[Summary] | None = None, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_cost = any(s.cost_per_question > 0 for s in summaries)

    def x_of(s: Summary) -> float:
        return s.cost_per_question if by_cost else s.tokens_per_question

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s in summaries:
        lo, hi = s.ci95
        # clamped: at 0% or 100% the Wilson bound equals the estimate up to rounding, and
        # matplotlib refuses an error bar of -1e-17
        ax.errorbar(x_of(s), s.accuracy * 100, yerr=[[max(0.0, s.accuracy - lo) * 100],
                                                      [max(0.0, hi - s.accuracy) * 100]],
                    fmt="o", capsize=3)
        ax.annotate(s.graph, (x_of(s), s.accuracy * 100), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    if front:
        pts = sorted((x_of(s), s.accuracy * 100) for s in front)
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", linestyle="--",
                color="grey", label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("cost per question (USD)" if by_cost else
                  "tokens per question (no prices known)")
    ax.set_ylabel("accuracy (%), 95% CI")
    tasks = sorted({s.task for s in summaries})
    ax.set_title(title or f"accuracy vs cost — {', '.join(tasks)}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    buf = io.BytesIO()  # drawn in memory: a pipe cannot be seeked (the PNG writer seeks)
    try:
        fig.savefig(buf, format=out.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_whole(out, buf.getvalue())  # a failed write keeps the old plot whole
    return out
