"""The `comirec` protocol (THUDM/ComiRec's user split), its metrics with repeated targets, its
training-example cuts, and ComiRec's log-uniform sampled softmax."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sbrbench.batching import RandomCutSource, item_tensor
from sbrbench.data.comirec import eval_cut, user_split
from sbrbench.data.formats import ClickLog, UserSequences, read_format
from sbrbench.data.protocols import get_protocol
from sbrbench.errors import DataError, SbrError
from sbrbench.evaluate import evaluation_source, score_examples
from sbrbench.metrics import (
    RankCollector,
    metric_definitions,
    metrics_from_ranks,
    parse_metric,
    per_example_from_ranks,
    target_ranks,
)
from sbrbench.models.seqrec import LogUniformSampler, sampled_softmax_loss


def seqs_dataset(sequences: list[list[int]], **options):  # type: ignore[no-untyped-def]
    n = max(max(s) for s in sequences) + 1
    data = UserSequences([np.asarray(s, np.int32) for s in sequences], [f"u{i}" for i in range(len(sequences))],
                         [""] + [f"i{k}" for k in range(1, n)])
    return get_protocol("comirec").build(data, "syn", options=options)


# ---- the split -----------------------------------------------------------------------------------------
def test_toys_split_counts(shared_datasets: Path) -> None:
    data = read_format("sequences", {"sequences": shared_datasets / "amazon-toys/CIKM2020-S3Rec/Toys_and_Games.txt"}, {})
    ds = get_protocol("comirec").build(data, "amazon-toys")
    assert ds.info["users_train"] == 15529 and ds.info["users_valid"] == 1941 and ds.info["users_test"] == 1942
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 15529, "valid": 1941, "test": 1942}
    assert ds.catalogue_size == 11924 and ds.items.shape[0] == 167597  # ComiRec's filters: no-ops on a 5-core
    # item ids are popularity ranks over all interactions: counts never increase with the id
    counts = np.bincount(ds.items, minlength=ds.n_items)[1:]
    assert (np.diff(counts) <= 0).all()
    # the users are ComiRec's seeded shuffle of the file's users
    order = list(range(19412))
    random.Random(1230).shuffle(order)
    assert ds.session_user.tolist() == order
    assert ds.info["selection_metric"] == "Recall@50" and ds.info["eval_targets"] == "remaining"


def test_user_split_is_pythons_seeded_shuffle_and_cuts_at_int_fractions() -> None:
    tr, va, te = user_split(10, 1230)
    order = list(range(10))
    random.Random(1230).shuffle(order)
    assert tr.tolist() == order[:8] and va.tolist() == order[8:9] and te.tolist() == order[9:]
    a, b = user_split(17, 5), user_split(17, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # the same seed gives the same partition
    assert [len(x) for x in user_split(17, 5)] == [int(17 * 0.8), int(17 * 0.9) - int(17 * 0.8), 17 - int(17 * 0.9)]
    assert eval_cut(np.array([5, 6, 7, 10, 15, 35])).tolist() == [4, 4, 5, 8, 12, 28]


def test_filters_ids_cuts_and_repeated_targets() -> None:
    # item 9 occurs 4 times (< 5): dropped in one pass; a user left with 4 items is then dropped
    seqs = [[1, 2, 3, 4, 1], [2, 3, 4, 1, 2], [3, 4, 1, 2, 3], [4, 1, 2, 3, 4], [1, 2, 3, 9, 9],
            [5, 5, 5, 5, 5, 1, 9, 9], [1, 2, 3, 4, 5, 1, 2, 3, 4, 4], [5, 6, 6, 6, 6, 6, 1]]
    ds = seqs_dataset(seqs, split_seed=7)
    assert ds.info["items_dropped_rare"] == 1 and ds.info["users_dropped_short"] == 1
    # ids by descending count, ties by first appearance: 1 (9 occurrences) ... 6 (5)
    keys = ds.item_keys
    counts = {k: sum(s.count(int(k[1:])) for s in seqs) for k in keys[1:]}
    assert [counts[k] for k in keys[1:]] == sorted(counts.values(), reverse=True)
    assert keys[1] == "i1" and "i9" not in keys
    n = ds.n_sessions
    assert n == 7 and ds.info["users_train"] == int(7 * 0.8) and ds.info["users_valid"] == int(7 * 0.9) - int(7 * 0.8)
    lens = np.diff(ds.offsets)
    tr, va, te = (ds.splits[s] for s in ("train", "valid", "test"))
    assert (tr.pos == lens[tr.session] - 1).all()  # training users: their whole sequence is fitted
    for sp in (va, te):
        assert (sp.pos == np.floor(lens[sp.session] * 0.8)).all()
    # a 5-item user reads 4 items and has 1 target; repeats stay among the targets
    held = np.concatenate([va.session, te.session])
    assert all(int(p) == 4 for s_, p in zip(np.concatenate([va.session, te.session]), np.concatenate([va.pos, te.pos]))
               if lens[s_] == 5) and held.size
    assert seqs_dataset([[1] * 5] * 3, min_item_support=1).items.tolist() == [1] * 15


def test_options_and_bad_input_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="train_cut"):
        seqs_dataset([[1, 2, 3, 4, 5]] * 3, train_cut="sometimes")
    with pytest.raises(DataError, match="at least 3"):
        seqs_dataset([[1, 2, 3, 4, 5]] * 2, min_item_support=1)
    with pytest.raises(DataError, match="no item has 5"):
        seqs_dataset([[1, 2, 3, 4, 5]] * 3)
    with pytest.raises(DataError, match="needs user sequences or raw click logs"):
        get_protocol("comirec").check_input(object())  # type: ignore[arg-type]


def test_click_logs_are_users_sorted_by_time_stably() -> None:
    # user 0 clicks at times 3, 1, 1, 2, 5 (file order a, b, c, d, e): b, c, d, a, e
    log = ClickLog(session=np.array([0] * 5 + [1] * 5 + [2] * 5), item=np.array([0, 1, 2, 3, 4] * 3),
                   time=np.array([3, 1, 1, 2, 5] * 3, dtype=np.float64), item_keys=["a", "b", "c", "d", "e"])
    ds = get_protocol("comirec").build(log, "log", options={"min_item_support": 1})
    keys = ds.item_keys
    assert [keys[i] for i in ds.session(0)] == ["b", "c", "d", "a", "e"]


# ---- histories, targets and cuts ------------------------------------------------------------------------
def test_evaluation_reads_the_last_L_history_items_and_every_remaining_target() -> None:
    seq = list(range(1, 31))  # 30 items: history = the first 24, its last L = 20 read, 6 targets
    ds = seqs_dataset([seq] * 10, min_item_support=1)
    from sbrbench.models import create_model

    src = evaluation_source(create_model("pop", ds.n_items), ds, "test", "cpu")
    b = src.batch(slice(0, 1))
    idmap = {int(k[1:]): i for i, k in enumerate(ds.item_keys) if k}
    assert b.lengths.tolist() == [20]
    assert b.seq[0].tolist() == [idmap[x] for x in seq[4:24]]
    assert b.targets[0].tolist() == [idmap[x] for x in seq[24:]]
    assert src.rank_options == {"duplicates": "count", "extra": ["NDCG_comirec"]}


@pytest.mark.parametrize("cut", ["random", "last", "all"])
def test_training_cuts(cut: str) -> None:
    ds = seqs_dataset([[1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9, 1, 2, 3]] * 4,
                      min_item_support=1, train_cut=cut, history_len=3)
    fit = ds.fit_sessions(("train",))
    src = RandomCutSource(item_tensor(ds), fit, history=3, cut=cut)
    n_users = len(fit)
    assert len(src) == (n_users if cut != "all" else int((fit.lengths - 4).sum()))
    seen = []
    for b in src.batches(4, generator=torch.Generator().manual_seed(0)):
        for row in range(len(b)):
            s = int(b.session[row])
            full = ds.session(s).tolist()
            h, t = b.seq[row, : b.lengths[row]].tolist(), int(b.targets[row])
            k = next(k for k in range(4, len(full)) if full[k] == t and full[max(0, k - 3): k] == h)
            assert len(h) == min(k, 3)
            if cut == "last":
                assert k == len(full) - 1
            seen.append((s, k))
    assert len(seen) == len(src)
    if cut == "all":
        assert len(set(seen)) == len(src)  # every (user, cut) once


# ---- metrics with repeated targets ------------------------------------------------------------------------
def comirec_master(topn: list[int], targets: list[int]) -> tuple[float, float, float]:
    """THUDM/ComiRec master's evaluate_full for one user: (recall, ndcg, hit)."""
    recall, dcg = 0, 0.0
    true = set(targets)
    for no, iid in enumerate(topn):
        if iid in true:
            recall += 1
            dcg += 1.0 / math.log2(no + 2)
    idcg = sum(1.0 / math.log2(no + 2) for no in range(recall))
    return recall / len(targets), (dcg / idcg if recall else 0.0), float(recall > 0)


