"""SKNN, V-SKNN, STAN, V-STAN: hand-computed toys for every similarity and weighting, and the
batched stateless scores against session-rec's event-by-event logic on its Yoochoose 100k sample."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from knn_reference import RefIndex, RefModel
from knn_toys import dense, scores64, toy_dataset
from sbrbench.errors import SbrError
from sbrbench.models import create_model, resolve_config
from sbrbench.models import knn_common as kc
from sbrbench.models.sknn import position_weight, step_weight

# Training sessions in date order: s0, s1, s2. The test prefix is [2, 3] (S = {2, 3}, |S| = 2).
TRAIN = [[1, 2, 3], [2, 4], [3, 5, 2, 6]]
N = 7


def fitted(name: str, train=TRAIN, times=None, n_items=N, **kw):
    m = create_model(name, n_items, **kw)
    m.fit(toy_dataset(train, times, n_items), ("train",))
    return m


# ---- SKNN ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "similarity, sims",
    [
        # |S∩T| = 2, 1, 2 and |T| = 3, 2, 4 for s0, s1, s2
        ("jaccard", (2 / 3, 1 / 3, 2 / 4)),
        ("tanimoto", (2 / 3, 1 / 3, 2 / 4)),
        ("cosine", (2 / math.sqrt(6), 1 / 2, 2 / math.sqrt(8))),
        # session-rec: li / sqrt(|T|) * sqrt(|S|)  (neighbour first in calc_similarity)
        ("cosine_sessionrec", (2 / math.sqrt(3) * math.sqrt(2), 1.0, 2 / 2 * math.sqrt(2))),
        ("binary", (4 / 9, 2 / 6, 4 / 10)),
    ],
)
def test_sknn_similarities(similarity: str, sims: tuple[float, float, float]) -> None:
    m = fitted("sknn", k=3, similarity=similarity, normalize=False)
    a, b, c = sims
    want = {1: a, 2: a + b + c, 3: a + c, 4: b, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)


def test_sknn_top_k_ties_go_to_the_more_recent_session() -> None:
    # s0 and s2 have the same jaccard once s2 is [3, 5, 2]: k=1 must keep s2 (more recent)
    m = fitted("sknn", train=[[1, 2, 3], [2, 4], [3, 5, 2]], k=1, normalize=False)
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense({3: 2 / 3, 5: 2 / 3, 2: 2 / 3}, N))
    # with times, recency follows the timestamps, not the index
    m = fitted("sknn", train=[[1, 2, 3], [2, 4], [3, 5, 2]], times=[30.0, 20.0, 10.0], k=1, normalize=False)
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense({1: 2 / 3, 2: 2 / 3, 3: 2 / 3}, N))


def test_sknn_recent_sampling_keeps_the_most_recent_candidates() -> None:
    # sample_size 1 keeps only s2 (most recent candidate) even though s0 is as similar
    m = fitted("sknn", k=3, sample_size=1, normalize=False)
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense({3: .5, 5: .5, 2: .5, 6: .5}, N))
    # "all" ignores sample_size; "random" is a fixed (seeded) sample
    m = fitted("sknn", k=3, sample_size=1, sampling="all", normalize=False)
    assert np.count_nonzero(scores64(m, [[2, 3]])[0]) == 6
    r1 = scores64(fitted("sknn", k=3, sample_size=1, sampling="random", seed=3), [[2, 3]])
    r2 = scores64(fitted("sknn", k=3, sample_size=1, sampling="random", seed=3), [[2, 3]])
    np.testing.assert_array_equal(r1, r2)


def test_sknn_remind_pop_boost_and_normalise() -> None:
    m = fitted("sknn", k=3, remind=True, pop_boost=2.0, normalize=False)
    a, b, c = 2 / 3, 1 / 3, 1 / 2
    base = {1: a, 2: a + b + c, 3: a + c, 4: b, 5: c, 6: c}
    # reminders on the last clicks [2, 3]: cnt 1 -> item 2, cnt 2 -> item 3
    base[2] = (base[2] + 5) * 5 + 1 / 100
    base[3] = (base[3] + 5) * 5 + 2 / 100
    pop = {1: 1, 2: 3, 3: 2, 4: 1, 5: 1, 6: 1}  # neighbours containing the item
    want = {i: v + 2.0 * pop[i] / 3 for i, v in base.items()}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    m = fitted("sknn", k=3)
    s = scores64(m, [[2, 3]])[0]
    assert s.max() == 1.0 and s[1] == 1.0  # item 2 is the best


def test_sknn_no_candidates_gives_zeros() -> None:
    m = fitted("sknn", n_items=9)
    s = scores64(m, [[8]])
    assert not np.isnan(s).any() and (s == 0).all()


# ---- V-SKNN ----------------------------------------------------------------------------------------
def test_position_weights_by_hand() -> None:
    p, L = np.arange(1, 5), np.full(4, 4)
    np.testing.assert_allclose(position_weight("same", p, L), [1, 1, 1, 1])
    np.testing.assert_allclose(position_weight("div", p, L), [.25, .5, .75, 1])
    np.testing.assert_allclose(position_weight("quadratic", p, L), [.0625, .25, .5625, 1])
    np.testing.assert_allclose(position_weight("log", p, L), [1 / math.log10(x) for x in (4.7, 3.7, 2.7, 1.7)])
    np.testing.assert_allclose(position_weight("linear", p, L), [.7, .8, .9, 1])
    # a session of 12 clicks: session-rec's test `p <= 10` zeroes the two most recent clicks
    # and makes the first one negative; the correct form weighs the last 10 positions
    p, L = np.arange(1, 13), np.full(12, 12)
    np.testing.assert_allclose(position_weight("linear_sessionrec", p, L),
                               [-.1, 0, .1, .2, .3, .4, .5, .6, .7, .8, 0, 0], atol=1e-12)
    np.testing.assert_allclose(position_weight("linear", p, L),
                               [0, 0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1], atol=1e-12)


def test_step_weights_by_hand() -> None:
    st = np.array([1, 2, 4, 10, 12])
    np.testing.assert_allclose(step_weight("same", st), [1, 1, 1, 1, 1])
    np.testing.assert_allclose(step_weight("div", st), [1, .5, .25, .1, 1 / 12])
    np.testing.assert_allclose(step_weight("quadratic", st), [1, .25, 1 / 16, .01, 1 / 144])
    np.testing.assert_allclose(step_weight("log", st), [1 / math.log10(x + 1.7) for x in st])
    np.testing.assert_allclose(step_weight("linear_sessionrec", st), [.9, .8, .6, 0, -.2], atol=1e-12)
    np.testing.assert_allclose(step_weight("linear", st), [.9, .8, .6, 0, 0], atol=1e-12)


def test_vsknn_vec_and_cosine_by_hand() -> None:
    # prefix [2, 3]: div weights w2 = 1/2, w3 = 1; decay (div) step 1 for s0 and s2, 2 for s1
    m = fitted("vsknn", k=3, normalize=False)
    a, b, c = 1.5 / 2, 0.5 / 2, 1.5 / 2
    want = {1: a, 2: a + b / 2 + c, 3: a + c, 4: b / 2, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    m = fitted("vsknn", k=3, similarity="cosine", normalize=False)
    nq = math.sqrt(0.25 + 1)
    a, b, c = 1.5 / (nq * math.sqrt(3)), 0.5 / (nq * math.sqrt(2)), 1.5 / (nq * 2)
    want = {1: a, 2: a + b / 2 + c, 3: a + c, 4: b / 2, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    # k = 1: s0 and s2 tie at 0.75, the more recent s2 wins
    m = fitted("vsknn", k=1, normalize=False)
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense({2: .75, 3: .75, 5: .75, 6: .75}, N))


def test_vsknn_idf_remind_and_push() -> None:
    # idf(i) = ln(3 sessions / events of i)
    idf = {1: math.log(3), 2: 0.0, 3: math.log(1.5), 4: math.log(3), 5: math.log(3), 6: math.log(3)}
    m = fitted("vsknn", k=3, idf_weighting=2.0, normalize=False)
    a, b, c = .75, .25, .75
    base = {1: a, 2: a + b / 2 + c, 3: a + c, 4: b / 2, 5: c, 6: c}
    want = {i: v * (1 + 2.0 * idf[i]) for i, v in base.items()}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    m = fitted("vsknn", k=3, remind=False, normalize=False)
    assert scores64(m, [[2, 3]])[0][[1, 2]].tolist() == [0, 0]
    m = fitted("vsknn", k=3, push_reminders=True, normalize=False)
    s = scores64(m, [[2, 3, 2]])[0]
    # prefix [2, 3, 2]: w(3)=2/3 (p=2), w(2)=1 (last occurrence, p=3); item 2 counted twice -> x3
    a, b, c = (1 + 2 / 3) / 2, 1 / 2, (1 + 2 / 3) / 2
    assert s[1] == pytest.approx(3 * (a + b + c))
    assert s[2] == pytest.approx(2 * (a + c))


def test_vsknn_linear_hazard_on_a_long_session() -> None:
    # 12 clicks; s_a holds only the most recent click (12), s_b only the oldest (1)
    prefix = list(range(1, 13))
    train = [[12, 13], [1, 14]]
    buggy = fitted("vsknn", train=train, n_items=15, weighting="linear_sessionrec", normalize=False)
    # w(12) = 0 and w(1) = -0.1: no neighbour has sim > 0, nothing is recommended
    assert (scores64(buggy, [prefix])[0] == 0).all()
    good = fitted("vsknn", train=train, n_items=15, weighting="linear", normalize=False)
    s = scores64(good, [prefix])[0]
    np.testing.assert_allclose(s, dense({12: 1 / 12, 13: 1 / 12}, 15))  # sim 1/12, step 1


def test_vsknn_last_n_clicks_and_time_decay() -> None:
    m = fitted("vsknn", k=3, last_n_clicks=1, normalize=False)
    # only [3]: w = 1, |S| = 1; s0 and s2 match, s1 does not (sim 0)
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense({1: 1, 2: 2, 3: 2, 5: 1, 6: 1}, N))
    day = 86400.0
    m = fitted("vsknn", k=3, times=[0.0, day, 3 * day], weighting_time=True, normalize=False)
    # decay (7/8)^days before the end of training: s0 3 days, s1 2 days, s2 0
    a, b, c = .75 * (7 / 8) ** 3, .25 * (7 / 8) ** 2, .75
    want = {1: a, 2: a + b / 2 + c, 3: a + c, 4: b / 2, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    assert m.fit_info["weighting_time_used"] and m.fit_info["uses_time"]


# ---- STAN / V-STAN -----------------------------------------------------------------------------------
def test_stan_by_hand_both_anchors() -> None:
    # prefix [2, 3], λ_spw = 1: w2 = e^-1, w3 = 1; λ_inh = 1
    e1 = math.exp(-1)
    nq = math.sqrt(e1 * e1 + 1)
    sim = {0: (e1 + 1) / (nq * math.sqrt(3)), 1: e1 / (nq * math.sqrt(2)), 2: (e1 + 1) / (nq * 2)}

    def item_w(pos: dict[int, int], anchor: int) -> dict[int, float]:
        return {i: math.exp(-abs(p - anchor)) for i, p in pos.items()}

    pos = {0: {1: 1, 2: 2, 3: 3}, 1: {2: 1, 4: 2}, 2: {3: 1, 5: 2, 2: 3, 6: 4}}
    anchors = {"code": {0: 3, 1: 1, 2: 3}, "paper": {0: 3, 1: 1, 2: 1}}
    for anchor in ("code", "paper"):
        want: dict[int, float] = {}
        for n in range(3):
            for i, w in item_w(pos[n], anchors[anchor][n]).items():
                want[i] = want.get(i, 0.0) + sim[n] * w
        m = fitted("stan", k=3, lambda_spw=1.0, lambda_inh=1.0, anchor=anchor)
        np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)


def test_stan_time_decay_is_relative_and_off_without_times() -> None:
    day = 86400.0
    m = fitted("stan", k=3, lambda_spw=0.0, lambda_inh=0.0, lambda_snh=1.0, times=[0.0, day, 2 * day])
    # sims (cosine of sets) x exp(-(t_max - t_n) / 1 day)
    a, b, c = 2 / math.sqrt(6) * math.exp(-2), 1 / 2 * math.exp(-1), 2 / math.sqrt(8)
    want = {1: a, 2: a + b + c, 3: a + c, 4: b, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    assert m.fit_info["lambda_snh_used"]
    m = fitted("stan", k=3, lambda_spw=0.0, lambda_inh=0.0, lambda_snh=1.0)
    a, b, c = 2 / math.sqrt(6), 1 / 2, 2 / math.sqrt(8)
    want = {1: a, 2: a + b + c, 3: a + c, 4: b, 5: c, 6: c}
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)
    assert not m.fit_info["uses_time"] and not m.fit_info["lambda_snh_used"]


def test_vstan_ipw_and_idf_by_hand() -> None:
    idf = {1: math.log(3), 2: 0.0, 3: math.log(1.5), 4: math.log(3), 5: math.log(3), 6: math.log(3)}
    m = fitted("vstan", k=3, lambda_spw=0.0, lambda_inh=0.0, lambda_snh=0.0, lambda_ipw=1.0, lambda_idf=1.0)
    a, b, c = 2 / math.sqrt(6), 1 / 2, 2 / math.sqrt(8)
    ipw = {0: 1.0, 1: math.exp(-1), 2: 1.0}  # s1 matches the prefix only at position 1 of 2
    sims = {0: a * ipw[0], 1: b * ipw[1], 2: c * ipw[2]}
    items = {0: [1, 2, 3], 1: [2, 4], 2: [3, 5, 2, 6]}
    want: dict[int, float] = {}
    for n, its in items.items():
        for i in its:
            want[i] = want.get(i, 0.0) + sims[n] * (1 + idf[i])
    np.testing.assert_allclose(scores64(m, [[2, 3]])[0], dense(want, N), rtol=1e-12)


def test_bad_options_are_one_line_errors() -> None:
    for name, kw in [("sknn", {"similarity": "cosin"}), ("vsknn", {"weighting": "lin"}),
                     ("stan", {"anchor": "both"}), ("sknn", {"sampling": "oldest"}), ("stan", {"k": 0})]:
        with pytest.raises(SbrError) as err:
            create_model(name, N, **kw)
        assert "\n" not in str(err.value)


def test_tuned_dataset_defaults() -> None:
    assert resolve_config("sknn", "diginetica").params.k == 50
    assert resolve_config("vsknn", "diginetica").params.weighting_score == "linear"
    assert resolve_config("stan", "yoochoose1_64").params.lambda_spw == 1e-5
    assert resolve_config("sr", "diginetica").params.steps == 15
    assert resolve_config("sknn", "tmall").params.k == 100  # no session-rec config: defaults


# ---- stateless == incremental on session-rec's Yoochoose 100k sample ---------------------------------
@pytest.fixture(scope="module")
def sr100k(shared_datasets):
    """The session-rec sample as a ProcessedDataset, plus session-rec's view of the raw files."""
    from sessionrec_sample import build_sessionrec, sample_paths

    train_path, test_path = sample_paths(shared_datasets)
    ds = build_sessionrec(train_path, test_path)
    key_to_id = {k: i for i, k in enumerate(ds.item_keys) if i}
    tr = pd.read_csv(train_path, sep="\t")
    te = pd.read_csv(test_path, sep="\t").sort_values(["SessionId", "Time"], kind="stable")
    te = te[te.ItemId.astype(str).isin(key_to_id)]
    # session-rec's fit: rows in file order, a session = a run of equal SessionId
    sess, times, cur, last = [], [], None, None
    for sid, it, t in zip(tr.SessionId.tolist(), tr.ItemId.astype(str).tolist(), tr.Time.tolist()):
        if sid != cur:
            sess.append([])
            times.append(0.0)
            cur = sid
        sess[-1].append(key_to_id[it])
        times[-1] = t
    events = [(sid, key_to_id[it], t) for sid, it, t in
              zip(te.SessionId.tolist(), te.ItemId.astype(str).tolist(), te.Time.tolist())]
    return ds, RefIndex(sess, times), events


