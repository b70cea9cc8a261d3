"""Ranking metrics computed from the target's rank, once per batch, on the scores' device.

Every metric derives from one number per target: its *pessimistic* (tie-aware) rank among the
candidates 1..n_items-1 (column 0 is padding and never a candidate)::

    rank = 1 + #(other candidates with score > s_t) + #(other candidates with score == s_t)

i.e. the number of candidates scoring at least the target's score, counting the target once. Ties
never favour the target: a model that gives every item the same score ranks each target last
(rank = catalogue size) and scores 0 on every metric whenever K < catalogue size. Computing the rank
by comparison (`(scores >= s_t).sum()`) needs no sort, which is why it is the fast path.

With one target per example (ranks of shape (N,)):
HR@K = Recall@K = P@K = 1[rank <= K], MRR@K = 1/rank if rank <= K else 0,
NDCG@K = 1/log2(rank + 1) if rank <= K else 0. "P@K" is what the SR-GNN family of papers call
precision (really the hit rate); it keeps that name so paper tables compare directly.

With several targets per example (ranks of shape (N, T), 0 = padding; remaining-items and
ComiRec-style protocols): a target is in the top K when its pessimistic rank is <= K;
HR@K = 1[any target in the top K], Recall@K = |top-K ∩ T| / |T|, P@K = |top-K ∩ T| / K,
MRR@K = 1/rank of the best-ranked target (0 beyond K), NDCG@K = DCG/IDCG with
DCG = Σ_{t in top K} 1/log2(rank_t + 1) and IDCG = Σ_{i=1..min(|T|, K)} 1/log2(i + 1).
Duplicate targets in a row count once (T is a set), except in Recall's denominator when the
ranks were computed with `duplicates="count"` (the ComiRec protocol): a repeat of an earlier
target of its row then gets the rank -1 (never a hit, never ranked twice) and Recall@K =
|top-K ∩ T| / (number of targets, repeats included), as ComiRec computes it. The shape decides
the protocol: ranks of shape (N, 1) are a multi-target protocol with one target (P@K = HR@K / K there).

Extra families, computed only when asked for (`extra=`): `NDCG_comirec@K`, ComiRec's
hit-normalised NDCG (THUDM/ComiRec master): the same DCG divided by the ideal DCG of as many
targets as were *hit*, Σ_{i=1..hits} 1/log2(i + 1) (0 without a hit). It is not the standard
NDCG (a row whose hits sit at the top scores 1 whatever |T| is) and is never a default.

Means are taken over the examples that have at least one target. Values are fractions in [0, 1].
The same comparison pass also counts the candidates *tying* with each target (`rank_block_ties`,
`RankCollector.ties()`): the optimistic rank `1 + #strictly higher` is the rank minus that count.
See docs/metrics.md for the full text.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.registry import unknown_name_message

if TYPE_CHECKING:
    import torch
    from torch import Tensor

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
# What leaderboards, ablations and reproduced tables report when no metric is asked for.
DEFAULT_METRICS: tuple[str, ...] = ("P@20", "MRR@20")

# Multi-target rows with more targets than this are ranked with one sort of the row + searchsorted
# instead of one comparison pass per target.
_SORT_THRESHOLD = 8
# Elements per block when counting on CPU (a float32 block of ~8 MB stays in cache).
_CPU_BLOCK_ELEMS = 1 << 21
_local = threading.local()


@dataclass(frozen=True)
class MetricInfo:
    """Description of one metric family, for documentation and the CLI."""

    name: str
    higher_is_better: bool
    single_target: str
    multi_target: str


METRICS: dict[str, MetricInfo] = {
    "HR": MetricInfo(
        "HR", True,
        "1 if rank <= K else 0 (hit rate)",
        "1 if any target has rank <= K else 0",
    ),
    "P": MetricInfo(
        "P", True,
        "1 if rank <= K else 0 (the SR-GNN papers' 'precision', equal to HR@K)",
        "|top-K ∩ targets| / K",
    ),
    "Recall": MetricInfo(
        "Recall", True,
        "1 if rank <= K else 0 (equal to HR@K)",
        "|top-K ∩ targets| / |targets|",
    ),
    "MRR": MetricInfo(
        "MRR", True,
        "1/rank if rank <= K else 0",
        "1/rank of the best-ranked target if <= K else 0",
    ),
    "NDCG": MetricInfo(
        "NDCG", True,
        "1/log2(rank + 1) if rank <= K else 0",
        "DCG/IDCG; DCG = sum over targets in the top K of 1/log2(rank + 1), "
        "IDCG = sum_{i=1..min(|targets|, K)} 1/log2(i + 1)",
    ),
}

#: Families computed only when asked for (`metrics_from_ranks(..., extra=...)`); never defaults.
EXTRA_METRICS: dict[str, MetricInfo] = {
    "NDCG_comirec": MetricInfo(
        "NDCG_comirec", True,
        "1/log2(rank + 1) if rank <= K else 0 (equal to NDCG@K)",
        "ComiRec's hit-normalised NDCG: DCG / sum_{i=1..hits} 1/log2(i + 1), 0 without a hit",
    ),
}
DUPLICATE_RULES = ("once", "count")

_ALIASES = {
    "ndcg_comirec": "NDCG_comirec", "comirec_ndcg": "NDCG_comirec",
    "hr": "HR", "hit": "HR", "hits": "HR", "hitrate": "HR",
    "p": "P", "prec": "P", "precision": "P",
    "recall": "Recall", "r": "Recall",
    "mrr": "MRR", "mmr": "MRR",
    "ndcg": "NDCG",
}


def parse_metric(name: str, default_k: int | None = None) -> tuple[str, int]:
    """Parse `"MRR@20"` (case-insensitive; `Hit@K`, `Precision@K` accepted) into `("MRR", 20)`.

    A name without `@K` takes `default_k`; a clear `SbrError` for unknown names or bad Ks.
    """
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z_]*)\s*(?:@\s*(\S+))?\s*", name)
    base = _ALIASES.get(m.group(1).lower()) if m else None
    if base is None:
        raise SbrError(unknown_name_message("metric", name, [f"{n}@K" for n in (*METRICS, *EXTRA_METRICS)]))
    kstr = m.group(2) if m else None
    if kstr is None:
        if default_k is None:
            raise SbrError(f"metric {name!r} needs a cut-off, e.g. {base}@20")
        return base, int(default_k)
    if not kstr.isdigit() or int(kstr) < 1:
        raise SbrError(f"metric {name!r}: the cut-off K must be a positive integer")
    return base, int(kstr)


def parse_ks(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Parse `"1,5,10,20"` (or a sequence) into sorted unique positive Ks; `SbrError` otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: set[int] = set()
    for p in parts:
        s = str(p).strip()
        if not s:
            continue
        if not s.isdigit() or int(s) < 1:
            raise SbrError(f"bad cut-off {s!r} in Ks {text!r}: use positive integers like 5,10,20")
        out.add(int(s))
    if not out:
        raise SbrError(f"no cut-offs given in {text!r}")
    return tuple(sorted(out))


def metric_names(ks: tuple[int, ...] | list[int] = DEFAULT_KS, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The keys `metrics_from_ranks` returns, in order: each metric family at each K (then the
    `extra` families)."""
    return [f"{m}@{k}" for m in (*METRICS, *_extra_families(extra)) for k in ks]


