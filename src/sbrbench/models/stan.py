"""STAN (Garg et al., SIGIR'19; session-rec `STAN`) and V-STAN (session-rec `VSKNN_STAN`).

Stateless and batched (see `sbrbench.models.knn_common`). A lambda <= 0 switches its factor off
(session-rec's `None`). Formulas (models-next §3.3):

* position weight of a current item: w_i = exp((p_i - L) / λ_spw), p_i its last position;
* sim(s, n) = Σ_{i∈S∩T} w_i / (sqrt(Σ_{i∈S} w_i²) · sqrt(|T|)), times the neighbour recency
  exp(-(t_s - t_n) / (λ_snh days)) where the data has times;
* score(i) = Σ_{n∈N_k, i∈n} sim'_n · exp(-|pos_n(i) - pos_n*| / λ_inh).

The recency decay is applied relative to the most recent sampled candidate of each prefix instead
of the test event's timestamp: this multiplies every similarity and score of the prefix by one
positive constant, so neighbours and rankings are session-rec's, and no decay underflows to 0.
`anchor=code` (default, session-rec's code): pos_n* = the last position in n of any item of the
current session; `anchor=paper`: the (last) position in n of the most recent item of the
current session that n contains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sbrbench.models import knn_common as kc
from sbrbench.models.base import register_model
from sbrbench.models.search import Choice, FloatRange, IntRange
from sbrbench.models.sknn import _KNNBase, _member

ANCHORS = ("code", "paper")
VSTAN_SIMILARITIES = ("cosine", "vec")
_BIG = float(1 << 24)


@dataclass
class STANParams:
    """STAN hyper-parameters (session-rec defaults; k = 100)."""

    k: int = 100
    sample_size: int = 5000
    sampling: str = "recent"
    lambda_spw: float = 1.02  # session position weight (clicks); <= 0: off
    lambda_snh: float = 5.0  # neighbour recency (days); <= 0 or no times: off
    lambda_inh: float = 2.05  # item position in the neighbour (clicks); <= 0: off
    anchor: str = "code"  # code | paper
    remind: bool = True
    seed: int = 42


@register_model("stan")
class STAN(_KNNBase):
    """STAN: sequence- and time-aware session kNN (position, recency and in-neighbour decays)."""

    Params: ClassVar[type] = STANParams
    # session-rec's tuning ranges (Ludewig et al. 2021) as continuous log-scale ranges
    search_space: ClassVar[dict[str, Any]] = {
        "k": IntRange(50, 2000, log=True), "sample_size": Choice(1000, 2500, 5000, 10000),
        "lambda_spw": FloatRange(1e-5, 7.24, log=True), "lambda_snh": FloatRange(2.5, 100.0, log=True),
        "lambda_inh": FloatRange(1e-5, 7.24, log=True),
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # session-rec conf/save: diginetica single split (MRR-optimised); rsc15 window (MRR-opt.)
        "diginetica": {"k": 500, "sample_size": 5000, "lambda_spw": 1.25, "lambda_snh": 80.0,
                       "lambda_inh": 5.0},
        "yoochoose1_64": {"k": 1000, "sample_size": 10000, "lambda_spw": 1e-5, "lambda_snh": 10.0,
                          "lambda_inh": 2.0},
        "yoochoose1_4": {"k": 1000, "sample_size": 10000, "lambda_spw": 1e-5, "lambda_snh": 10.0,
                         "lambda_inh": 2.0},
        "yoochoose-sessionrec-100k": {"k": 1000, "sample_size": 10000, "lambda_spw": 1e-5,
                                      "lambda_snh": 10.0, "lambda_inh": 2.0},
    }

    def validate(self) -> None:
        """Check the hyper-parameters."""
        super().validate()
        kc.check_choice(self.name, "anchor", self.params.anchor, ANCHORS)

    def extra_info(self) -> dict[str, Any]:
        """Record whether the recency decay really ran."""
        assert self.index is not None
        used = self.params.lambda_snh > 0 and self.index.time is not None
        return {"lambda_snh_used": used, "anchor": self.params.anchor,
                "time_reference": "most recent sampled candidate (rank-equivalent to the event time)"
                if used else None}

    def _similarity(self, pref: kc.Prefixes, cand: Any) -> np.ndarray:
        p, idx, n = self.params, self.index, self.n_items
        assert idx is not None
        crow = np.repeat(np.arange(pref.n), np.diff(cand.indptr))
        if p.lambda_spw > 0:
            w = np.exp((pref.pos - pref.length[pref.rows]) / p.lambda_spw)
            wsum = kc.restrict(pref.matrix(w, n) @ idx.XT, cand)
        else:
            w = np.ones(pref.rows.shape[0])
            wsum = cand.data.astype(np.float64)
        if getattr(p, "similarity", "cosine") == "vec":
            sims = wsum / np.bincount(pref.rows, minlength=pref.n)[crow]
        else:
            sq = np.bincount(pref.rows, weights=w * w, minlength=pref.n)
            sims = wsum / (np.sqrt(sq[crow]) * np.sqrt(idx.distinct[cand.indices]))
        if p.lambda_snh > 0 and idx.time is not None and cand.nnz:
            t = idx.time[cand.indices]
            nz = np.diff(cand.indptr) > 0
            tref = np.zeros(pref.n)
            tref[nz] = np.maximum.reduceat(t, cand.indptr[:-1][nz])
            sims = sims * np.exp(-(tref[crow] - t) / (p.lambda_snh * 24 * 3600))
        return sims

    def _anchor(self, pref: kc.Prefixes, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """pos_n* of every (prefix row, neighbour) pair."""
        idx, n = self.index, self.n_items
        assert idx is not None
        pn = idx.P[cols]
        qb = pref.matrix(np.ones(pref.rows.shape[0]), n)[rows]
        if self.params.anchor == "code":
            return kc.pair_max(pn, qb)
        qpos = pref.matrix(pref.pos.astype(np.float64), n)[rows]
        a = qpos.multiply(idx.X[cols]).tocsr()
        b = pn.multiply(qb).tocsr()
        a.sort_indices()
        b.sort_indices()
        key = a.copy()
        key.data = a.data * _BIG + b.data
        return np.mod(kc.pair_max(key, key.astype(bool).astype(np.float64)), _BIG)

    def _entries(self, pref: kc.Prefixes, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray) -> tuple[Any, np.ndarray]:
        """The neighbours' item rows and the per-entry score contributions."""
        p, idx = self.params, self.index
        assert idx is not None
        pn = idx.P[cols]
        counts = np.diff(pn.indptr)
        ent = np.repeat(sims, counts)
        if p.lambda_inh > 0:
            anchor = np.repeat(self._anchor(pref, rows, cols), counts)
            ent = ent * np.exp(-np.abs(pn.data - anchor) / p.lambda_inh)
        return pn, ent

    def _finish(self, pref: kc.Prefixes, rows: np.ndarray, pn: Any, ent: np.ndarray) -> np.ndarray:
        if not self.params.remind:
            er = np.repeat(rows, np.diff(pn.indptr))
            ent = np.where(_member(pref, er, pn.indices, self.n_items), 0.0, ent)
        return kc.scatter_scores(pref.n, self.n_items, rows, pn, ent, self.score_dtype)

    def _score(self, full: kc.Prefixes, pref: kc.Prefixes) -> np.ndarray:
        idx, n = self.index, self.n_items
        assert idx is not None
        q = pref.matrix(np.ones(pref.rows.shape[0]), n)
        cand = kc.candidates(q, idx, self.sample_size())
        sims = self._similarity(pref, cand)
        rows, cols, sims = kc.top_k(cand, sims, self.params.k, idx.rec, positive_only=True)
        pn, ent = self._entries(pref, rows, cols, sims)
        return self._finish(pref, rows, pn, ent)


