"""Slow reference: session-rec's event-by-event prediction (rn5l/session-rec knn/*.py,
baselines/sr.py, ar.py), re-expressed with plain dicts and sets to check sbrbench's batched,
stateless scoring. It follows session-rec's logic step by step (incremental
`relevant_sessions`, sampling, neighbour sort, score loops) with two deliberate changes:
ties in sampling and in the neighbour sort go to the more recent session (session-rec leaves
them to set order), and the weight functions are sbrbench's (checked by hand in the toy tests).
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any

import numpy as np

from sbrbench.models.sknn import position_weight, sknn_similarity, step_weight


@functools.lru_cache(maxsize=None)
def _w(name: str, p: int, length: int) -> float:
    return float(position_weight(name, np.array([p]), np.array([length]))[0])


@functools.lru_cache(maxsize=None)
def _d(name: str, step: int) -> float:
    return float(step_weight(name, np.array([step]))[0])


class RefIndex:
    """session → items (set and ordered list), item → sessions, session → last time."""

    def __init__(self, sessions: list[list[int]], times: list[float] | None) -> None:
        self.items_list = sessions
        self.items_set = [set(s) for s in sessions]
        self.time = times if times is not None else [float(i) for i in range(len(sessions))]
        self.item_sessions: dict[int, set[int]] = collections.defaultdict(set)
        self.events: collections.Counter = collections.Counter()
        for sid, s in enumerate(sessions):
            for it in s:
                self.item_sessions[it].add(sid)
                self.events[it] += 1
        self.idf = {i: math.log(len(sessions) / c) for i, c in self.events.items()}

    def recency(self, sid: int) -> tuple[float, int]:
        return (self.time[sid], sid)

    def sample(self, relevant: set[int], m: int) -> set[int]:
        if m == 0 or len(relevant) <= m:
            return relevant
        return set(sorted(relevant, key=self.recency, reverse=True)[:m])

    def top(self, neigh: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
        return sorted(neigh, key=lambda x: (x[1], self.recency(x[0])), reverse=True)[:k]


class RefModel:
    """Incremental predictor: `predict(session_items, input_item, timestamp)` is called for
    each event of a session in order, like session-rec's `predict_next`."""

    def __init__(self, name: str, index: RefIndex, params: Any) -> None:
        self.name, self.ix, self.p = name, index, params
        self.session_items: list[int] = []
        self.relevant: set[int] = set()

    def new_session(self) -> None:
        self.session_items, self.relevant = [], set()

    def predict(self, item: int, timestamp: float) -> dict[int, float]:
        self.session_items.append(item)
        self.relevant |= self.ix.item_sessions.get(item, set())
        m = 0 if getattr(self.p, "sampling", "recent") == "all" else getattr(self.p, "sample_size", 0)
        return getattr(self, "_" + self.name)(self.ix.sample(self.relevant, m), timestamp)

    # -- SKNN ---------------------------------------------------------------------------------
    def _sknn(self, cands: set[int], ts: float) -> dict[int, float]:
        p, ix = self.p, self.ix
        s = set(self.session_items)
        neigh = []
        for n in cands:
            t = ix.items_set[n]
            sim = float(sknn_similarity(p.similarity, np.float64(len(s & t)), np.float64(len(s)),
                                        np.float64(len(t))))
            if sim > 0:
                neigh.append((n, sim))
        neigh = ix.top(neigh, p.k)
        scores: dict[int, float] = {}
        for n, sim in neigh:
            for it in ix.items_set[n]:
                scores[it] = scores.get(it, 0.0) + sim
        if p.remind:
            for cnt, it in enumerate(self.session_items[-3:], start=1):
                scores[it] = (scores.get(it, 0.0) + 5) * 5 + cnt / 100
        if p.pop_boost > 0:
            pop: collections.Counter = collections.Counter()
            for n, _ in neigh:
                pop.update(ix.items_set[n])
            mx = max(pop.values()) if pop else 1
            for key in scores:
                scores[key] += p.pop_boost * (pop.get(key, 0) / mx)
        return _normalise(scores) if p.normalize else scores

    # -- V-SKNN -------------------------------------------------------------------------------
    def _vsknn(self, cands: set[int], ts: float) -> dict[int, float]:
        p, ix = self.p, self.ix
        cur = self.session_items if not p.last_n_clicks else self.session_items[-p.last_n_clicks:]
        pos_map: dict[int, float] = {}
        for pos, it in enumerate(cur, start=1):
            pos_map[it] = ix.idf.get(it, 0.0) if p.idf_weighting_session else _w(p.weighting, pos, len(cur))
        s = set(cur)
        tmax = max(ix.time)
        neigh = []
        for n in cands:
            t = ix.items_set[n]
            inter = sorted(s & t)
            vp = 0.0
            for i in inter:
                vp += pos_map[i]
            if p.similarity == "vec":
                sim = vp / len(pos_map)
            else:
                sq = sum(pos_map[i] * pos_map[i] for i in sorted(pos_map))
                sim = vp / (math.sqrt(sq) * math.sqrt(len(t)))
            if sim > 0:
                if p.weighting_time:
                    sim *= (7 / 8) ** round((tmax - ix.time[n]) / 60 / 60 / 24)
                neigh.append((n, sim))
        neigh = ix.top(neigh, p.k)
        scores: dict[int, float] = {}
        for n, sim in neigh:
            items = ix.items_set[n]
            step = 1
            for it in reversed(cur):
                if it in items:
                    break
                step += 1
            decay = _d(p.weighting_score, step)
            for it in items:
                if not p.remind and it in s:
                    continue
                v = sim
                if p.idf_weighting:
                    v = v + v * ix.idf[it] * p.idf_weighting
                scores[it] = scores.get(it, 0.0) + v * decay
        if p.push_reminders:
            for it, c in collections.Counter(self.session_items).items():
                if it in scores:
                    scores[it] *= c + 1
        if p.add_reminders:
            ranked = sorted(scores.values(), reverse=True)
            thr = ranked[16] if len(ranked) > 16 else 0.0
            firsts = [it for it in self.session_items if scores.get(it, 0.0) > 0][:3]
            for it in firsts:
                if scores[it] < thr:
                    scores[it] = thr + 1e-4
        return _normalise(scores) if p.normalize else scores

    # -- STAN / V-STAN --------------------------------------------------------------------------
    def _stan(self, cands: set[int], ts: float) -> dict[int, float]:
        return self._stan_like(cands, ts, vstan=False)

    def _vstan(self, cands: set[int], ts: float) -> dict[int, float]:
        return self._stan_like(cands, ts, vstan=True)

    def _stan_like(self, cands: set[int], ts: float, vstan: bool) -> dict[int, float]:
        p, ix = self.p, self.ix
        cur = self.session_items
        L = len(cur)
        pos_map = {}
        for pos, it in enumerate(cur, start=1):
            pos_map[it] = math.exp((pos - L) / p.lambda_spw) if p.lambda_spw > 0 else 1.0
        s = set(cur)
        neigh = []
        for n in cands:
            t = ix.items_set[n]
            vp = 0.0
            for i in sorted(s & t):
                vp += pos_map[i]
            if getattr(p, "similarity", "cosine") == "vec":
                sim = vp / len(pos_map)
            else:
                sq = sum(pos_map[i] * pos_map[i] for i in sorted(pos_map))
                sim = vp / (math.sqrt(sq) * math.sqrt(len(t)))
            if p.lambda_snh > 0:
                sim *= math.exp(-(ts - ix.time[n]) / (p.lambda_snh * 24 * 3600))
            neigh.append((n, sim))
        neigh = ix.top([x for x in neigh if x[1] > 0], p.k)
        scores: dict[int, float] = {}
        for n, sim in neigh:
            seq = ix.items_list[n]
            pos_last: dict[int, int] = {}
            anchor = None
            for i, it in enumerate(seq, start=1):
                if it in s:
                    anchor = i
                pos_last[it] = i
            if p.anchor == "paper":
                recent = next(it for it in reversed(cur) if it in pos_last)
                anchor = pos_last[recent]
            ipw = 1.0
            if vstan and p.lambda_ipw > 0:
                for i in range(L):
                    if cur[i] in pos_last:
                        ipw = math.exp((i + 1 - L) / p.lambda_ipw)
            for it in pos_last:
                if not p.remind and it in s:
                    continue
                v = sim
                if p.lambda_inh > 0:
                    v = v * math.exp(-abs(pos_last[it] - anchor) / p.lambda_inh)
                if vstan and p.lambda_idf > 0:
                    v = v + v * ix.idf[it] * p.lambda_idf
                if vstan:
                    v = v * ipw
                scores[it] = scores.get(it, 0.0) + v
        return scores