def _extra_families(extra: tuple[str, ...] | list[str] | None) -> list[str]:
    out = []
    for name in extra or ():
        fam, _ = parse_metric(str(name), 1)
        if fam not in EXTRA_METRICS:
            raise SbrError(f"{name!r} is not an extra metric family; extra families: {', '.join(EXTRA_METRICS)}")
        if fam not in out:
            out.append(fam)
    return out


def _check_duplicates(duplicates: str) -> None:
    if duplicates not in DUPLICATE_RULES:
        raise SbrError(unknown_name_message("duplicate-target rule", duplicates, list(DUPLICATE_RULES)))


def metric_definitions(rank_options: dict[str, Any] | None = None) -> dict[str, str]:
    """What the numbers of a run mean, stored with them: the rank, Recall's denominator, the NDCG
    definition (and the extra families' definitions) under the given rank options."""
    opts = dict(rank_options or {})
    counted = opts.get("duplicates", "once") == "count"
    out = {
        "rank": "pessimistic: 1 + #other candidates scoring >= the target (ties never favour it); padding id 0 excluded",
        "Recall": ("hits / number of targets, repeated targets counted (ComiRec)" if counted
                   else "hits / number of distinct targets"),
        "NDCG": "standard: sum over targets in the top K of 1/log2(rank + 1), divided by the ideal DCG of "
                "min(K, number of distinct targets)",
    }
    for fam in _extra_families(opts.get("extra", ())):
        out[fam] = EXTRA_METRICS[fam].multi_target
    return out