def _reference_run(ref: RefModel, events, every: int):
    """Event-by-event prediction over every `every`-th test session: (prefixes, score dicts).

    As session-rec's `evaluate_sessions`: at each click after the first, predict from the
    previous click, passing the timestamp of the click to predict."""
    prefixes, outs = [], []
    prev_sid, n_sess, prefix = None, -1, []
    for sid, item, ts in events:
        if sid != prev_sid:
            prev_sid, n_sess, prefix = sid, n_sess + 1, []
            ref.new_session()
        elif n_sess % every == 0:
            outs.append(ref.predict(prefix[-1], ts))
            prefixes.append(list(prefix))
        prefix.append(item)
    return prefixes, outs


def _rownorm(x: np.ndarray) -> np.ndarray:
    mx = x.max(axis=1, keepdims=True)
    return np.divide(x, mx, out=x.copy(), where=mx > 0)


CONFIGS = [
    ("sknn", {"k": 50, "sample_size": 200}),
    ("sknn", {"k": 30, "sample_size": 100, "similarity": "cosine_sessionrec", "remind": True, "pop_boost": 1.0}),
    ("vsknn", {"k": 50, "sample_size": 200}),
    ("vsknn", {"k": 40, "sample_size": 300, "similarity": "cosine", "weighting": "linear_sessionrec",
               "weighting_score": "quadratic", "idf_weighting": 2.0, "remind": False, "last_n_clicks": 4}),
    ("vsknn", {"k": 40, "sample_size": 300, "weighting": "log", "weighting_score": "linear",
               "push_reminders": True, "add_reminders": True, "weighting_time": True}),
    ("stan", {"k": 50, "sample_size": 300}),
    ("stan", {"k": 40, "sample_size": 200, "lambda_spw": 2.5, "lambda_snh": 1.0, "lambda_inh": 5.0,
              "anchor": "paper", "remind": False}),
    ("vstan", {"k": 50, "sample_size": 300, "lambda_idf": 2.0}),
]