def _normalise(scores: dict[int, float]) -> dict[int, float]:
    mx = max(scores.values(), default=0.0)
    if mx <= 0:
        return scores
    return {k: v / mx for k, v in scores.items()}


# -- rules ----------------------------------------------------------------------------------------
def ref_sr_rules(sessions: list[list[int]], p: Any) -> dict[int, dict[int, float]]:
    """session-rec SequentialRules.fit, event by event (idf_weight 0 or 1)."""
    rules: dict[int, dict[int, float]] = {}
    idf = None
    if p.idf_weight:
        ev = collections.Counter(it for s in sessions for it in s)
        raw = {i: math.log(len(sessions) / c) for i, c in ev.items()}
        lo, hi = min(raw.values()), max(raw.values())
        idf = {i: (v - lo) / (hi - lo) for i, v in raw.items()}
    for s in sessions:
        last: list[int] = []
        for it in s:
            for i in range(1, min(p.steps, len(last)) + 1):
                prev = last[-i]
                rules.setdefault(prev, {}).setdefault(it, 0.0)
                w = _d(p.weighting, i)
                if idf is not None:
                    w = w * idf[prev] if p.idf_weight == 1 else w + idf[prev]
                rules[prev][it] += w
            last.append(it)
    return _prune(rules, p.pruning)