# ---- ranks ----------------------------------------------------------------------------------------
def _dedup_mask(ids: Tensor) -> Tensor:
    """True where `ids[b, j]` is non-zero and not equal to an earlier entry of its row."""
    import torch

    if ids.shape[1] <= 1:
        return ids != 0
    srt, order = ids.sort(dim=1, stable=True)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    keep = torch.empty_like(first)
    keep.scatter_(1, order, first)
    return keep & (ids != 0)


def _count_ge_col(scores: Tensor, st: Tensor, strict: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B,) int64 counts of columns with scores[b, :] >= st[b, 0], and with `strict` also of those
    with scores > st (the optimistic count), from the same block while it is in cache (else None)."""
    import torch

    if scores.device.type != "cpu":
        return (scores >= st).sum(dim=1), ((scores > st).sum(dim=1) if strict else None)
    # On CPU a bool -> int64 row sum is several times slower than the comparison itself; comparing
    # into a small reused float32 buffer (exact for counts < 2**24) and summing that is not.
    B, n = scores.shape
    acc = torch.float32 if n < (1 << 24) else torch.float64
    rows = max(1, min(B, _CPU_BLOCK_ELEMS // max(n, 1)))
    buf = getattr(_local, "buf", None)
    if buf is None or buf.dtype != acc or buf.numel() < rows * n:
        buf = _local.buf = torch.empty(rows * n, dtype=acc)  # reused: no page faults per batch
    buf = buf[: rows * n].view(rows, n)
    out = torch.empty(B, dtype=acc)
    out_gt = torch.empty(B, dtype=acc) if strict else None
    for i in range(0, B, rows):
        j = min(i + rows, B)
        blk = buf[: j - i]
        torch.ge(scores[i:j], st[i:j], out=blk)
        torch.sum(blk, dim=1, out=out[i:j])
        if out_gt is not None:  # the strict count of the same block, still in cache
            torch.gt(scores[i:j], st[i:j], out=blk)
            torch.sum(blk, dim=1, out=out_gt[i:j])
    return out.long(), (out_gt.long() if out_gt is not None else None)


def _count_ge(scores: Tensor, st: Tensor, strict: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B, T) counts of columns of `scores` (B, n) with score >= st[b, t] (all columns), and with
    `strict` the counts with score > st[b, t] (else None)."""
    import torch

    T = st.shape[1]
    if T <= _SORT_THRESHOLD:
        cols = [_count_ge_col(scores, st[:, j : j + 1], strict) for j in range(T)]
        ge = torch.stack([c[0] for c in cols], dim=1)
        return ge, (torch.stack([c[1] for c in cols], dim=1) if strict else None)  # type: ignore[misc]
    srt = scores.sort(dim=1).values
    st_c = st.to(srt.dtype).contiguous()
    ge = scores.shape[1] - torch.searchsorted(srt, st_c, side="left")
    return ge, ((scores.shape[1] - torch.searchsorted(srt, st_c, side="right")) if strict else None)


