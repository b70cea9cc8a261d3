"""Metrics: ranks and metric values against a brute-force argsort reference and hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbrbench.errors import SbrError
from sbrbench.metrics import RankCollector
from sbrbench.metrics import (
    METRICS,
    chunked_target_ranks,
    evaluate_scores,
    metrics_from_ranks,
    parse_ks,
    parse_metric,
    per_example_from_ranks,
    target_ranks,
)

KS = (1, 3, 5, 20, 100)


# ---- brute-force reference: argsort, target placed after every equal-scored item ------------------
def ref_rank(row: np.ndarray, target: int, seen: set[int] = frozenset(), targets: set[int] = frozenset()) -> int:
    """Pessimistic rank by sorting: candidates 1..n-1 minus excluded seen items."""
    cands = [j for j in range(1, len(row)) if j == target or j in targets or j not in seen]
    is_t = np.array([j == target for j in cands])
    vals = np.array([row[j] for j in cands])
    order = np.lexsort((is_t, -vals))  # by score desc, the target last among ties
    return int(np.flatnonzero(np.array(cands)[order] == target)[0]) + 1


def ref_metrics(rows_targets: list[list[int]], rows_ranks: list[list[int]], ks, single: bool) -> dict[str, float]:
    """Metrics written straight from the definitions with Python loops."""
    out: dict[str, list[float]] = {f"{m}@{k}": [] for m in METRICS for k in ks}
    for ranks in rows_ranks:
        if not ranks:
            continue
        for k in ks:
            topk = [r for r in ranks if r <= k]
            best = min(ranks)
            if single:
                (r,) = ranks
                hit = 1.0 if r <= k else 0.0
                vals = {"HR": hit, "P": hit, "Recall": hit, "MRR": hit / r, "NDCG": hit / math.log2(r + 1)}
            else:
                idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(ranks), k) + 1))
                vals = {
                    "HR": 1.0 if topk else 0.0,
                    "P": len(topk) / k,
                    "Recall": len(topk) / len(ranks),
                    "MRR": 1 / best if best <= k else 0.0,
                    "NDCG": sum(1 / math.log2(r + 1) for r in topk) / idcg,
                }
            for m, v in vals.items():
                out[f"{m}@{k}"].append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_target_matches_argsort_reference_with_ties(seed: int, device: str) -> None:
    g = torch.Generator().manual_seed(seed)
    B, n = 40, 60
    scores = torch.randint(0, 6, (B, n), generator=g).float()  # many ties
    scores[:, 0] = 100.0  # padding column scores highest: must never count
    targets = torch.randint(1, n, (B,), generator=g)
    ranks = target_ranks(scores.to(device), targets.to(device))
    assert ranks.device.type == torch.device(device).type
    ranks = ranks.cpu()
    expect = [ref_rank(scores[b].numpy(), int(targets[b])) for b in range(B)]
    assert ranks.tolist() == expect
    got = evaluate_scores(scores, targets, ks=KS)
    want = ref_metrics([[int(t)] for t in targets], [[r] for r in expect], KS, single=True)
    assert got == pytest.approx(want, abs=1e-12)
    assert got["HR@100"] == 1.0  # K larger than the catalogue (59 items)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("T", [3, 12])  # 12 exercises the sort + searchsorted path
def test_several_targets_match_reference(seed: int, T: int, device: str) -> None:
    g = torch.Generator().manual_seed(seed)
    B, n = 30, 50
    scores = torch.randint(0, 8, (B, n), generator=g).float()
    targets = torch.randint(1, n, (B, T), generator=g)
    targets[::3, T // 2 :] = 0  # padding
    targets[5, :] = 0  # a row without targets is left out of the means
    targets[7, 1] = targets[7, 0]  # a duplicate target counts once
    ranks = target_ranks(scores.to(device), targets.to(device)).cpu()
    rows_ranks = []
    for b in range(B):
        tset = {int(t) for t in targets[b] if t != 0}
        seen_t: set[int] = set()
        row = []
        for j, t in enumerate(targets[b].tolist()):
            if t == 0 or t in seen_t:
                assert ranks[b, j] == 0
                continue
            seen_t.add(t)
            r = ref_rank(scores[b].numpy(), t, targets=tset)
            assert ranks[b, j] == r
            row.append(r)
        rows_ranks.append(row)
    got = evaluate_scores(scores, targets, ks=KS)
    assert got == pytest.approx(ref_metrics([], rows_ranks, KS, single=False), abs=1e-12)


def test_hand_computed_single_target() -> None:
    # catalogue items 1..5 with scores .5 .9 .1 .7 .3; column 0 scores 9 but is padding
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.3]])
    assert target_ranks(scores, torch.tensor([4])).tolist() == [2]
    m = evaluate_scores(scores, torch.tensor([4]), ks=(1, 2))
    assert m["HR@1"] == 0 and m["MRR@1"] == 0 and m["NDCG@1"] == 0
    assert m["HR@2"] == 1 and m["P@2"] == 1 and m["Recall@2"] == 1
    assert m["MRR@2"] == pytest.approx(0.5)
    assert m["NDCG@2"] == pytest.approx(1 / math.log2(3))


def test_hand_computed_ties_never_favour_target() -> None:
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]  # 3 items tie at the top
    m = evaluate_scores(scores, torch.tensor([2]), ks=(2, 3))
    assert m["HR@2"] == 0 and m["HR@3"] == 1 and m["MRR@3"] == pytest.approx(1 / 3)


def test_hand_computed_several_targets() -> None:
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.3]])
    targets = torch.tensor([[4, 3, 0]])  # ranks 2 and 5
    assert target_ranks(scores, targets).tolist() == [[2, 5, 0]]
    m = evaluate_scores(scores, targets, ks=(2, 5))
    assert m["HR@2"] == 1 and m["Recall@2"] == 0.5 and m["P@2"] == 0.5 and m["MRR@2"] == 0.5
    assert m["NDCG@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["Recall@5"] == 1 and m["P@5"] == pytest.approx(2 / 5)
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3)))


def test_all_equal_scores_score_zero() -> None:
    B, n = 7, 30
    scores = torch.full((B, n), 0.25)
    targets = torch.arange(1, B + 1)
    assert target_ranks(scores, targets).tolist() == [n - 1] * B
    m = evaluate_scores(scores, targets, ks=(5, 10, 20))
    assert all(v == 0 for v in m.values())
    multi = evaluate_scores(scores, torch.stack([targets, targets + 1], 1), ks=(5, 20))
    assert all(v == 0 for v in multi.values())
    # documented edge case: K >= catalogue size puts every item in the "top K"
    assert evaluate_scores(scores, targets, ks=(n - 1,))[f"HR@{n - 1}"] == 1


def test_exclude_seen() -> None:
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1, 0.7, 0.3]] * 4)
    targets = torch.tensor([4, 4, 4, 2])
    seen = torch.tensor([[2, 0], [2, 2], [4, 2], [2, 0]])  # last row: the target was seen
    assert target_ranks(scores, targets).tolist() == [2, 2, 2, 1]
    assert target_ranks(scores, targets, seen=seen).tolist() == [1, 1, 1, 1]
    # off by default; excluded items leave the candidate set, ties included
    tied = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert target_ranks(tied, torch.tensor([3]), seen=torch.tensor([[1]])).tolist() == [2]


@pytest.mark.parametrize("seed", [0, 1])
def test_exclude_seen_matches_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B, n = 25, 40
    scores = torch.randint(0, 5, (B, n), generator=g).float()
    targets = torch.randint(1, n, (B, 2), generator=g)
    seen = torch.randint(0, n, (B, 6), generator=g)
    ranks = target_ranks(scores, targets, seen=seen)
    for b in range(B):
        tset = {int(t) for t in targets[b]}
        sset = {int(s) for s in seen[b] if s != 0}
        for j in range(2):
            if j == 1 and targets[b, 1] == targets[b, 0]:
                continue
            assert ranks[b, j] == ref_rank(scores[b].numpy(), int(targets[b, j]), seen=sset, targets=tset)


def test_column_zero_never_a_candidate() -> None:
    scores = torch.tensor([[0.0, 0.2, 0.4], [1e30, 0.2, 0.4], [-math.inf, 0.2, 0.4], [math.inf, 0.2, 0.4]])
    assert target_ranks(scores, torch.tensor([1, 1, 1, 1])).tolist() == [2, 2, 2, 2]


def test_nan_scores_are_an_error() -> None:
    scores = torch.rand(4, 10)
    scores[2, 7] = math.nan
    with pytest.raises(SbrError, match="NaN"):
        target_ranks(scores, torch.tensor([1, 2, 3, 4]))
    col = RankCollector("cpu")
    col.update(scores, torch.tensor([1, 2, 3, 4]))  # no sync per batch ...
    with pytest.raises(SbrError, match="NaN"):
        col.ranks()  # ... the error comes at the end


def test_bad_target_ids_are_an_error() -> None:
    with pytest.raises(SbrError, match="item ids"):
        target_ranks(torch.rand(2, 5), torch.tensor([1, 5]))


@pytest.mark.parametrize("chunk", [1, 7, 16, 50])
def test_chunked_equals_unchunked(chunk: int) -> None:
    g = torch.Generator().manual_seed(3)
    B, n = 20, 50
    scores = torch.randint(0, 6, (B, n), generator=g).float()
    seen = torch.randint(0, n, (B, 4), generator=g)
    for targets in (torch.randint(1, n, (B,), generator=g), torch.randint(0, n, (B, 3), generator=g)):
        full = target_ranks(scores, targets, seen=seen)
        t2 = targets[:, None] if targets.dim() == 1 else targets
        ts = scores.gather(1, t2)
        ts = ts[:, 0] if targets.dim() == 1 else ts
        got, nan = chunked_target_ranks(lambda a, b: scores[:, a:b], ts, targets, n, chunk_size=chunk, seen=seen)
        assert torch.equal(got, full)
        assert not bool(nan)


def test_chunked_dot_product_scoring_matches_matmul() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randint(-3, 4, (33, 8), generator=g).float()  # integer values: exact dot products, ties
    emb = torch.randint(-3, 4, (101, 8), generator=g).float()
    targets = torch.randint(1, 101, (33,), generator=g)
    full = target_ranks(q @ emb.T, targets)
    target_scores = (q * emb[targets]).sum(1)  # the (B, n_items) matrix is never built
    for chunk in (101, 10, 64):
        col = RankCollector("cpu")
        col.update_chunked(lambda a, b: q @ emb[a:b].T, target_scores, targets, 101, chunk_size=chunk)
        assert torch.equal(col.ranks(), full)


def test_collector_batches_and_metrics() -> None:
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 9, (90, 70), generator=g).float()
    targets = torch.randint(1, 70, (90,), generator=g)
    col = RankCollector("cpu")
    for i in range(0, 90, 32):
        col.update(scores[i : i + 32], targets[i : i + 32])
    assert len(col) == 90
    assert torch.equal(col.ranks(), target_ranks(scores, targets))
    assert col.metrics((5, 20)) == evaluate_scores(scores, targets, ks=(5, 20))
    multi = RankCollector("cpu")
    multi.update(scores[:10], torch.randint(1, 70, (10, 2), generator=g))
    multi.update(scores[10:20], torch.randint(1, 70, (10, 4), generator=g))
    assert multi.ranks().shape == (20, 4)  # padded to the widest batch
    with pytest.raises(SbrError, match="mix"):
        multi.update(scores[:5], targets[:5])


def test_per_example_and_parsing() -> None:
    ranks = np.array([1, 2, 30, 0], dtype=np.int32)  # the last row has no target
    v = per_example_from_ranks(ranks, "MRR@20")
    assert v[:3].tolist() == [1.0, 0.5, 0.0] and math.isnan(v[3])
    assert metrics_from_ranks(ranks, (20,))["MRR@20"] == pytest.approx(0.5)
    assert parse_metric("hit@50") == ("HR", 50) and parse_metric("mrr", 20) == ("MRR", 20)
    assert parse_ks("20,5, 10,5") == (5, 10, 20)
    for bad in ("MAP@20", "MRR@0", "MRR@x"):
        with pytest.raises(SbrError):
            parse_metric(bad)
    with pytest.raises(SbrError, match="Did you mean"):
        parse_metric("NDGC@10")


def _spop_scores(prefixes: list[list[int]], counts: torch.Tensor) -> torch.Tensor:
    """S-POP-like scorer: items of the example's own prefix first, then training popularity."""
    B = len(prefixes)
    boost = torch.zeros(B, counts.shape[0])
    for b, p in enumerate(prefixes):
        boost[b].index_add_(0, torch.tensor(p), torch.ones(len(p)))
    return counts[None, :] + 1e7 * boost