def ref_ar_rules(sessions: list[list[int]], pruning: float) -> dict[int, dict[int, float]]:
    """session-rec AssociationRules.fit, event by event."""
    rules: dict[int, dict[int, float]] = {}
    for s in sessions:
        last: list[int] = []
        for it in s:
            for it2 in last:
                rules.setdefault(it, {})
                rules.setdefault(it2, {})
                rules[it2][it] = rules[it2].get(it, 0.0) + 1
                rules[it][it2] = rules[it].get(it2, 0.0) + 1
            last.append(it)
    return _prune(rules, pruning)


def _prune(rules: dict[int, dict[int, float]], pruning: float) -> dict[int, dict[int, float]]:
    if pruning <= 0:
        return rules
    out = {}
    for k1, tmp in rules.items():
        keep = len(tmp) - int(len(tmp) * pruning) if pruning < 1 else int(pruning)
        out[k1] = dict(collections.Counter(tmp).most_common(keep))
    return out


def ref_rules_predict(rules: dict[int, dict[int, float]], session_items: list[int], p: Any = None) -> dict[int, float]:
    """session-rec SR/AR predict_next (normalised; no rules -> {} instead of NaN)."""
    scores = dict(rules.get(session_items[-1], {}))
    m = getattr(p, "last_in_session", 0) if p is not None else 0
    for i in range(2, m + 2):
        if len(session_items) < i:
            break
        for key, v in rules.get(session_items[-i], {}).items():
            scores[key] = scores.get(key, 0.0) + v * _d(p.session_weighting, i)
    return _normalise(scores)
