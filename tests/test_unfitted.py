"""Test targets that no fitted session contains: found in the dataset, recorded by every run, shown
by `evaluate` (also for runs recorded before the file existed) and noted under reproduced tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.errors import SbrError
from sbrbench.honesty import unfitted_summary
from sbrbench.reproduce import TABLES, Budget, TableSpec, reproduce
from sbrbench.results import RunDir
from sbrbench.train import train
from test_evaluate import _cli

# sessions 0-3 train, 4-5 valid, 6-8 test; item 5 is only in validation sessions, item 6 only in a test one
SESSIONS = [[1, 2, 3], [3, 2, 1], [2, 3, 4], [4, 1, 2], [5, 1], [2, 5], [1, 5], [2, 3], [3, 6]]


@pytest.fixture
def held_out(tmp_path: Path) -> Iterator[tuple[ProcessedDataset, Path]]:
    items, offsets, n_items = from_sequences("heldout", "t", SESSIONS)
    idx = np.arange(len(SESSIONS))
    splits = {"train": augment_all_prefixes(offsets, idx[:4]), "valid": augment_all_prefixes(offsets, idx[4:6]),
              "test": augment_all_prefixes(offsets, idx[6:])}
    ds = ProcessedDataset("heldout", "t", n_items, items, offsets, splits)
    data = tmp_path / "data"
    ds.save(data / "processed" / "heldout" / "t")
    yield ds, data


def test_the_dataset_names_the_examples_whose_target_the_fit_never_contains(held_out) -> None:
    ds, _ = held_out
    targets = ds.examples("test").target.tolist()
    assert targets == [5, 3, 6]
    assert ds.unfitted_examples("test", ("train",)).tolist() == [0, 2]  # 5: validation only; 6: test only
    assert ds.unfitted_examples("test", ("train", "valid")).tolist() == [2]
    valid = ds.examples("valid").target
    assert sorted(valid.tolist()) == [1, 5]
    assert ds.unfitted_examples("valid", ("train",)).tolist() == np.flatnonzero(valid == 5).tolist()
    with pytest.raises(SbrError, match="never the test split"):
        ds.unfitted_examples("test", ("train", "test"))


def test_unfitted_summary_splits_the_figures() -> None:
    s = unfitted_summary(np.array([25, 1, 3, 40]), np.array([0, 2]), (20,))
    assert (s["examples"], s["unfitted_examples"]) == (4, 2) and s["unfitted_share"] == pytest.approx(0.5)
    assert s["unfitted"]["HR@20"] == pytest.approx(0.5) and s["unfitted"]["MRR@20"] == pytest.approx(1 / 6)
    assert s["fitted"]["HR@20"] == pytest.approx(0.5) and s["fitted"]["MRR@20"] == pytest.approx(0.5)
    assert unfitted_summary(np.array([1, 2]), np.array([], dtype=np.int64))["unfitted"] is None
    with pytest.raises(SbrError, match="belong to different evaluations"):
        unfitted_summary(np.array([1, 2]), np.array([2]))


def test_a_run_records_them_and_evaluate_shows_them(
    held_out, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, data = held_out
    monkeypatch.setenv("COLUMNS", "200")
    rec = train("spop", ds, results_dir=tmp_path / "res", data_dir=data, ks=(3,))
    run = RunDir(rec["run_dir"])
    assert run.load_unfitted("test").tolist() == [0, 2]
    test = rec["unfitted_targets"]["test"]
    assert test["unfitted_examples"] == 2 and test["unfitted"]["HR@3"] == 0.0  # S-POP never ranks 5 or 6 above 1-4
    assert "ranks/test-unfitted.npy" in run.read_metrics()["rank_files"]
    p = _cli("evaluate", str(run.path), "--ks", "3", capsys=capsys)
    assert p.returncode == 0, p.stderr
    assert "targets the fit never contains: 2 of 3 examples (66.67%); HR@3 0.00% on them, 100.00% on the others" \
        in p.stdout
    p = _cli("leaderboard", "--results-dir", str(tmp_path / "res"), capsys=capsys)
    line = ("heldout, validation-selected runs: 66.67% of the test examples have a target that no fitted session "
            "contains (no model saw it in training; `sbrbench evaluate RUN` shows the hit rate on them)")
    assert p.returncode == 0 and line in p.stdout
    assert line + "." in (tmp_path / "res" / "leaderboard.md").read_text()
    # a run recorded before the file existed: found again from its dataset
    run.unfitted_path("test").unlink()
    metrics = run.read_metrics()
    del metrics["rank_files"]["ranks/test-unfitted.npy"]
    run.metrics_path.write_text(json.dumps(metrics))
    p = _cli("evaluate", str(run.path), "--json", capsys=capsys)
    assert json.loads(p.stdout)["unfitted"]["unfitted_examples"] == 2


def test_a_reproduced_table_notes_them(held_out, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neural rows fit on train (selection on validation), fitted baselines on train and valid: one
    note per fit, the held-out remark only where validation was held out."""
    _, data = held_out
    monkeypatch.setattr("sbrbench.models.srgnn.SRGNNParams.dim", 8)
    spec = TableSpec(key="test-unfitted", paper_table="srgnn-table2", models=("spop", "srgnn"), datasets=("heldout",),
                     protocol="t", budgets={"one": Budget("one", epochs=1)})
    TABLES.register(spec.key)(spec)
    try:
        out = reproduce(spec.key, budget="one", data_dir=data, results_dir=tmp_path / "res")
    finally:
        TABLES.unregister(spec.key)
    groups = {tuple(g["fit_splits"]): g for g in out["unfitted_targets"]}
    assert set(groups) == {("train",), ("train", "valid")}
    assert groups[("train",)]["unfitted_examples"] == 2 and set(groups[("train",)]["hit_rate"]) == {"srgnn"}
    both = groups[("train", "valid")]
    assert both["unfitted_examples"] == 1 and set(both["hit_rate"]) == {"spop"}
    md = out["markdown"]
    assert ("66.67% of the heldout test examples (2) have a target that no session fitted on train contains "
            "(1 of them: items that only the validation sessions, held out for selection, hold); no row saw these "
            "targets in training") in md
    assert ("33.33% of the heldout test examples (1) have a target that no session fitted on train and valid "
            "contains; no row saw these targets in training") in md
