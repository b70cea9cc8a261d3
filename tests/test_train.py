"""Trainer: determinism, exact resume, NaN stop, selection recorded, run record, re-evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.errors import SbrError
from sbrbench.train import TrainingDiverged, TrainingInterrupted, evaluate_run, train

SMALL = {"dim": 8, "epochs": 3, "batch_size": 16, "eval_batch_size": 64, "lr": 0.01}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    # sessions with structure (item i tends to follow i-1) so that training improves the metric
    sessions = []
    for _ in range(150):
        start = int(rng.integers(1, 40))
        sessions.append([(start + k) % 40 + 1 for k in range(int(rng.integers(2, 7)))])
    items, offsets, n_items = from_sequences("small", "t", sessions)
    idx = np.arange(150)
    splits = {
        "train": augment_all_prefixes(offsets, idx[:110]),
        "valid": augment_all_prefixes(offsets, idx[110:130]),
        "test": augment_all_prefixes(offsets, idx[130:]),
    }
    d = tmp_path_factory.mktemp("data") / "small"
    ProcessedDataset("small", "t", n_items, items, offsets, splits).save(d)
    return d


def _run(small_dir: Path, tmp: Path, **kw) -> dict:
    kw.setdefault("overrides", SMALL)
    return train("srgnn", small_dir, results_dir=tmp, **kw)


def test_same_seed_same_numbers_and_full_record(small_dir: Path, tmp_path: Path) -> None:
    a = _run(small_dir, tmp_path / "a", seed=7)
    b = _run(small_dir, tmp_path / "b", seed=7)
    c = _run(small_dir, tmp_path / "c", seed=8)
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert a["test"] != c["test"]
    run = Path(a["run_dir"])
    for f in ("config.json", "metrics.json", "history.csv", "env.json", "ranks/valid.npy", "ranks/test.npy",
              "checkpoint/model.safetensors", "checkpoint/best.safetensors", "checkpoint/state.pt"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "complete" and m["epochs_run"] == 3 and m["select_on"] == "valid"
    assert m["selection"] == {"split": "valid", "metric": "MRR@20", "paper_compatible": False}
    assert 1 <= m["best_epoch"] <= 3 and set(m["test"]) >= {"P@20", "MRR@20", "HR@5"}
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "valid_MRR@20", "lr", "seconds", "examples_per_s"} <= set(rows[0])
    assert float(rows[0]["lr"]) == pytest.approx(0.01)
    best = max(rows, key=lambda r: float(r["valid_MRR@20"]))
    assert int(best["epoch"]) == m["best_epoch"]
    assert float(best["valid_MRR@20"]) == pytest.approx(m["valid"]["MRR@20"], rel=1e-4)
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 7 and env["determinism"]["deterministic_algorithms"] is True
    assert env["versions"]["torch"] and env["end_time"] and env["dataset_checksum"] == m["dataset_checksum"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["hparams"]["dim"] == 8 and cfg["train"]["batch_size"] == 16 and cfg["fit_splits"] == ["train"]
    again = evaluate_run(run, split="test", ks=(20,))
    assert again["metrics"]["MRR@20"] == pytest.approx(m["test"]["MRR@20"], abs=1e-9)


def test_resume_is_exact(small_dir: Path, tmp_path: Path) -> None:
    full = _run(small_dir, tmp_path / "full", seed=3)

    def stop_after_two(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        _run(small_dir, tmp_path / "part", seed=3, on_epoch_end=stop_after_two)
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    part_dir = next((tmp_path / "part").glob("runs/small/srgnn/*"))
    assert json.loads((part_dir / "metrics.json").read_text())["status"] == "interrupted"
    resumed = train(resume=part_dir)
    assert resumed["status"] == "complete" and resumed["epochs_run"] == 3
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    wa = load_file(str(Path(full["run_dir"]) / "checkpoint/model.safetensors"))
    wb = load_file(str(part_dir / "checkpoint/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_stops_like_ctrl_c(small_dir: Path, tmp_path: Path) -> None:
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def term_after_one(epoch: int, row: dict) -> None:
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="checkpoint of epoch 1 kept"):
        _run(small_dir, tmp_path, seed=3, on_epoch_end=term_after_one)
    run_dir = next(tmp_path.glob("runs/small/srgnn/*"))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoint" / "state.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) == before


def test_nan_loss_stops_with_one_line_error(small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sbrbench.models.srgnn import SRGNN

    orig = SRGNN.forward
    monkeypatch.setattr(SRGNN, "forward", lambda self, batch: orig(self, batch) * float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1, batch 1") as info:
        _run(small_dir, tmp_path)
    assert "\n" not in str(info.value)
    run = next(tmp_path.glob("runs/small/srgnn/*"))
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


def test_select_on_test_is_recorded_and_fits_on_train_and_valid(small_dir: Path, tmp_path: Path) -> None:
    rec = _run(small_dir, tmp_path, select_on="test", overrides={**SMALL, "epochs": 2})
    assert rec["select_on"] == "test" and rec["selection"]["paper_compatible"] is True
    run = Path(rec["run_dir"])
    assert json.loads((run / "config.json").read_text())["fit_splits"] == ["train", "valid"]
    header = (run / "history.csv").read_text().splitlines()[0]
    assert "test_MRR@20" in header and "valid_MRR@20" not in header
    with pytest.raises(SbrError, match="select-on"):
        _run(small_dir, tmp_path, select_on="best")


def test_baseline_record_and_refit_evaluation(small_dir: Path, tmp_path: Path) -> None:
    rec = train("spop", small_dir, results_dir=tmp_path)
    assert rec["status"] == "complete" and rec["best_epoch"] is None and rec["epochs"] == 0
    assert evaluate_run(rec["run_dir"], ks=(20,))["metrics"]["P@20"] == pytest.approx(rec["test"]["P@20"])
