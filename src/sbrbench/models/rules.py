"""Rule baselines of session-rec: Sequential Rules (SR) and Association Rules (AR).

Rules are mined with vectorised numpy (no loop over events) into a sparse (n_items, n_items)
matrix R, R[a, b] = weight of the rule a -> b; a prefix scores R[last item] (SR optionally adds
earlier items). Faithful details:

* weights are summed in session-rec's loop order (event by event, then by lag), so the float
  sums are bit-identical;
* pruning keeps, per antecedent, the `pruning` heaviest consequents (0 < pruning < 1: session-rec
  keeps len - int(len * pruning) of them), ties in the order the rule was first created
  (`Counter.most_common` is stable);
* scores are divided by their max only where the max is positive: a last item without rules
  gives an all-zero row, never NaN (session-rec returns NaN there and its evaluator fills it
  with 0, so the rankings agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from sbrbench.errors import SbrError
from sbrbench.models import knn_common as kc
from sbrbench.models.base import Model, register_model
from sbrbench.models.sknn import SCORE_WEIGHTINGS, step_weight

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset


def build_rules(
    ante: np.ndarray, cons: np.ndarray, weight: np.ndarray, order: np.ndarray, n_items: int, pruning: float
) -> sp.csr_matrix:
    """Sum `weight` per (ante, cons) in the loop order `order` and prune per antecedent."""
    perm = np.argsort(order, kind="stable")
    key = ante[perm] * n_items + cons[perm]
    w = weight[perm]
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=w, minlength=uniq.shape[0])
    a, b = uniq // n_items, uniq % n_items
    if pruning > 0 and uniq.size:
        srt = np.lexsort((first, -sums, a))
        a, b, sums, first = a[srt], b[srt], sums[srt], first[srt]
        counts = np.bincount(a, minlength=n_items)
        start = np.r_[0, np.cumsum(counts)[:-1]]
        rank = np.arange(a.shape[0]) - np.repeat(start, counts)
        if pruning >= 1:
            keep_n = np.full(n_items, int(pruning))
        else:
            keep_n = counts - (counts * pruning).astype(np.int64)
        keep = rank < keep_n[a]
        a, b, sums = a[keep], b[keep], sums[keep]
    r = sp.csr_matrix((sums, (a, b)), shape=(n_items, n_items))
    r.sort_indices()
    return r


def _positions(offsets: np.ndarray) -> np.ndarray:
    lens = np.diff(offsets)
    return np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lens)


class _RulesBase(Model):
    """Shared plumbing: fit builds `self.rules`, forward reads rows of it."""

    neural: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {"eval_batch_size": 1000}
    score_dtype: Any = np.float32  # tests use float64

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__(n_items, params)
        self.rules: sp.csr_matrix | None = None
        self.fit_info: dict[str, Any] = {}
        if self.params.pruning < 0:
            raise SbrError(f"{self.name} pruning must be >= 0 (0 = keep all rules)")

    def _last_scores(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.rules is None:
            raise RuntimeError(f"{self.name}.forward called before fit")
        seq = batch.seq.detach().cpu().numpy().astype(np.int64)
        length = batch.lengths.detach().cpu().numpy().astype(np.int64)
        last = seq[np.arange(seq.shape[0]), length - 1]
        return self._rows(last), seq, length

    def _rows(self, items: np.ndarray) -> np.ndarray:
        """Dense rule rows of `items`, in `score_dtype`."""
        assert self.rules is not None
        sub = self.rules[items]
        return kc.scatter_scores(items.shape[0], self.n_items, np.arange(items.shape[0]), sub, sub.data,
                                 self.score_dtype)

    def _out(self, scores: np.ndarray, batch: Batch) -> Any:
        return kc.to_output(kc.normalise_rows(scores), batch.seq.device)


@dataclass
class SRParams:
    """Sequential Rules hyper-parameters (session-rec defaults)."""

    steps: int = 10
    weighting: str = "div"  # same | div | linear | linear_sessionrec | log | quadratic
    pruning: float = 20.0  # 0 = keep all; >= 1 top-n per antecedent; < 1 fraction dropped
    session_weighting: str = "div"  # weight of earlier items (last_in_session)
    last_in_session: int = 0  # also score from the m items before the last
    idf_weight: int = 0  # 0 off; 1 multiply, 2 add the min-max scaled idf of the antecedent


@register_model("sr")
class SR(_RulesBase):
    """SR (session-rec SequentialRules): rules a -> b weighted by the lag of b after a."""

    Params: ClassVar[type] = SRParams
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # session-rec conf/save: diginetica single split; rsc15_64 single split; rsc15 window
        "diginetica": {"steps": 15, "weighting": "div"},
        "yoochoose1_64": {"steps": 4, "weighting": "quadratic"},
        "yoochoose1_4": {"steps": 4, "weighting": "quadratic"},
        "yoochoose-sessionrec-100k": {"steps": 8, "weighting": "div"},
    }

    def __init__(self, n_items: int, params: SRParams | None = None) -> None:
        super().__init__(n_items, params)
        p = self.params
        kc.check_choice("sr", "weighting", p.weighting, SCORE_WEIGHTINGS)
        kc.check_choice("sr", "session_weighting", p.session_weighting, SCORE_WEIGHTINGS)
        if p.steps < 1 or p.last_in_session < 0 or p.idf_weight not in (0, 1, 2):
            raise SbrError("sr needs steps >= 1, last_in_session >= 0 and idf_weight in 0, 1, 2")

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Mine the sequential rules of the training sessions read by `splits`."""
        p, n = self.params, self.n_items
        fitted = dataset.fit_sessions(splits)
        kc.require_fit(fitted, dataset)
        sessions, items, offsets = fitted.session, fitted.items, fitted.offsets
        pos = _positions(offsets)
        ev = np.arange(items.shape[0])
        if p.idf_weight:
            events = np.bincount(items, minlength=n).astype(np.float64)
            present = events > 0
            idf = np.zeros(n)
            idf[present] = np.log(sessions.shape[0] / events[present])
            lo, hi = idf[present].min(), idf[present].max()
            idf[present] = (idf[present] - lo) / (hi - lo) if hi > lo else np.nan
        antes, conss, ws, orders = [], [], [], []
        for j in range(1, p.steps + 1):
            e = ev[pos >= j]
            if e.size == 0:
                break
            a = items[e - j]
            w = np.full(e.shape[0], float(step_weight(p.weighting, np.array([j]))[0]))
            if p.idf_weight == 1:
                w = w * idf[a]
            elif p.idf_weight == 2:
                w = w + idf[a]
            antes.append(a)
            conss.append(items[e])
            ws.append(w)
            orders.append(e * (p.steps + 1) + j)
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        self.rules = build_rules(cat(antes), cat(conss), cat(ws), cat(orders), n, p.pruning)
        self.fit_info = {"training_sessions": int(sessions.shape[0]), "fit_splits": list(splits),
                         "rules": int(self.rules.nnz), "no_rules": "all-zero scores (never NaN)"}

    def forward(self, batch: Batch) -> Any:
        """Rule scores from the last item (plus earlier ones with `last_in_session`)."""
        p = self.params
        scores, seq, length = self._last_scores(batch)
        assert self.rules is not None
        for i in range(2, p.last_in_session + 2):
            ok = np.flatnonzero(length >= i)
            if ok.size == 0:
                break
            item = seq[ok, length[ok] - i]
            w = float(step_weight(p.session_weighting, np.array([i]))[0])
            scores[ok] += self._rows(item) * w
        return self._out(scores, batch)