def check_ids(ids: Tensor, n_items: int, what: str = "target") -> None:
    """Raise `SbrError` if an id is outside 0..n_items-1 (no host sync on accelerators)."""
    import torch

    bad = ((ids < 0) | (ids >= n_items)).any()
    if ids.device.type == "cpu":
        if bool(bad):
            raise SbrError(f"{what} item ids must be in 0..{n_items - 1} (0 = padding)")
    else:
        torch._assert_async(~bad, f"{what} item ids out of range 0..{n_items - 1}")


def _as_2d_targets(targets: Tensor, device: torch.device) -> tuple[Tensor, bool]:
    import torch

    t = torch.as_tensor(targets, device=device)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise SbrError(f"targets must be integer item ids, got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 1:
        return t[:, None], True
    if t.dim() == 2:
        return t, False
    raise SbrError(f"targets must have shape (B,) or (B, T), got {tuple(t.shape)}")


def target_ranks(
    scores: Tensor, targets: Tensor, seen: Tensor | None = None, *, check_nan: bool = True,
    duplicates: str = "once",
) -> Tensor:
    """Pessimistic rank of each target among the candidates 1..n_items-1.

    Args:
        scores: (B, n_items) float scores over the whole catalogue; column 0 (padding) is ignored.
        targets: (B,) item ids, or (B, T) ids padded with 0 for several targets.
        seen: optional (B, L) ids of items already in the session (0 = pad). They are removed from
            the candidates (as if their score were -inf), except a target, which keeps its score.
        check_nan: raise `SbrError` if any score is NaN (costs one host sync; `RankCollector`
            defers that check to the end of the evaluation instead).
        duplicates: "once" (a repeated target gets 0, like padding) or "count" (it gets -1, so
            that Recall's denominator counts it, as ComiRec does).

    Returns:
        int64 ranks on `scores.device`, shape (B,) or (B, T); 0 where the target is padding or
        repeats an earlier target of its row (-1 for a repeat with `duplicates="count"`).

    Shapes:
        scores (B, n), targets (B,) | (B, T), seen (B, L) -> (B,) | (B, T)
    """
    ranks, _, nan, _ = rank_block_ties(scores, targets, seen, check_nan=check_nan, duplicates=duplicates, ties=False)
    if nan is not None and bool(nan):
        raise SbrError("the scores contain NaN: the model is broken (check the loss and learning rate)")
    return ranks


def rank_block_ties(
    scores: Tensor,
    targets: Tensor,
    seen: Tensor | None = None,
    *,
    item_offset: int = 0,
    target_scores: Tensor | None = None,
    check_nan: bool = True,
    duplicates: str = "once",
    ties: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None, bool]:
    """Rank targets against a block of item columns; building block of full and chunked ranking.

    `scores` (B, c) holds items `item_offset .. item_offset + c - 1`. Without `target_scores` the
    block must be the whole catalogue (`item_offset == 0`) and the target scores are read from it.
    With `target_scores` (B,) or (B, T), the result counts the candidates of this block, other than
    the target itself, with a score >= the target's (add 1 and sum over blocks for the rank).

    With `ties`, also the number of other candidates whose score *equals* the target's (same shape
    as the ranks, 0 for padding): the pessimistic rank minus the optimistic one (`1 + #strictly
    higher`). Both counts come from one comparison pass over each block (the one rank code path).

    Returns (ranks or counts (B,) | (B, T) int64, tie counts or None, a 0-d bool tensor "some score
    is NaN" (None when `check_nan` is False), whether the targets were one per row). Nothing here
    synchronises with the host. `duplicates="count"` marks a repeat of an earlier target of its
    row with -1 instead of 0 (it is never ranked twice, but Recall's denominator counts it).
    """
    import torch

    if scores.dim() != 2:
        raise SbrError(f"scores must have shape (B, n_items), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.float()
    dev = scores.device
    B, c = scores.shape
    t2, single = _as_2d_targets(targets, dev)
    if t2.shape[0] != B:
        raise SbrError(f"scores have {B} rows but targets have {t2.shape[0]}")
    valid = _dedup_mask(t2) if not single else (t2 != 0)
    full = target_scores is None
    if full:
        if item_offset != 0:
            raise ValueError("a block that is not the whole catalogue needs target_scores")
        check_ids(t2, c)
        if seen is not None:
            check_ids(torch.as_tensor(seen, device=dev), c, "seen")
        st = scores.gather(1, t2.clamp(0, c - 1))
        # max propagates NaN: one cheap reduction instead of a full isnan pass (whole contiguous
        # rows are much faster than a column-0-less view, so a NaN anywhere is an error)
        nan = torch.isnan(scores.amax(dim=1)).any() if check_nan and c else None
    else:
        st = torch.as_tensor(target_scores, device=dev).to(scores.dtype)
        st = st[:, None] if st.dim() == 1 else st
        nan = (torch.isnan(st).any() | torch.isnan(scores.amax(dim=1)).any()) if check_nan and c else None
    st = st.masked_fill(~valid, math.inf)  # padding targets: count nothing, cheaply

    counts, higher = _count_ge(scores, st, strict=ties)
    # column 0 (padding) is never a candidate
    if item_offset == 0 and c > 0:
        counts = counts - (scores[:, :1] >= st).long()
        if higher is not None:
            higher = higher - (scores[:, :1] > st).long()
    if not full:
        # the target itself is counted by the caller (+1), not through its own score
        local = t2 - item_offset
        inside = (local >= 0) & (local < c) & valid
        own = scores.gather(1, local.clamp(0, c - 1))
        counts = counts - ((own >= st) & inside).long()
        if higher is not None:
            higher = higher - ((own > st) & inside).long()
    if seen is not None:
        s = torch.as_tensor(seen, device=dev).long()
        if s.dim() != 2 or s.shape[0] != B:
            raise SbrError(f"seen must have shape (B, L) with B={B}, got {tuple(s.shape)}")
        keep = _dedup_mask(s)
        keep &= ~(s[:, :, None] == t2[:, None, :]).any(dim=2)  # targets keep their scores
        local = s - item_offset
        keep &= (local >= 0) & (local < c) & (s != 0)
        ss = scores.gather(1, local.clamp(0, c - 1))
        counts = counts - ((ss[:, :, None] >= st[:, None, :]) & keep[:, :, None]).sum(dim=1)
        if higher is not None:
            higher = higher - ((ss[:, :, None] > st[:, None, :]) & keep[:, :, None]).sum(dim=1)
    counts = counts.masked_fill(~valid, 0)
    tie = None
    if higher is not None:  # equal scores: >= minus >, less the target itself when it was counted
        tie = (counts - higher - (1 if full else 0)).clamp(min=0).masked_fill(~valid, 0)
        tie = tie[:, 0] if single else tie
    out = counts[:, 0] if single else _mark_repeats(counts, t2, valid, duplicates)
    return out, tie, nan, single


def _mark_repeats(ranks: Tensor, targets: Tensor, valid: Tensor, duplicates: str) -> Tensor:
    """-1 where a target repeats an earlier one of its row (`duplicates="count"`), else unchanged."""
    _check_duplicates(duplicates)
    if duplicates == "once":
        return ranks
    return ranks.masked_fill((targets != 0) & ~valid, -1)


def chunked_target_ranks(
    score_chunk: Any,
    target_scores: Tensor,
    targets: Tensor,
    n_items: int,
    *,
    chunk_size: int = 65536,
    seen: Tensor | None = None,
    check_nan: bool = True,
    duplicates: str = "once",
) -> tuple[Tensor, Tensor | None]:
    """Rank targets over a catalogue too large for one (B, n_items) score matrix.

    `score_chunk(start, end)` returns the (B, end - start) scores of items start..end-1;
    `target_scores` (B,) or (B, T) are the targets' scores, computed first by the caller. Memory
    is bounded by B × chunk_size. Returns (ranks, 0-d NaN flag tensor or None), with the same ranks as
    `target_ranks` on the full matrix when `target_scores` equal the matrix's entries.
    """
    ranks, _, nan = chunked_target_ranks_ties(score_chunk, target_scores, targets, n_items, chunk_size=chunk_size,
                                              seen=seen, check_nan=check_nan, duplicates=duplicates, ties=False)
    return ranks, nan


def chunked_target_ranks_ties(
    score_chunk: Any,
    target_scores: Tensor,
    targets: Tensor,
    n_items: int,
    *,
    chunk_size: int = 65536,
    seen: Tensor | None = None,
    check_nan: bool = True,
    duplicates: str = "once",
    ties: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """`chunked_target_ranks` plus the tie counts (`rank_block_ties`): (ranks, ties or None, NaN flag)."""
    import torch

    t_in = torch.as_tensor(targets)
    check_ids(t_in, n_items)
    if seen is not None:
        check_ids(torch.as_tensor(seen), n_items, "seen")
    total: Tensor | None = None
    tied: Tensor | None = None
    nan: Tensor | None = None
    single = True
    for start in range(0, n_items, chunk_size):
        end = min(start + chunk_size, n_items)
        cnt, tie, nflag, single = rank_block_ties(
            score_chunk(start, end), targets, seen, item_offset=start, target_scores=target_scores,
            check_nan=check_nan, ties=ties,
        )
        total = cnt if total is None else total + cnt
        if tie is not None:
            tied = tie if tied is None else tied + tie
        if nflag is not None:
            nan = nflag if nan is None else nan | nflag
    if total is None:
        raise SbrError("empty catalogue: n_items must be >= 2")
    t = torch.as_tensor(targets, device=total.device).long()
    valid = (t != 0) if single else _dedup_mask(t)
    out = torch.where(valid, total + 1, torch.zeros_like(total))
    return (out if single else _mark_repeats(out, t, valid, duplicates)), tied, nan


# ---- metrics from ranks -----------------------------------------------------------------------
def _to_tensor(ranks: Tensor | np.ndarray) -> Tensor:
    import torch

    if isinstance(ranks, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(ranks).astype(np.int64, copy=False))
    return ranks.long()


def _per_example(r: Tensor, family: str, k: int) -> Tensor:
    """Per-example float64 values of `family@k` (NaN for rows without any target)."""
    import torch

    if r.dim() == 1:
        valid = r > 0
        hit = valid & (r <= k)
        rf = r.double()
        if family in ("HR", "P", "Recall"):
            v = hit.double()
        elif family == "NDCG_comirec":
            v = torch.where(hit, 1.0 / torch.log2(rf + 1.0), torch.zeros_like(rf))
        elif family == "MRR":
            v = torch.where(hit, 1.0 / rf.clamp(min=1), torch.zeros_like(rf))
        else:
            v = torch.where(hit, 1.0 / torch.log2(rf + 1.0), torch.zeros_like(rf))
        return v.masked_fill(~valid, math.nan)
    if r.dim() != 2:
        raise SbrError(f"ranks must have shape (N,) or (N, T), got {tuple(r.shape)}")
    valid = r > 0
    n_t = valid.sum(dim=1)
    in_k = valid & (r <= k)
    hits = in_k.sum(dim=1).double()
    if family == "HR":
        v = (hits > 0).double()
    elif family == "Recall":  # repeats marked -1 (duplicates="count") count in the denominator
        v = hits / (r != 0).sum(dim=1).clamp(min=1)
    elif family == "P":
        v = hits / k
    elif family == "MRR":
        big = torch.iinfo(torch.int64).max
        best = torch.where(valid, r, torch.full_like(r, big)).min(dim=1).values if r.shape[1] else (
            torch.full((r.shape[0],), big, dtype=r.dtype, device=r.device))
        v = torch.where(best <= k, 1.0 / best.double().clamp(min=1), torch.zeros_like(hits))
    elif family == "NDCG_comirec":  # ComiRec master: ideal DCG of as many targets as were hit
        gains = torch.where(in_k, 1.0 / torch.log2(r.double() + 1.0), torch.zeros_like(r, dtype=torch.float64))
        m = int(min(max(r.shape[1], 1), k))
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, m + 2, dtype=torch.float64, device=r.device)), 0)
        idcg = ideal[(hits.long().clamp(min=1, max=m) - 1)]
        v = torch.where(hits > 0, gains.sum(dim=1) / idcg, torch.zeros_like(hits))
    else:
        gains = torch.where(in_k, 1.0 / torch.log2(r.double() + 1.0), torch.zeros_like(r, dtype=torch.float64))
        dcg = gains.sum(dim=1)
        m = int(min(max(r.shape[1], 1), k))
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, m + 2, dtype=torch.float64, device=r.device)), 0)
        idcg = ideal[(n_t.clamp(min=1, max=m) - 1)]
        v = dcg / idcg
    return v.masked_fill(n_t == 0, math.nan)