def test_hand_computed_repeated_targets() -> None:
    # items 1..6 scored .9 .8 .7 .6 .5 .4 (ranks 1..6); column 0 is padding
    scores = torch.tensor([[9.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * 2)
    targets = torch.tensor([[2, 5, 2, 0], [6, 6, 6, 1]])  # row 0: ranks 2, 5, repeat; row 1: 6 (x3), 1
    ranks = target_ranks(scores, targets, duplicates="count")
    assert ranks.tolist() == [[2, 5, -1, 0], [6, -1, -1, 1]]
    assert target_ranks(scores, targets).tolist() == [[2, 5, 0, 0], [6, 0, 0, 1]]  # the default: a set
    m = metrics_from_ranks(ranks, (2, 5), extra=("NDCG_comirec",))
    # K = 2: row 0 hits item 2 (1 of 3 targets), row 1 hits item 1 (1 of 4 targets)
    assert m["Recall@2"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert m["HR@2"] == 1.0
    l2 = 1 / math.log2(3)
    assert m["NDCG@2"] == pytest.approx((l2 / (1 + l2) + 1.0 / (1 + l2)) / 2)  # ideal: min(K, distinct targets) = 2
    assert m["NDCG_comirec@2"] == pytest.approx((l2 + 1.0) / 2)  # hit-normalised: ideal DCG of 1 hit
    # K = 5: row 0 hits both distinct targets (2 of 3 with the repeat), row 1 hits item 1 only
    assert m["Recall@5"] == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert m["NDCG@5"] == pytest.approx(((l2 + 1 / math.log2(6)) / (1 + l2) + 1.0 / (1 + l2)) / 2)
    # against ComiRec master's loop over the top-N list
    for k in (2, 5):
        topn = list(range(1, k + 1))
        want = [comirec_master(topn, [2, 5, 2]), comirec_master(topn, [6, 6, 6, 1])]
        assert m[f"Recall@{k}"] == pytest.approx(np.mean([w[0] for w in want]))
        assert m[f"NDCG_comirec@{k}"] == pytest.approx(np.mean([w[1] for w in want]))
        assert m[f"HR@{k}"] == pytest.approx(np.mean([w[2] for w in want]))
    # the stored ranks carry the rule: recomputing from them needs no option
    assert per_example_from_ranks(ranks.numpy(), "Recall@2").tolist() == pytest.approx([1 / 3, 1 / 4])
    assert per_example_from_ranks(ranks.numpy(), "ndcg_comirec@2").tolist() == pytest.approx([l2, 1.0])
    col = RankCollector(duplicates="count", extra=("NDCG_comirec",))
    col.update(scores, targets)
    assert col.metrics((2, 5)) == pytest.approx(m)


def test_single_target_results_are_unchanged_and_extras_are_opt_in() -> None:
    g = torch.Generator().manual_seed(0)
    scores, targets = torch.rand(20, 40, generator=g), torch.randint(1, 40, (20,), generator=g)
    base = metrics_from_ranks(target_ranks(scores, targets), (5, 20))
    assert "NDCG_comirec@5" not in base
    assert target_ranks(scores, targets, duplicates="count").tolist() == target_ranks(scores, targets).tolist()
    extra = metrics_from_ranks(target_ranks(scores, targets), (5, 20), extra=("NDCG_comirec",))
    assert {k: v for k, v in extra.items() if k in base} == base
    assert extra["NDCG_comirec@20"] == pytest.approx(base["NDCG@20"])  # one target: the same number
    assert parse_metric("NDCG_comirec@50") == ("NDCG_comirec", 50)
    with pytest.raises(SbrError, match="not an extra metric family"):
        metrics_from_ranks(target_ranks(scores, targets), (5,), extra=("MRR",))
    with pytest.raises(SbrError, match="duplicate-target rule"):
        RankCollector(duplicates="sometimes")
    d = metric_definitions({"duplicates": "count", "extra": ["NDCG_comirec"]})
    assert "repeated targets counted" in d["Recall"] and "standard" in d["NDCG"] and "NDCG_comirec" in d


def test_score_examples_uses_the_protocols_rank_options() -> None:
    ds = seqs_dataset([[1, 2, 3, 4, 5, 6, 7, 8, 3, 3]] * 10, min_item_support=1)  # targets: 3, 3
    from sbrbench.models import create_model

    model = create_model("pop", ds.n_items)
    model.fit(ds, ("train",))
    col = score_examples(model, evaluation_source(model, ds, "test", "cpu"), 100, "cpu")
    ranks = col.numpy()
    assert (ranks == -1).any() and "NDCG_comirec@20" in col.metrics((20,))


# ---- ComiRec's sampler and sampled softmax ----------------------------------------------------------------
def test_log_uniform_sampler_distribution() -> None:
    s = LogUniformSampler(1000)
    p = s.prob.double()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert p[0].item() == pytest.approx(math.log(2) / math.log(1001))
    draws = s.draw(400_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=1000).double() / draws.numel()
    se = torch.sqrt(p * (1 - p) / draws.numel())
    assert ((freq - p).abs() / se)[:50].max() < 5  # the head, class by class
    assert (freq[500:].sum() - p[500:].sum()).abs() < 0.003  # and the tail's mass
    # unique samples: distinct, in order of first draw; inclusion frequency ~ TF's expected count
    gen = torch.Generator().manual_seed(1)
    hits = torch.zeros(1000, dtype=torch.float64)
    expect = torch.zeros(1000, dtype=torch.float64)
    reps = 300
    for _ in range(reps):
        ranks, tries = s.sample_unique(50, gen)
        assert ranks.unique().numel() == 50 and tries >= 50
        hits[ranks] += 1
        expect += s.expected_count(torch.arange(1000), 50, tries)
    assert ((hits - expect) / reps).abs().max() < 0.1
    assert s.sample_unique(5000)[1] == -1  # more than the classes: all of them (full softmax)


def test_sampler_ranks_items_by_fitted_popularity() -> None:
    s = LogUniformSampler(6)
    s.set_counts(np.array([0, 1, 5, 5, 0, 9]))
    assert s.rank_item.tolist() == [0, 5, 2, 3, 1, 4]  # padding keeps rank 0; ties and unseen by id
    assert s.item_rank[s.rank_item].tolist() == list(range(6))


def test_sampled_softmax_is_tfs_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    s = LogUniformSampler(8)
    s.set_counts(np.array([0, 3, 9, 1, 7, 2, 5, 4]))
    sample = torch.tensor([1, 3, 2])  # ranks; 3 draws for 3 classes: expected count = 3 p
    monkeypatch.setattr(s, "sample_unique", lambda n, generator=None: (sample, 3))
    g = torch.Generator().manual_seed(0)
    user, table = torch.randn(2, 4, generator=g), torch.randn(8, 4, generator=g)
    targets = torch.tensor([s.rank_item[3].item(), 6])  # row 0's target is also sampled: an accidental hit
    loss = sampled_softmax_loss(user, table, targets, s, 3)
    neg = s.rank_item[sample]
    want = []
    for b in range(2):
        t = int(targets[b])
        logits = [float(user[b] @ table[t]) - math.log(3 * float(s.prob[s.item_rank[t]]))]
        logits += [float(user[b] @ table[c]) - math.log(3 * float(s.prob[r])) for r, c in zip(sample, neg) if int(c) != t]
        want.append(-logits[0] + math.log(sum(math.exp(x) for x in logits)))
    assert loss.item() == pytest.approx(float(np.mean(want)), rel=1e-5)