@pytest.mark.parametrize("name, kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_stateless_equals_incremental_on_sessionrec_sample(sr100k, name: str, kw: dict) -> None:
    from knn_toys import batch_of

    ds, ref_index, events = sr100k
    model = create_model(name, ds.n_items, **kw)
    model.fit(ds, ("train", "valid"))
    assert model.fit_info["uses_time"] and model.fit_info["training_sessions"] == len(ref_index.items_list)
    prefixes, outs = _reference_run(RefModel(name, ref_index, model.params), events, every=6)
    assert len(prefixes) > 1500
    # the sampling really binds on this data: many prefixes have more candidates than sample_size
    pref = kc.prefixes_from_arrays(batch_of(prefixes).seq.numpy(), np.array([len(p) for p in prefixes]), ds.n_items)
    n_cand = np.diff(kc.candidates(pref.matrix(np.ones(pref.rows.shape[0]), ds.n_items), model.index, 0).indptr)
    assert (n_cand > kw["sample_size"]).mean() > 0.2
    model.score_dtype = np.float64
    got = np.concatenate([model(batch_of(prefixes[i : i + 400])).numpy()[:, 1:]
                          for i in range(0, len(prefixes), 400)])
    want = np.stack([dense(o, ds.n_items) for o in outs])
    np.testing.assert_allclose(_rownorm(got), _rownorm(want), rtol=1e-9, atol=1e-12)


def test_sessionrec_protocol_examples_are_every_next_click(sr100k) -> None:
    ds, _, events = sr100k
    counts = pd.Series([sid for sid, _, _ in events]).value_counts()
    assert len(ds.split("test")) == int((counts - 1).sum()) == 10152
    prefixes, targets = ds.prefixes("test")
    assert min(len(p) for p in prefixes) == 1
    assert ds.counts()["train_sessions"] == 17794