def per_example_from_ranks(ranks: Tensor | np.ndarray, metric: str, k: int | None = None) -> np.ndarray:
    """Per-example values (float64 (N,), NaN for rows without a target) of one metric.

    `metric` is a family (`"MRR"` with `k`) or a full name (`"MRR@20"`). Used for paired tests.
    """
    family, kk = parse_metric(metric, k)
    return _per_example(_to_tensor(ranks), family, kk).cpu().numpy()


def metrics_from_ranks(
    ranks: Tensor | np.ndarray, ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    extra: tuple[str, ...] | list[str] = (),
) -> dict[str, float]:
    """Mean of every metric at every K (fractions), computed on the ranks' device, one host sync.

    Keys follow `metric_names(ks, extra)`: `HR@K`, `P@K`, `Recall@K`, `MRR@K`, `NDCG@K`, then the
    `extra` families (`EXTRA_METRICS`, e.g. `NDCG_comirec`). Examples with no target are left out
    of the means; with no example at all every value is NaN.
    """
    import torch

    ks = parse_ks(list(ks))
    r = _to_tensor(ranks)
    vals = []
    for family in (*METRICS, *_extra_families(extra)):
        for k in ks:
            v = _per_example(r, family, k)
            vals.append(torch.nanmean(v) if v.numel() else torch.tensor(math.nan, dtype=torch.float64))
    out = torch.stack(vals).tolist() if vals else []
    return dict(zip(metric_names(ks, extra), (float(x) for x in out)))


