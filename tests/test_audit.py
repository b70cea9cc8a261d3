"""`sbrbench audit`: every check fires on planted data and stays silent on clean data."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import honest_data as hd
import numpy as np
import pytest
import torch

from sbrbench.audit import (
    LeakError,
    audit,
    batch_independence,
    check_model_structures,
    check_structures,
    library_graphs,
    model_structures,
)
from sbrbench.data.audit import PairAudit, audit_dataset, audit_summary, prefix_keys
from sbrbench.graphs import global_item_graph, session_hypergraph
from sbrbench.models.base import Model
from sbrbench.models.gcegnn import GCEGNN
from sbrbench.models.itemknn import ItemKNN
from sbrbench.models.pop import Pop


@pytest.fixture(scope="module")
def clean():
    return hd.clean()


def _checks(ds) -> set[str]:
    return {f["check"] for f in audit_dataset(ds)["findings"]}


def test_clean_data_is_silent(clean) -> None:
    rep = audit_dataset(clean)
    assert rep["findings"] == []
    c = rep["checks"]
    assert c["duplicates"]["exact"] == c["duplicates"]["prefix"] == c["duplicates"]["examples"] == 0
    assert c["unseen_targets"]["unseen"] == 0 and c["repeats"]["consecutive_clicks"] == 0
    assert c["crossing"] == {"shared_sessions": 0, "shared_share": 0.0, "test_targets_read_by_fit": 0, "time_overlap": 0}
    assert c["target_in_prefix"]["share"] == 0.0
    s = audit_summary(rep)
    assert s["findings"] == [] and s["leaks"] == 0 and s["figures"]["duplicate_test_examples"] == 0
    json.dumps(rep)  # JSON-ready


@pytest.mark.parametrize("check,severity", [
    ("duplicates", "warning"), ("unseen_targets", "warning"), ("repeats", "warning"), ("crossing", "leak"),
    ("target_in_prefix", "info"), ("lengths", "warning"), ("popularity", "warning"),
])
def test_each_planted_fault_fires_its_check(check: str, severity: str) -> None:
    rep = audit_dataset(hd.planted(check))
    assert (check, severity) in {(f["check"], f["severity"]) for f in rep["findings"]}


def test_duplicate_and_crossing_figures_are_exact() -> None:
    c = audit_dataset(hd.planted("duplicates"))["checks"]["duplicates"]
    assert (c["exact"], c["prefix"]) == (1, 1)
    # the exact copy has len-1 examples, all at the start of a training session; the prefix copy 2
    g = hd.groups()
    assert c["examples"] == (len(g["train"][0]) - 1) + 2
    x = audit_dataset(hd.planted("crossing"))["checks"]["crossing"]
    assert x["test_targets_read_by_fit"] == 2 and x["shared_sessions"] == 1
    t = audit_dataset(hd.planted("time"))["checks"]["crossing"]
    assert t["time_overlap"] == 1 and "crossing" in _checks(hd.planted("time"))


def test_prefix_keys_match_python_tuples() -> None:
    rng = np.random.default_rng(3)
    seqs = [rng.integers(1, 5, size=int(rng.integers(1, 6))).tolist() for _ in range(300)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    keys = prefix_keys(np.concatenate(seqs), offsets)
    by_tuple: dict[tuple[int, ...], set[int]] = {}
    for s, a in zip(seqs, offsets[:-1]):
        for k in range(len(s)):
            by_tuple.setdefault(tuple(s[: k + 1]), set()).add(int(keys[a + k]))
    assert all(len(v) == 1 for v in by_tuple.values())  # equal sequences, equal keys
    assert len({next(iter(v)) for v in by_tuple.values()}) == len(by_tuple)  # different ones differ


def _brute_test_only_pairs(ds, fit_splits) -> set[tuple[int, int]]:
    def pairs(split_names) -> set[tuple[int, int]]:
        out = set()
        maxpos = {}
        for n in split_names:
            for s, p in zip(ds.splits[n].session.tolist(), ds.splits[n].pos.tolist()):
                maxpos[s] = max(maxpos.get(s, -1), p)
        for s, p in maxpos.items():
            items = ds.items[ds.offsets[s] : ds.offsets[s] + p + 1].tolist()
            out |= {(a, b) for a in items for b in items}
        return out
    return pairs(("test",)) - pairs(fit_splits)


def test_structures_built_from_fit_sessions_are_clean_and_a_leaky_graph_fails_loudly(clean) -> None:
    fit = ("train",)
    rep = check_structures(clean, fit, library_graphs(clean, fit))
    assert rep["pairs"] > 0 and rep["not_in_fit"] == rep["test_only"] == rep["valid_only"] == 0 and not rep["leak"]
    # planted: the global graph and the hypergraph of every session, test sessions included
    leaky = {"global": global_item_graph(clean.items, clean.offsets, clean.n_items),
             "hyper": session_hypergraph(clean.items, clean.offsets, clean.n_items)}
    truth = _brute_test_only_pairs(clean, fit)
    assert truth
    hg = PairAudit(clean, fit).check("hyper", *library_graphs_pairs(leaky["hyper"], clean.n_items))
    assert hg["test_only"] == len(truth) and hg["leak"]
    with pytest.raises(LeakError, match="test-only"):
        check_structures(clean, fit, {"global": library_graphs_pairs(leaky["global"], clean.n_items)})


def library_graphs_pairs(graph, n_items):
    from sbrbench.audit import _pairs_of

    return _pairs_of(graph, n_items)


def test_model_structures_are_found_and_checked(clean) -> None:
    knn = ItemKNN(clean.n_items)
    knn.fit(clean, ("train",))
    assert set(model_structures(knn)) == {"similarity"}
    assert not check_model_structures(knn, clean, ("train",))["leak"]
    # planted: co-occurrence counts of every session
    from sbrbench.data.audit import cooccurrence

    knn.similarity = cooccurrence(clean.items, clean.offsets, clean.n_items).astype(np.float32)
    with pytest.raises(LeakError):
        check_model_structures(knn, clean, ("train",))
    # a neighbour table in a buffer (GCE-GNN)
    g = GCEGNN(clean.n_items, GCEGNN.Params(dim=8))
    g.prepare(clean, ("train",), None)
    assert "neighbour_items" in model_structures(g)
    assert not check_model_structures(g, clean, ("train",))["leak"]
    table = torch.from_numpy(global_item_graph(clean.items, clean.offsets, clean.n_items).neighbors)
    g.neighbour_items = table
    with pytest.raises(LeakError):
        check_model_structures(g, clean, ("train",))
    # validation targets leak when selecting on validation, not when validation is fitted
    va = global_item_graph(*_fit_csr(clean, ("train", "valid")), clean.n_items)
    g.neighbour_items = torch.from_numpy(va.neighbors)
    assert not check_model_structures(g, clean, ("train", "valid"))["leak"]
    rep = check_model_structures(g, clean, ("train",), raise_on_leak=False)
    assert rep["leak"] and rep["valid_only"] > 0  # (a pair the test sessions hold too counts in both)


def _fit_csr(ds, splits):
    f = ds.fit_sessions(splits)
    return f.items, f.offsets


class _BatchLeak(Model):
    """Scores every item of the whole batch's sessions: a per-batch hypergraph in miniature."""

    neural = False

    def forward(self, batch):  # type: ignore[no-untyped-def]
        scores = torch.zeros(batch.seq.shape[0], self.n_items)
        scores[:, batch.seq.unique()] = 1.0
        scores[:, 0] = float("-inf")
        return scores


