"""SR and AR: hand-computed rules, pruning ties, no NaN, and equality with session-rec's
event-by-event mining and prediction on its Yoochoose 100k sample."""

from __future__ import annotations

import numpy as np
import pytest

from knn_reference import ref_ar_rules, ref_rules_predict, ref_sr_rules
from knn_toys import batch_of, dense, scores64, toy_dataset
from sbrbench.errors import SbrError
from sbrbench.models import create_model


def fitted(name: str, train: list[list[int]], n_items: int = 8, **kw):
    m = create_model(name, n_items, **kw)
    m.fit(toy_dataset(train, n_items=n_items), ("train",))
    return m


def test_sr_rules_by_hand() -> None:
    # steps 2, div: [1,2,3] gives 1->2 (1), 2->3 (1), 1->3 (1/2); [1,3] adds 1->3 (1)
    m = fitted("sr", [[1, 2, 3], [1, 3]], steps=2)
    assert m.rules[1, 2] == 1.0 and m.rules[1, 3] == 1.5 and m.rules[2, 3] == 1.0 and m.rules.nnz == 3
    np.testing.assert_allclose(scores64(m, [[1]])[0], dense({2: 1 / 1.5, 3: 1.0}, 8))
    # quadratic weights and a longer lag window
    m = fitted("sr", [[1, 2, 3, 4]], steps=3, weighting="quadratic")
    assert m.rules[1, 4] == pytest.approx(1 / 9) and m.rules[2, 4] == pytest.approx(1 / 4)


def test_sr_no_rules_gives_zeros_never_nan() -> None:
    m = fitted("sr", [[1, 2, 3], [1, 3]])
    s = scores64(m, [[3], [2, 7]])  # 3 and 7 start no rule
    assert not np.isnan(s).any()
    assert (s[0] == 0).all() and (s[1] == 0).all()
    m.score_dtype = np.float32
    assert not np.isnan(m(batch_of([[3]])).numpy()).any()


def test_sr_pruning_keeps_first_created_on_ties_and_fractions() -> None:
    # from 1: 1->4 created first (weight 1), then 1->2 (1), then 1->3 (1); pruning 2 keeps 4 and 2
    m = fitted("sr", [[1, 4], [1, 2], [1, 3]], steps=1, pruning=2)
    assert sorted(m.rules[1].indices.tolist()) == [2, 4]
    # pruning 0.5: session-rec keeps len - int(len * 0.5) = 3 - 1 = 2
    m = fitted("sr", [[1, 4], [1, 2], [1, 3]], steps=1, pruning=0.5)
    assert m.rules[1].nnz == 2
    m = fitted("sr", [[1, 4], [1, 2], [1, 3], [1, 3]], steps=1, pruning=1)
    assert m.rules[1].indices.tolist() == [3]  # the heaviest wins over insertion order


def test_sr_last_in_session_and_idf() -> None:
    m = fitted("sr", [[1, 2, 3], [5, 6]], steps=1, last_in_session=1, session_weighting="div")
    # prefix [1, 2]: rule 2->3 (1) plus rule 1->2 (1) x 1/2
    np.testing.assert_allclose(scores64(m, [[1, 2]])[0], dense({3: 1.0, 2: 0.5}, 8))
    with pytest.raises(SbrError):
        create_model("sr", 8, weighting="lin")
    with pytest.raises(SbrError):
        create_model("sr", 8, idf_weight=3)


def test_ar_rules_by_hand() -> None:
    # [1, 2, 1]: pairs (1,2), (1,1), (2,1), both directions -> 1->2: 2, 1->1: 2, 2->1: 2
    m = fitted("ar", [[1, 2, 1]], pruning=0)
    assert m.rules[1, 2] == 2 and m.rules[1, 1] == 2 and m.rules[2, 1] == 2 and m.rules.nnz == 3
    # pruning 1: 1->2 and 1->1 tie at 2; 1->2 was created first
    m = fitted("ar", [[1, 2, 1]], pruning=1)
    assert m.rules[1].indices.tolist() == [2]
    s = scores64(m, [[5, 1], [6]])
    np.testing.assert_allclose(s[0], dense({2: 1.0}, 8))
    assert (s[1] == 0).all()


@pytest.fixture(scope="module")
def sr100k(shared_datasets):
    from sessionrec_sample import build_sessionrec, sample_paths

    ds = build_sessionrec(*sample_paths(shared_datasets))
    fitted = ds.fit_sessions(("train", "valid"))
    items, offs = fitted.items, fitted.offsets
    seqs = [items[a:b].tolist() for a, b in zip(offs[:-1], offs[1:])]
    return ds, seqs


@pytest.mark.parametrize("name, kw", [
    ("sr", {}),
    ("sr", {"steps": 4, "weighting": "quadratic", "pruning": 0.3, "last_in_session": 2, "idf_weight": 1}),
    ("ar", {}),
])
def test_rules_equal_session_rec_on_sample(sr100k, name: str, kw: dict) -> None:
    ds, seqs = sr100k
    model = create_model(name, ds.n_items, **kw)
    model.fit(ds, ("train", "valid"))
    p = model.params
    rules = ref_sr_rules(seqs, p) if name == "sr" else ref_ar_rules(seqs, p.pruning)
    got_rules = {a: dict(zip(model.rules[a].indices.tolist(), model.rules[a].data.tolist()))
                 for a in np.flatnonzero(np.diff(model.rules.indptr)).tolist()}
    assert got_rules == {a: r for a, r in rules.items() if r}  # exact, including pruning ties
    prefixes, _ = ds.prefixes("test")
    got = scores64(model, prefixes)
    want = np.stack([dense(ref_rules_predict(rules, pr, p if name == "sr" else None), ds.n_items)
                     for pr in prefixes])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert not np.isnan(got).any()


def test_cli_train_fits_and_evaluates_sr(sr100k, tmp_path) -> None:
    import json
    import subprocess
    import sys

    ds, _ = sr100k
    ds.save(tmp_path / "ds")
    cmd = [sys.executable, "-m", "sbrbench", "train", "sr", "--dataset", str(tmp_path / "ds"),
           "--results-dir", str(tmp_path / "res"), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["hparams"]["steps"] == 8  # the tuned default of this dataset
    assert 0.3 < rec["test"]["P@20"] < 0.9 and 0.1 < rec["test"]["MRR@20"] < rec["test"]["P@20"]
    bad = subprocess.run(cmd + ["--set", "weighting=lin"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "weighting" in bad.stderr
