"""Paired significance tests on per-example metric values (one owner for `evaluate` and `ablate`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank and paired t-test of `b` against `a` (scipy.stats).

    Pairs where either value is NaN (examples without a target) are dropped. Identical samples give
    p = 1 for both tests; a constant non-zero difference gives the t-test p = 0 (infinite statistic).

    Returns {"n_examples", "mean_a", "mean_b", "diff" (= mean_b − mean_a), "wins_b", "ties",
    "wins_a", "wilcoxon": {"statistic", "pvalue"}, "ttest_rel": {"statistic", "pvalue"}}.
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = b - a
    if d.shape[0] == 0 or np.all(d == 0):
        w_stat = t_stat = 0.0
        p_w = p_t = 1.0
    else:
        w = stats.wilcoxon(b, a, zero_method="wilcox", alternative="two-sided")
        p_w, w_stat = float(w.pvalue), float(w.statistic)
        t = stats.ttest_rel(b, a)
        p_t, t_stat = float(t.pvalue), float(t.statistic)
        if math.isnan(p_t):
            p_t = 0.0
    n = int(d.shape[0])
    ma = float(a.mean()) if n else math.nan
    mb = float(b.mean()) if n else math.nan
    return {
        "n_examples": n,
        "mean_a": ma,
        "mean_b": mb,
        "diff": mb - ma,
        "wins_b": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "wins_a": int((d < 0).sum()),
        "wilcoxon": {"statistic": w_stat, "pvalue": p_w},
        "ttest_rel": {"statistic": t_stat, "pvalue": p_t},
    }