def test_batch_independence(clean) -> None:
    pop = Pop(clean.n_items)
    pop.fit(clean, ("train",))
    ok = batch_independence(pop, clean)
    assert ok["independent"] and ok["examples"] == 32
    bad = batch_independence(_BatchLeak(clean.n_items), clean)
    assert not bad["independent"] and bad["changed_examples"] > 0


def test_trainer_stops_a_run_whose_structure_leaks(clean, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sbrbench.train import train

    rec = train("itemknn", clean, results_dir=tmp_path)
    assert rec["leak_check"]["structures"][0]["structure"] == "similarity" and not rec["leak_check"]["leak"]
    original = ItemKNN.fit

    def leaky_fit(self, dataset, splits):  # type: ignore[no-untyped-def]
        original(self, dataset, ("train", "valid"))  # selects on valid but fits on it
    monkeypatch.setattr(ItemKNN, "fit", leaky_fit)
    with pytest.raises(LeakError, match="validation-only"):
        train("itemknn", clean, results_dir=tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    out = {}
    for name, ds in (("clean", hd.clean()), ("crossing", hd.planted("crossing"))):
        ds.name = name
        ds.save(root / name)
        out[name] = root / name
    return out


def test_audit_api_runs_models_and_graphs(saved: dict[str, Path]) -> None:
    rep = audit(saved["clean"], models=["itemknn", "pop"])
    assert rep["leaks"] == 0 and rep["findings"] == [] and rep["structures"]["pairs"] > 0
    assert [m["model"] for m in rep["models"]] == ["itemknn", "pop"]
    assert all(m["batch"]["independent"] for m in rep["models"])


def test_cli_audit_exit_code_json_and_one_line_errors(saved: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sbrbench.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(["audit", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run(str(saved["clean"]), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["findings"] == [] and rep["leaks"] == 0
    code, out, err = run(str(saved["crossing"]))
    assert code != 0 and "leak" in out
    assert err.strip().count("\n") == 0 and err.startswith("error: audit of crossing found 1 leak")
    for args, needle in ((("no-such-dataset",), "dataset"), ((str(saved["clean"]), "--length-buckets", "5,2"), "increasing")):
        code, out, err = run(*args)
        assert code != 0 and needle in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_cli_subprocess_exits_non_zero_on_a_leak(saved: dict[str, Path]) -> None:
    r = subprocess.run([sys.executable, "-m", "sbrbench", "audit", str(saved["crossing"]), "--no-graphs"],
                       capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error: audit of crossing found 1 leak")


def test_all_pairs_brute_force_agrees_on_small_data(clean) -> None:
    # every pair co-occurring in a training session is legitimate for a graph fitted on train
    f = clean.fit_sessions(("train",))
    pairs = {(a, b) for s, e in zip(f.offsets[:-1], f.offsets[1:]) for a, b in combinations(f.items[s:e].tolist(), 2)}
    src = np.array([p[0] for p in pairs])
    dst = np.array([p[1] for p in pairs])
    rep = PairAudit(clean, ("train",)).check("all", src, dst)
    assert rep["pairs"] == len(pairs) and rep["not_in_fit"] == 0


def test_targets_only_the_validation_sessions_hold_are_reported_for_runs_that_select_on_validation() -> None:
    g = hd.groups()
    g["valid"][0] = [*g["valid"][0], 98]  # an item only a validation session holds
    g["test"][0] = [*g["test"][0][:-1], 98]  # ... as a test target
    rep = audit_dataset(hd.build(g, name="held", n_items=100))
    c = rep["checks"]["unseen_targets"]
    assert (c["unseen"], c["unseen_without_valid"]) == (0, 1)
    (f,) = [f for f in rep["findings"] if f["check"] == "unseen_targets"]
    assert f["message"].startswith("1 more test examples (") and "only the validation sessions contain (1 items)" in f["message"]
    assert audit_dataset(hd.clean())["checks"]["unseen_targets"]["unseen_without_valid"] == 0
