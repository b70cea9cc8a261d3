"""Session-kNN (SKNN, session-rec `ContextKNN`) and V-SKNN (session-rec `VMContextKNN`).

Stateless and batched; see `sbrbench.models.knn_common` for candidates, sampling and ties, and
docs in models-next §3.1-3.2 for the formulas. Where session-rec has a bug, the correct form is
the default and the bug-compatible one has its own name:

* SKNN `cosine_sessionrec`: session-rec computes `li / sqrt(la) * sqrt(lb)` with `la` = the
  *neighbour's* item count and `lb` the current session's (argument order of `calc_similarity`),
  i.e. |S∩T|·sqrt(|S|)/sqrt(|T|) = the correct cosine × |S|. The ranking of neighbours and of
  items is the same; only `remind`/`pop_boost`, which add absolute amounts, see the difference.
* V-SKNN `weighting=linear_sessionrec`: w(p) = 1 - 0.1 (L - p) if p <= 10 else 0 (the most
  recent items of a session longer than 10 get 0, older ones go negative); `linear` is
  1 - 0.1 (L - p) for the last 10 positions, 0 before.
* V-SKNN `weighting_score=linear_sessionrec`: 1 - 0.1 step for step <= 100 (negative beyond 10);
  `linear` stops at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.models import knn_common as kc
from sbrbench.models.base import Model, register_model
from sbrbench.models.search import Choice, IntRange

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

SKNN_SIMILARITIES = ("jaccard", "cosine", "cosine_sessionrec", "tanimoto", "binary")
POSITION_WEIGHTINGS = ("same", "div", "linear", "linear_sessionrec", "log", "quadratic")
SCORE_WEIGHTINGS = ("same", "div", "linear", "linear_sessionrec", "log", "quadratic")
VSKNN_SIMILARITIES = ("vec", "cosine")


def position_weight(name: str, p: np.ndarray, length: np.ndarray) -> np.ndarray:
    """V-SKNN's weight of the item at (last) 1-based position p of a session of length L."""
    p = p.astype(np.float64)
    length = length.astype(np.float64)
    if name == "same":
        return np.ones_like(p)
    if name == "div":
        return p / length
    if name == "linear":
        return np.where(length - p < 10, 1 - (0.1 * (length - p)), 0.0)
    if name == "linear_sessionrec":
        return np.where(p <= 10, 1 - (0.1 * (length - p)), 0.0)
    if name == "log":
        return 1 / np.log10((length - p) + 1.7)
    if name == "quadratic":
        return (p / length) ** 2
    raise SbrError(f"unknown position weighting {name!r}; choose from {', '.join(POSITION_WEIGHTINGS)}")


def step_weight(name: str, step: np.ndarray) -> np.ndarray:
    """Decay of a lag/step i >= 1 (V-SKNN `weighting_score`, SR `weighting`/`session_weighting`)."""
    i = step.astype(np.float64)
    if name == "same":
        return np.ones_like(i)
    if name == "div":
        return 1 / i
    if name == "linear":
        return np.where(i < 10, 1 - (0.1 * i), 0.0)
    if name == "linear_sessionrec":
        return np.where(i <= 100, 1 - (0.1 * i), 0.0)
    if name == "log":
        return 1 / np.log10(i + 1.7)
    if name == "quadratic":
        return 1 / (i * i)
    raise SbrError(f"unknown step weighting {name!r}; choose from {', '.join(SCORE_WEIGHTINGS)}")


def sknn_similarity(name: str, inter: np.ndarray, s_len: np.ndarray, t_len: np.ndarray) -> np.ndarray:
    """SKNN similarity of item sets from |S∩T|, |S| (current) and |T| (neighbour)."""
    if name == "jaccard":
        return inter / (s_len + t_len - inter)
    if name == "cosine":
        return inter / (np.sqrt(s_len) * np.sqrt(t_len))
    if name == "cosine_sessionrec":
        return inter / np.sqrt(t_len) * np.sqrt(s_len)
    if name == "tanimoto":
        return inter / (s_len + t_len - inter)
    if name == "binary":
        return (2 * inter) / ((2 * inter) + s_len + t_len)
    raise SbrError(f"unknown similarity {name!r}; choose from {', '.join(SKNN_SIMILARITIES)}")