def test_shuffled_or_rebatched_test_set_gives_same_metrics(diginetica) -> None:
    """Guard against batch-level leakage: order and batch size never change the result."""
    items = diginetica.fit_sessions(("train",)).items
    counts = torch.from_numpy(np.bincount(items, minlength=diginetica.n_items).astype(np.float32))
    prefixes, targets = diginetica.prefixes("test")
    n = 1500
    prefixes, targets_t = prefixes[:n], torch.tensor(targets[:n])

    def run(order: np.ndarray, batch: int) -> tuple[torch.Tensor, dict[str, float]]:
        col = RankCollector("cpu")
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            col.update(_spop_scores([prefixes[j] for j in idx], counts), targets_t[idx])
        return col.ranks(), col.metrics((5, 10, 20))

    base_r, base_m = run(np.arange(n), 100)
    perm = np.random.default_rng(0).permutation(n)
    for order, batch in ((perm, 100), (np.arange(n), 512), (perm, 37)):
        r, m = run(order, batch)
        back = torch.empty_like(r)
        back[torch.from_numpy(order)] = r
        assert torch.equal(back, base_r)
        assert m == pytest.approx(base_m, rel=1e-12)
    assert 0.05 < base_m["HR@20"] < 0.6  # a real, non-trivial scorer on real data