@dataclass
class VSTANParams(STANParams):
    """V-STAN hyper-parameters (session-rec `VSKNN_STAN` defaults): STAN's plus three of V-SKNN's."""

    similarity: str = "cosine"  # cosine (session-rec always uses it) | vec
    lambda_ipw: float = 1.02  # decay of the neighbour's vote by the position of its match in s
    lambda_idf: float = 5.0  # score x (1 + λ_idf · idf(i)); <= 0: off


@register_model("vstan")
class VSTAN(STAN):
    """V-STAN: STAN plus V-SKNN's match-position decay and idf weighting of the items."""

    Params: ClassVar[type] = VSTANParams
    search_space: ClassVar[dict[str, Any]] = {
        **STAN.search_space, "lambda_ipw": FloatRange(1e-5, 10.0, log=True),
        "lambda_idf": Choice(0.0, 1.0, 2.0, 5.0, 10.0),
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # session-rec conf/save diginetica single split (MRR-optimised)
        "diginetica": {"k": 1500, "sample_size": 5000, "lambda_spw": 1.25, "lambda_snh": 100.0,
                       "lambda_inh": 10.0, "lambda_ipw": 10.0, "lambda_idf": 10.0},
    }

    def validate(self) -> None:
        """Check the hyper-parameters."""
        super().validate()
        kc.check_choice("vstan", "similarity", self.params.similarity, VSTAN_SIMILARITIES)

    def _score(self, full: kc.Prefixes, pref: kc.Prefixes) -> np.ndarray:
        p, idx, n = self.params, self.index, self.n_items
        assert idx is not None
        q = pref.matrix(np.ones(pref.rows.shape[0]), n)
        cand = kc.candidates(q, idx, self.sample_size())
        sims = self._similarity(pref, cand)
        rows, cols, sims = kc.top_k(cand, sims, p.k, idx.rec, positive_only=True)
        pn, ent = self._entries(pref, rows, cols, sims)
        counts = np.diff(pn.indptr)
        if p.lambda_idf > 0:
            ent = ent + (ent * idx.idf[pn.indices] * p.lambda_idf)
        if p.lambda_ipw > 0:
            qpos = pref.matrix(pref.pos.astype(np.float64), n)
            last = kc.pair_max(qpos[rows], idx.X[cols])
            ipw = np.exp((last - pref.length[rows]) / p.lambda_ipw)
            ent = ent * np.repeat(ipw, counts)
        return self._finish(pref, rows, pn, ent)