class _KNNBase(Model):
    """Shared fit/forward plumbing of the session-kNN models."""

    neural: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {"eval_batch_size": 500}
    # float32 halves the memory traffic of evaluation; tests compare float64 scores exactly
    score_dtype: Any = np.float32

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__(n_items, params)
        self.index: kc.SessionIndex | None = None
        self.fit_info: dict[str, Any] = {}
        self.validate()

    def validate(self) -> None:
        """Check the hyper-parameters (one-line `SbrError`)."""
        p = self.params
        kc.check_common(self.name, p.k, p.sample_size, p.sampling)

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Index the training sessions read by `splits`."""
        self.index = kc.build_index(dataset, splits, sampling=self.params.sampling, seed=self.params.seed)
        self.fit_info = kc.fit_info(self.index, dataset, splits, **self.extra_info())

    def extra_info(self) -> dict[str, Any]:
        """Model-specific entries of `fit_info`."""
        return {}

    def sample_size(self) -> int:
        """The effective sample size (0 = all)."""
        return 0 if self.params.sampling == "all" else self.params.sample_size

    def forward(self, batch: Batch) -> Any:
        """Scores (B, n_items), float64; column 0 is -inf."""
        if self.index is None:
            raise RuntimeError(f"{self.name}.forward called before fit")
        return kc.to_output(self.score_batch(batch), batch.seq.device)

    def score_batch(self, batch: Batch) -> np.ndarray:
        """Dense numpy scores (B, n_items) of a batch, in `score_dtype`, computed by row chunks
        that keep the candidate matrices within the memory budget."""
        assert self.index is not None
        full = kc.prefixes_from_batch(batch, self.n_items)
        last_n = int(getattr(self.params, "last_n_clicks", 0) or 0)
        trunc = kc.prefixes_from_batch(batch, self.n_items, last_n) if last_n else full
        chunks = kc.row_chunks(full, self.index)
        if len(chunks) == 1:
            return self._score(full, trunc)
        out = np.empty((full.n, self.n_items), dtype=self.score_dtype)
        for chunk in chunks:
            lo = int(chunk[0])
            f = kc.sub_prefixes(full, chunk)
            t = kc.sub_prefixes(trunc, chunk) if last_n else f
            out[lo : lo + f.n] = self._score(f, t)
        return out

    def _score(self, full: kc.Prefixes, pref: kc.Prefixes) -> np.ndarray:  # pragma: no cover - abstract
        """Scores of one chunk: `full` prefixes pick candidates, `pref` (maybe truncated) weighs."""
        raise NotImplementedError


@dataclass
class SKNNParams:
    """SKNN hyper-parameters (session-rec `ContextKNN` defaults, k = 100 as documented there)."""

    k: int = 100
    sample_size: int = 1000
    sampling: str = "recent"  # recent | random | all
    similarity: str = "jaccard"  # jaccard | cosine | cosine_sessionrec | tanimoto | binary
    remind: bool = False
    pop_boost: float = 0.0
    normalize: bool = True
    seed: int = 42  # for sampling = random


@register_model("sknn")
class SKNN(_KNNBase):
    """SKNN (session-rec ContextKNN): top-k sessions by set similarity vote for their items."""

    Params: ClassVar[type] = SKNNParams
    # session-rec's tuning ranges (Ludewig et al. 2021), k on a log scale
    search_space: ClassVar[dict[str, Any]] = {
        "k": IntRange(20, 1500, log=True), "sample_size": Choice(500, 1000, 2500, 5000, 10000),
        "similarity": Choice("jaccard", "cosine", "binary", "tanimoto"),
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # session-rec conf/save: diginetica single split; rsc15_64 single split (cosine = theirs,
        # rank-equivalent to the correct cosine)
        "diginetica": {"k": 50, "sample_size": 500, "similarity": "cosine"},
        "yoochoose1_64": {"k": 500, "sample_size": 1000, "similarity": "cosine"},
        "yoochoose1_4": {"k": 500, "sample_size": 1000, "similarity": "cosine"},
        "yoochoose-sessionrec-100k": {"k": 500, "sample_size": 10000, "similarity": "jaccard"},
    }

    def validate(self) -> None:
        """Check the hyper-parameters."""
        super().validate()
        kc.check_choice("sknn", "similarity", self.params.similarity, SKNN_SIMILARITIES)

    def extra_info(self) -> dict[str, Any]:
        """Record the similarity form used."""
        return {"similarity": self.params.similarity}

    def _score(self, full: kc.Prefixes, pref: kc.Prefixes) -> np.ndarray:
        p, idx, n = self.params, self.index, self.n_items
        assert idx is not None
        q = pref.matrix(np.ones(pref.rows.shape[0]), n)
        cand = kc.candidates(q, idx, self.sample_size())
        crow = np.repeat(np.arange(pref.n), np.diff(cand.indptr))
        s_len = np.bincount(pref.rows, minlength=pref.n).astype(np.float64)
        sims = sknn_similarity(p.similarity, cand.data, s_len[crow], idx.distinct[cand.indices])
        rows, cols, sims = kc.top_k(cand, sims, p.k, idx.rec, positive_only=True)
        nb = idx.X[cols]
        ent = np.repeat(sims, np.diff(nb.indptr))
        scores = kc.scatter_scores(pref.n, n, rows, nb, ent, self.score_dtype)
        if p.remind:
            self._remind(scores, pref)
        if p.pop_boost > 0:
            cnt = kc.scatter_scores(pref.n, n, rows, nb, np.ones(nb.nnz), self.score_dtype)
            mx = cnt.max(axis=1, keepdims=True)
            np.divide(cnt, mx, out=cnt, where=mx > 0)
            scores += p.pop_boost * cnt
        if p.normalize:
            kc.normalise_rows(scores)
        return scores

    @staticmethod
    def _remind(scores: np.ndarray, pref: kc.Prefixes) -> None:
        """session-rec's reminders: each of the last 3 clicks in order, score <- (score+5)*5 + cnt/100."""
        b = pref.n
        rows = np.arange(b)
        length = pref.full_length
        n_last = np.minimum(length, 3)
        for cnt in (1, 2, 3):
            ok = n_last >= cnt
            pos = length - n_last + cnt - 1  # 0-based position in the prefix
            r = rows[ok]
            it = pref.seq[r, pos[ok]]
            scores[r, it] = (scores[r, it] + 5) * 5 + cnt / 100


