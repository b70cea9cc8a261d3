"""Figures (matplotlib, Agg backend through `FigureCanvasAgg`, imported lazily; no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any


def ablation_bar_chart(result: dict[str, Any], out: str | Path | IO[bytes], *, dpi: int = 120) -> None:
    """Grouped bar chart of an ablation study: one group per metric, one bar per variant.

    Bars are the mean over seeds (in %) with ±std error bars (none with a single seed); the
    reference (full model) bar is drawn first. `result` is `sbrbench.ablate.ablate`'s output;
    `out` a path or a binary file object (PNG).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics: list[str] = list(result["metrics"])
    variants: list[dict[str, Any]] = list(result["variants"])
    n_v = max(len(variants), 1)
    width = 0.8 / n_v
    x = np.arange(len(metrics), dtype=float)
    fig = Figure(figsize=(max(4.0, 1.2 + len(metrics) * (0.5 + 0.45 * n_v)), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, v in enumerate(variants):
        means = [100 * v["mean"][m] for m in metrics]
        stds = [100 * (v["std"][m] or 0.0) for m in metrics]
        has_err = any(v["std"][m] is not None for m in metrics)
        ax.bar(x + (i - (n_v - 1) / 2) * width, means, width, yerr=stds if has_err else None, capsize=3,
               label=v["name"] + (f" (= {v['alias_of']})" if v.get("alias_of") else ""), edgecolor="black" if i == 0 else None, linewidth=0.8)
    ax.set_xticks(x, metrics)
    ax.set_ylabel("value (%)")
    seeds = len(result.get("seeds", []))
    ax.set_title(f"{result['model']} on {result['dataset']} ({result['split']}, {seeds} seed(s))", fontsize=10)
    ax.legend(fontsize=8, ncols=min(n_v, 4), loc="lower center", bbox_to_anchor=(0.5, 1.08) if n_v > 4 else None)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.savefig(out, format="png", dpi=dpi)