def evaluate_scores(
    scores: Tensor,
    targets: Tensor,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    seen: Tensor | None = None,
) -> dict[str, float]:
    """Metrics of one score matrix: `metrics_from_ranks(target_ranks(scores, targets, seen), ks)`.

    Args:
        scores: (B, n_items) scores over the whole catalogue (column 0 = padding, never a candidate).
        targets: (B,) or (B, T) target ids, 0 = padding.
        ks: cut-offs.
        seen: optional (B, L) items of the session to exclude from the candidates (off by default,
            as in the papers); a target keeps its score even if it was seen.

    Returns:
        `{"HR@5": ..., "P@20": ..., "MRR@20": ..., "NDCG@20": ..., "Recall@20": ...}`, fractions.
    """
    return metrics_from_ranks(target_ranks(scores, targets, seen), ks)


_NAN_MESSAGE = "the scores contain NaN: the model is broken (check the loss and learning rate)"


class RankCollector:
    """Accumulates target ranks on a device; one host synchronisation per evaluation.

    Example::

        col = RankCollector(device)
        for batch in batches:
            col.update(model(batch), batch.targets)      # no host sync here
        ranks = col.ranks()                               # one concatenation + NaN check
        metrics = col.metrics((5, 10, 20))
    """

    def __init__(self, device: str | torch.device = "cpu", *, check_nan: bool = True, duplicates: str = "once",
                 extra: tuple[str, ...] | list[str] = ()) -> None:
        import torch

        _check_duplicates(duplicates)
        self.device = torch.device(device)
        self.check_nan = check_nan
        self.duplicates = duplicates  # "count": repeated targets ranked -1 (Recall counts them)
        self.extra = tuple(_extra_families(extra))  # extra families `metrics` reports
        self._parts: list[Tensor] = []
        self._ties: list[Tensor] = []  # per batch: other candidates scoring exactly the target's score
        self._nan: Tensor | None = None
        self._single: bool | None = None
        self._cache: Tensor | None = None

    def __len__(self) -> int:
        return sum(int(p.shape[0]) for p in self._parts)

    def reset(self) -> None:
        """Forget every collected rank."""
        self._parts.clear()
        self._ties.clear()
        self._nan = None
        self._single = None
        self._cache = None

    def _add(self, ranks: Tensor, nan: Tensor | None, single: bool, ties: Tensor | None = None) -> None:
        if self._single is not None and single != self._single:
            raise SbrError("cannot mix one-target (B,) and several-target (B, T) batches in one evaluation")
        self._single = single
        self._parts.append(ranks.to(self.device, non_blocking=True))
        if ties is not None:
            self._ties.append(ties.to(self.device, non_blocking=True))
        if nan is not None and self.check_nan:
            nan = nan.to(self.device)
            self._nan = nan if self._nan is None else (self._nan | nan)
        self._cache = None

    def update(self, scores: Tensor, targets: Tensor, seen: Tensor | None = None) -> None:
        """Rank `targets` (B,) or (B, T) against `scores` (B, n_items) and keep the ranks."""
        ranks, ties, nan, single = rank_block_ties(scores, targets, seen, check_nan=self.check_nan,
                                                   duplicates=self.duplicates)
        self._add(ranks, nan, single, ties)

    def update_chunked(
        self,
        score_chunk: Callable[[int, int], Tensor],
        target_scores: Tensor,
        targets: Tensor,
        n_items: int,
        *,
        chunk_size: int = 65536,
        seen: Tensor | None = None,
    ) -> None:
        """Like `update` for a catalogue scored chunk by chunk (`score_chunk(start, end)`)."""
        ranks, ties, nan = chunked_target_ranks_ties(
            score_chunk, target_scores, targets, n_items, chunk_size=chunk_size, seen=seen,
            check_nan=self.check_nan, duplicates=self.duplicates,
        )
        self._add(ranks, nan, ranks.dim() == 1, ties)

    def ranks(self) -> Tensor:
        """All ranks so far, (N,) or (N, T) int64 on the collector's device (raises on NaN scores)."""
        import torch

        if self._cache is not None:
            return self._cache
        if self._nan is not None and bool(self._nan):
            raise SbrError(_NAN_MESSAGE)
        if not self._parts:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        if self._single:
            out = torch.cat(self._parts)
        else:
            width = max(int(p.shape[1]) for p in self._parts)
            out = torch.cat([torch.nn.functional.pad(p, (0, width - int(p.shape[1]))) for p in self._parts])
        self._cache = out
        return out

    def numpy(self) -> np.ndarray:
        """The ranks as an int64 numpy array."""
        return self.ranks().cpu().numpy()

    def ties(self) -> Tensor:
        """Per target, the number of other candidates scoring exactly its score (the pessimistic
        rank minus the optimistic one, `1 + #strictly higher`); same shape as `ranks()`."""
        import torch

        ranks = self.ranks()
        if len(self._ties) != len(self._parts):
            raise SbrError("tie counts are missing for some batches of this evaluation")
        if not self._ties:
            return torch.zeros_like(ranks)
        if self._single:
            return torch.cat(self._ties)
        return torch.cat([torch.nn.functional.pad(t, (0, ranks.shape[1] - int(t.shape[1]))) for t in self._ties])

    def metrics(self, ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, float]:
        """Every metric at every K over all collected examples (fractions), and the extra families."""
        return metrics_from_ranks(self.ranks(), ks, self.extra)