@dataclass
class VSKNNParams:
    """V-SKNN hyper-parameters (session-rec `VMContextKNN` defaults, k = 100)."""

    k: int = 100
    sample_size: int = 1000
    sampling: str = "recent"
    similarity: str = "vec"  # vec | cosine
    weighting: str = "div"  # same | div | linear | linear_sessionrec | log | quadratic
    weighting_score: str = "div"  # same | div | linear | linear_sessionrec | log | quadratic
    weighting_time: bool = False  # x (7/8)^days, relative to the end of training (needs times)
    idf_weighting: float = 0.0  # lambda of (1 + lambda * idf(i)); 0 = off
    idf_weighting_session: bool = False  # position weights replaced by idf
    remind: bool = True
    push_reminders: bool = False
    add_reminders: bool = False
    last_n_clicks: int = 0  # 0 = the whole prefix
    normalize: bool = True
    seed: int = 42


@register_model("vsknn")
class VSKNN(_KNNBase):
    """V-SKNN (session-rec VMContextKNN): position-weighted SKNN with decay and optional idf."""

    Params: ClassVar[type] = VSKNNParams
    search_space: ClassVar[dict[str, Any]] = {
        "k": IntRange(20, 1500, log=True), "sample_size": Choice(500, 1000, 2500, 5000, 10000),
        "weighting": Choice("same", "div", "linear", "quadratic", "log"),
        "weighting_score": Choice("same", "div", "linear", "quadratic", "log"),
        "idf_weighting": Choice(0.0, 1.0, 2.0, 5.0, 10.0),
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        # session-rec conf/save diginetica single split (weighting_score linear: correct form here;
        # use linear_sessionrec to reproduce session-rec), rsc15_64 single split, rsc15 window
        "diginetica": {"k": 1500, "sample_size": 10000, "weighting": "quadratic",
                       "weighting_score": "linear", "idf_weighting": 10.0},
        "yoochoose1_64": {"k": 1000, "sample_size": 5000, "weighting": "log",
                          "weighting_score": "quadratic", "idf_weighting": 2.0},
        "yoochoose1_4": {"k": 1000, "sample_size": 5000, "weighting": "log",
                         "weighting_score": "quadratic", "idf_weighting": 2.0},
        "yoochoose-sessionrec-100k": {"k": 100, "sample_size": 1000, "weighting": "quadratic",
                                      "weighting_score": "quadratic"},
    }

    def validate(self) -> None:
        """Check the hyper-parameters."""
        super().validate()
        p = self.params
        kc.check_choice("vsknn", "similarity", p.similarity, VSKNN_SIMILARITIES)
        kc.check_choice("vsknn", "weighting", p.weighting, POSITION_WEIGHTINGS)
        kc.check_choice("vsknn", "weighting_score", p.weighting_score, SCORE_WEIGHTINGS)
        if p.last_n_clicks < 0 or p.idf_weighting < 0:
            raise SbrError("vsknn last_n_clicks and idf_weighting must be >= 0")

    def extra_info(self) -> dict[str, Any]:
        """Record whether the time decay really ran."""
        assert self.index is not None
        used = bool(self.params.weighting_time and self.index.time is not None)
        return {"weighting_time_used": used,
                "time_reference": "end of training" if used else None}

    def _score(self, full: kc.Prefixes, pref: kc.Prefixes) -> np.ndarray:
        p, idx, n = self.params, self.index, self.n_items
        assert idx is not None
        q_all = full.matrix(np.ones(full.rows.shape[0]), n)
        cand = kc.candidates(q_all, idx, self.sample_size())
        if p.idf_weighting_session:
            w = idx.idf[pref.items]
        else:
            w = position_weight(p.weighting, pref.pos, pref.length[pref.rows])
        wsum = kc.restrict(pref.matrix(w, n) @ idx.XT, cand)
        crow = np.repeat(np.arange(pref.n), np.diff(cand.indptr))
        if p.similarity == "vec":
            denom = np.bincount(pref.rows, minlength=pref.n).astype(np.float64)
            sims = wsum / denom[crow]
        else:
            sq = np.bincount(pref.rows, weights=w * w, minlength=pref.n)
            sims = wsum / (np.sqrt(sq[crow]) * np.sqrt(idx.distinct[cand.indices]))
        if p.weighting_time and idx.time is not None:
            days = np.round((idx.time.max() - idx.time[cand.indices]) / 60 / 60 / 24)
            sims = np.where(sims > 0, sims * np.power(7 / 8, days), sims)
        rows, cols, sims = kc.top_k(cand, sims, p.k, idx.rec, positive_only=True)
        nb = idx.X[cols]
        qpos = pref.matrix(pref.pos.astype(np.float64), n)
        last = kc.pair_max(qpos[rows], nb)
        step = pref.length[rows] - last + 1
        decay = step_weight(p.weighting_score, step)
        counts = np.diff(nb.indptr)
        ent = np.repeat(sims, counts)
        if p.idf_weighting > 0:
            ent = ent + (ent * idx.idf[nb.indices] * p.idf_weighting)
        ent = ent * np.repeat(decay, counts)
        if not p.remind:
            er = np.repeat(rows, counts)
            ent = np.where(_member(pref, er, nb.indices, n), 0.0, ent)
        scores = kc.scatter_scores(pref.n, n, rows, nb, ent, self.score_dtype)
        if p.push_reminders:
            r = np.repeat(np.arange(full.n), full.full_length)
            it = full.seq[np.arange(full.seq.shape[1])[None, :] < full.full_length[:, None]]
            keys, cnt = np.unique(r * n + it, return_counts=True)
            scores[keys // n, keys % n] *= cnt + 1
        if p.add_reminders:
            self._add_reminders(scores, full)
        if p.normalize:
            kc.normalise_rows(scores)
        return scores

    @staticmethod
    def _add_reminders(scores: np.ndarray, full: kc.Prefixes) -> None:
        """Lift up to 3 in-session items with a positive score (first ones in session order)
        just above the 17th best score when they are below it (session-rec `add_reminders`)."""
        b, lmax = full.seq.shape
        if scores.shape[1] < 17:
            return
        thr = -np.partition(-scores, 16, axis=1)[:, 16]
        valid = np.arange(lmax)[None, :] < full.full_length[:, None]
        vals = np.take_along_axis(scores, full.seq, axis=1)
        pos_ok = valid & (vals > 0)
        first3 = pos_ok & (np.cumsum(pos_ok, axis=1) <= 3)
        lift = first3 & (vals < thr[:, None])
        r, c = np.nonzero(lift)
        scores[r, full.seq[r, c]] = thr[r] + 1e-4


def _member(pref: kc.Prefixes, rows: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether `items[e]` is in prefix `rows[e]` (`pref` is sorted by (row, item))."""
    keys = pref.rows * n_items + pref.items
    if keys.shape[0] == 0:
        return np.zeros(rows.shape[0], dtype=bool)
    q = rows * n_items + items
    at = np.minimum(np.searchsorted(keys, q), keys.shape[0] - 1)
    return keys[at] == q