@dataclass
class ARParams:
    """Association Rules hyper-parameters (session-rec defaults)."""

    pruning: float = 20.0


@register_model("ar")
class AR(_RulesBase):
    """AR (session-rec AssociationRules): symmetric co-occurrence counts, scored from the last item."""

    Params: ClassVar[type] = ARParams

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Count every ordered pair of events of each training session, both directions."""
        n = self.n_items
        fitted = dataset.fit_sessions(splits)
        kc.require_fit(fitted, dataset)
        sessions, items, offsets = fitted.session, fitted.items, fitted.offsets
        pos = _positions(offsets)
        lmax = int(np.diff(offsets).max()) if offsets.shape[0] > 1 else 1
        ev = np.arange(items.shape[0])
        antes, conss, orders = [], [], []
        for d in range(1, lmax):
            later = ev[pos >= d]
            earlier = later - d
            base = later * (2 * lmax) + pos[earlier] * 2
            antes += [items[earlier], items[later]]
            conss += [items[later], items[earlier]]
            orders += [base, base + 1]
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        a = cat(antes)
        self.rules = build_rules(a, cat(conss), np.ones(a.shape[0]), cat(orders), n, self.params.pruning)
        self.fit_info = {"training_sessions": int(sessions.shape[0]), "fit_splits": list(splits),
                         "rules": int(self.rules.nnz), "no_rules": "all-zero scores (never NaN)"}

    def forward(self, batch: Batch) -> Any:
        """Rule scores of the last item."""
        scores, _, _ = self._last_scores(batch)
        return self._out(scores, batch)
