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
from sbrbench.evaluate import evaluate_run
from sbrbench.train import TrainingCallback, TrainingDiverged, TrainingInterrupted, train
from toy_data import chain_sessions, random_sessions, split_dataset

SMALL = {"dim": 8, "epochs": 3, "batch_size": 16, "eval_batch_size": 64, "lr": 0.01}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data") / "small"
    split_dataset("small", chain_sessions(150, 40, 1), (110, 130)).save(d)
    return d


class _AfterEpoch(TrainingCallback):
    """Calls `fn(epoch, row)` after every epoch (to interrupt a run at a chosen point)."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    def on_epoch_end(self, epoch: int, row: dict) -> None:
        self.fn(epoch, row)


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


def test_resume_is_exact(small_dir: Path, tmp_path: Path, device: str) -> None:
    kw = {"device": device, "deterministic": device != "cpu"}
    full = _run(small_dir, tmp_path / "full", seed=3, **kw)

    def stop_after_two(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        _run(small_dir, tmp_path / "part", seed=3, callback=_AfterEpoch(stop_after_two), **kw)
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    part_dir = next((tmp_path / "part").glob("runs/small/srgnn/*"))
    assert json.loads((part_dir / "metrics.json").read_text())["status"] == "interrupted"
    resumed = train(resume=part_dir, **kw)
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
        _run(small_dir, tmp_path, seed=3, callback=_AfterEpoch(term_after_one))
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


def test_lr_schedule_at_epoch_start_decays_one_epoch_earlier(small_dir: Path, tmp_path: Path) -> None:
    lrs = {}
    for schedule in ("epoch-end", "epoch-start"):
        ov = {**SMALL, "epochs": 4, "lr_dc_step": 2, "patience": 0, "lr_schedule": schedule}
        rec = _run(small_dir, tmp_path / schedule, overrides=ov)
        rows = list(csv.DictReader((Path(rec["run_dir"]) / "history.csv").open()))
        lrs[schedule] = [float(r["lr"]) for r in rows]
        assert json.loads((Path(rec["run_dir"]) / "config.json").read_text())["train"]["lr_schedule"] == schedule
    assert lrs["epoch-end"] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert lrs["epoch-start"] == pytest.approx([0.01, 0.001, 0.001, 0.0001])
    with pytest.raises(SbrError, match="lr_schedule"):
        _run(small_dir, tmp_path / "bad", overrides={**SMALL, "lr_schedule": "sometimes"})


def test_the_trainer_minimises_whatever_loss_the_model_declares(
    small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sbrbench.models.srgnn import SRGNN

    seen: list[tuple[float, int]] = []

    def sampled_softmax(self, batch):  # type: ignore[no-untyped-def]
        scores = self(batch)
        negatives = torch.randint(1, self.n_items, (len(batch), 5))
        logits = torch.cat([scores.gather(1, batch.targets[:, None]), scores.gather(1, negatives)], 1)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        seen.append((float(loss.detach()), len(batch)))
        return loss

    monkeypatch.setattr(SRGNN, "training_loss", sampled_softmax)
    rec = _run(small_dir, tmp_path, overrides={**SMALL, "epochs": 1})
    n_fit = sum(n for _, n in seen)
    assert len(seen) == -(-n_fit // 16)
    row = next(csv.DictReader((Path(rec["run_dir"]) / "history.csv").open()))
    assert float(row["loss"]) == pytest.approx(sum(v * n for v, n in seen) / n_fit, rel=1e-4)


def test_checkpoint_state_loads_without_pickled_code_and_a_hostile_one_is_refused(
    small_dir: Path, tmp_path: Path
) -> None:
    import pickle

    def stop_after_one(epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        _run(small_dir, tmp_path, callback=_AfterEpoch(stop_after_one))
    run = next(tmp_path.glob("runs/small/srgnn/*"))
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    (run / "checkpoint" / "state.pt").write_bytes(pickle.dumps({"epoch": Hostile()}, protocol=2))
    with pytest.raises(SbrError, match="untrusted checkpoint state") as info:
        train(resume=run)
    assert "\n" not in str(info.value) and not marker.exists()


def test_random_cut_examples_and_several_targets_per_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    users = [[(s + k) % 30 + 1 for k in range(int(rng.integers(6, 12)))] for s in rng.integers(0, 30, 90)]
    items, offsets, n_items = from_sequences("users", "t", users)
    lens = np.diff(offsets)
    idx = np.arange(90)

    def at_80pct(rows: np.ndarray):  # type: ignore[no-untyped-def]
        from sbrbench.data.dataset import Split

        return Split(rows.astype(np.int32), np.maximum(1, (lens[rows] * 0.8).astype(np.int32)))

    splits = {"train": augment_all_prefixes(offsets, idx[:70]), "valid": at_80pct(idx[70:80]),
              "test": at_80pct(idx[80:])}
    info = {"train_examples": "random-cut", "history_len": 4, "eval_targets": "remaining"}
    ProcessedDataset("users", "t", n_items, items, offsets, splits, info=info).save(tmp_path / "users")
    rec = train("srgnn", tmp_path / "users", results_dir=tmp_path, overrides={**SMALL, "epochs": 2})
    run = Path(rec["run_dir"])
    ranks = np.load(run / "ranks" / "test.npy")
    remaining = lens[80:] - np.maximum(1, (lens[80:] * 0.8).astype(int))
    assert ranks.shape == (10, int(remaining.max()))
    assert ((ranks > 0).sum(1) <= remaining).all()  # repeated targets count once
    assert 0 < rec["test"]["Recall@20"] <= 1 and rec["test"]["HR@20"] >= rec["test"]["Recall@20"]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert float(rows[0]["examples_per_s"]) > 0 and json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


def test_resume_after_sigterm_is_bit_identical_for_gcegnn_with_dropout(tmp_path: Path) -> None:
    import os
    import signal

    split_dataset("drop", random_sessions(160, 60, 0), (120, 140)).save(tmp_path / "drop")
    ov = {"dim": 8, "hop": 1, "epochs": 3, "batch_size": 32, "lr": 0.01, "patience": 0,
          "dropout_global": 0.5, "dropout_gcn": 0.3, "dropout_local": 0.2}
    full = train("gcegnn", tmp_path / "drop", results_dir=tmp_path / "full", overrides=ov, seed=5)

    def stop(epoch: int, row: dict) -> None:
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # how a scheduler or `kill` stops a background run

    with pytest.raises(TrainingInterrupted):
        train("gcegnn", tmp_path / "drop", results_dir=tmp_path / "part", overrides=ov, seed=5, callback=_AfterEpoch(stop))
    part = next((tmp_path / "part").glob("runs/drop/gcegnn/*"))
    resumed = train(resume=part)
    assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]
    wa = load_file(str(Path(full["run_dir"]) / "checkpoint/model.safetensors"))
    wb = load_file(str(part / "checkpoint/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [list(csv.DictReader((Path(r) / "history.csv").open())) for r in (full["run_dir"], part)]
    assert [r["loss"] for r in losses[0]] == [r["loss"] for r in losses[1]]


class _AtBatch(TrainingCallback):
    """Sends SIGTERM to this process after batch `batch` of epoch `epoch` (once)."""

    every = 1

    def __init__(self, epoch: int, batch: int, signals: int = 1) -> None:
        self.at, self.signals, self.fired = (epoch, batch), signals, False

    def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
        import os
        import signal

        if (epoch, done) == self.at and not self.fired:
            self.fired = True
            for _ in range(self.signals):
                os.kill(os.getpid(), signal.SIGTERM)


MID_EPOCH = {
    "gcegnn": {"dim": 8, "hop": 1, "epochs": 2, "batch_size": 16, "lr": 0.01, "dropout_global": 0.5,
               "dropout_gcn": 0.3, "dropout_local": 0.2, "lr_schedule": "epoch-start", "lr_dc_step": 1},
    "gru4rec": {"layers": "8", "n_sample": 8, "sparse": False, "epochs": 2, "batch_size": 8,
                "dropout_p_hidden": 0.3},  # hidden states carried from step to step
    "csrm": {"emb_dim": 8, "hidden": 8, "memory_size": 4, "memory_window": 16, "epochs": 2, "batch_size": 16},
    "macl-code": {"dim": 8, "epochs": 2, "batch_size": 16},  # dropout in the first epoch only
}


@pytest.mark.parametrize("name", sorted(MID_EPOCH))
def test_a_stop_inside_an_epoch_resumes_from_that_batch_to_the_uninterrupted_numbers(
    name: str, tmp_path: Path
) -> None:
    """SIGTERM in the middle of an epoch: the step finishes, that batch is checkpointed, and the
    resumed run trains only the rest of the epoch and ends bit-identical to an uninterrupted one."""
    split_dataset("mid", random_sessions(160, 60, 0), (120, 140)).save(tmp_path / "mid")
    ov = MID_EPOCH[name]
    full = train(name, tmp_path / "mid", results_dir=tmp_path / "full", overrides=ov, seed=5)
    with pytest.raises(TrainingInterrupted, match=r"interrupted in epoch 1 after batch 3 of \d+; checkpoint at that batch"):
        train(name, tmp_path / "mid", results_dir=tmp_path / "part", overrides=ov, seed=5, callback=_AtBatch(1, 3))
    part = next((tmp_path / "part").glob(f"runs/mid/{name}/*"))
    assert json.loads((part / "metrics.json").read_text())["status"] == "interrupted"
    assert not (part / "history.csv").exists()  # no epoch finished

    trained: list[tuple[int, int]] = []
    resumed_at: list[tuple[int, int, int]] = []

    class Count(TrainingCallback):
        every = 1

        def on_epoch_resumed(self, epoch: int, done: int, examples_done: int) -> None:
            resumed_at.append((epoch, done, examples_done))

        def on_batch(self, epoch: int, done: int, examples_done: int, loss: float) -> None:
            trained.append((epoch, done))

    resumed = train(resume=part, callback=Count())
    assert trained[0] == (1, 4)  # batches 1-3 of epoch 1 are not trained again
    assert resumed_at == [(1, 3, 3 * int(ov["batch_size"]))]
    assert resumed["test"] == full["test"] and resumed["valid"] == full["valid"]
    wa = load_file(str(Path(full["run_dir"]) / "checkpoint/model.safetensors"))
    wb = load_file(str(part / "checkpoint/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [list(csv.DictReader((Path(r) / "history.csv").open())) for r in (full["run_dir"], part)]
    assert [(r["loss"], r["lr"]) for r in rows[0]] == [(r["loss"], r["lr"]) for r in rows[1]]


def test_a_damaged_epoch_in_progress_is_a_one_line_error(small_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        _run(small_dir, tmp_path, seed=3, callback=_AtBatch(1, 2))
    part = next(tmp_path.glob("runs/small/srgnn/*"))
    state = torch.load(part / "checkpoint" / "state.pt", weights_only=True)
    assert state["partial"]["batch"] == 2
    state["partial"] = {"batch": "two"}
    torch.save(state, part / "checkpoint" / "state.pt")
    with pytest.raises(SbrError, match="damaged checkpoint state .*epoch in progress is unreadable") as info:
        train(resume=part)
    assert "\n" not in str(info.value)


def test_a_second_signal_stops_at_once_and_keeps_the_last_epoch(small_dir: Path, tmp_path: Path) -> None:
    full = _run(small_dir, tmp_path / "full", seed=3)
    with pytest.raises(TrainingInterrupted, match="checkpoint of epoch 1 kept"):
        _run(small_dir, tmp_path / "part", seed=3, callback=_AtBatch(2, 2, signals=2))
    part = next((tmp_path / "part").glob("runs/small/srgnn/*"))
    resumed = train(resume=part)
    assert resumed["test"] == full["test"]


def test_a_run_record_reloads_on_another_machine_by_dataset_name_and_checksum(
    small_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from sbrbench.results import RunDir

    made_here = tmp_path / "a" / "processed" / "small" / "t"
    shutil.copytree(small_dir, made_here)
    m = json.loads((made_here / "manifest.json").read_text())
    m["audit"] = {"findings": [], "seconds": 0.5}  # as `preprocess` writes it: its audit and how long that took
    (made_here / "manifest.json").write_text(json.dumps(m))
    rec = train("srgnn", "small", protocol="t", data_dir=tmp_path / "a", results_dir=tmp_path, overrides=SMALL)
    run = RunDir(rec["run_dir"])
    elsewhere = tmp_path / "b"
    shutil.move(str(tmp_path / "a"), str(elsewhere))  # the recorded absolute path no longer exists
    assert run.metrics_from_ranks("test", (20,))["metrics"]["MRR@20"] == pytest.approx(rec["test"]["MRR@20"])
    cfg = json.loads(run.config_path.read_text())
    cfg["data"]["data_dir"] = str(elsewhere)
    run.config_path.write_text(json.dumps(cfg))
    assert evaluate_run(run.path, ks=(20,))["metrics"]["MRR@20"] == pytest.approx(rec["test"]["MRR@20"], abs=1e-9)
    manifest = elsewhere / "processed" / "small" / "t" / "manifest.json"
    # preprocessed again there: the same data, another audit timing and another layout of the JSON
    m = json.loads(manifest.read_text())
    m["audit"]["seconds"] = 12.345
    manifest.write_text(json.dumps(m, indent=1))
    assert evaluate_run(run.path, ks=(20,))["metrics"]["MRR@20"] == pytest.approx(rec["test"]["MRR@20"], abs=1e-9)
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 1, "x": 1'))
    with pytest.raises(SbrError, match="differs from the data this run used"):
        evaluate_run(run.path, ks=(20,))


def test_a_record_with_the_old_file_checksum_pairs_with_new_records_on_the_same_local_data(
    small_dir: Path, tmp_path: Path
) -> None:
    """Records made before the checksum left out the audit's timing hold the manifest file's sha256:
    on the machine whose data has that very file they count as the same data as new records."""
    import shutil

    from sbrbench.data.dataset import legacy_manifest_checksum, manifest_checksum
    from sbrbench.results import RunDir

    here = tmp_path / "d" / "processed" / "small" / "t"
    shutil.copytree(small_dir, here)
    rec = train("srgnn", "small", protocol="t", data_dir=tmp_path / "d", results_dir=tmp_path, overrides=SMALL)
    run = RunDir(rec["run_dir"])
    assert rec["dataset_checksum"] == manifest_checksum(here) == run.data_checksum()
    m = json.loads(run.metrics_path.read_text())
    m["dataset_checksum"] = legacy_manifest_checksum(here)
    run.metrics_path.write_text(json.dumps(m))
    (run.path / "env.json").write_text(json.dumps({**json.loads((run.path / "env.json").read_text()),
                                                   "dataset_checksum": m["dataset_checksum"]}))
    assert run.data_checksum() == manifest_checksum(here)
    (here / "manifest.json").write_text((here / "manifest.json").read_text() + "\n")  # not as preprocessing writes
    assert run.data_checksum() == m["dataset_checksum"]  # not verifiable any more: left as recorded


def test_an_old_record_pairs_with_the_same_data_preprocessed_again(small_dir: Path, tmp_path: Path) -> None:
    """An old record's checksum is the sha256 of its own manifest file; the data preprocessed again
    (only the audit's timing differs) is proven the same by finding the timing that reproduces it."""
    import shutil

    from sbrbench.data.dataset import legacy_manifest_checksum, legacy_manifest_matches, manifest_checksum
    from sbrbench.io import atomic_write_json
    from sbrbench.results import RunDir

    here = tmp_path / "d" / "processed" / "small" / "t"
    shutil.copytree(small_dir, here)
    manifest = json.loads((here / "manifest.json").read_text())
    manifest["audit"] = {"findings": [], "seconds": 0.068}
    atomic_write_json(here / "manifest.json", manifest)  # as `preprocess` writes it
    old = legacy_manifest_checksum(here)
    rec = train("srgnn", "small", protocol="t", data_dir=tmp_path / "d", results_dir=tmp_path, overrides=SMALL)
    run = RunDir(rec["run_dir"])
    for name in ("metrics.json", "env.json"):
        record = json.loads((run.path / name).read_text())
        record["dataset_checksum"] = old
        (run.path / name).write_text(json.dumps(record))
    manifest["audit"]["seconds"] = 1.5  # preprocessed again: another timing, the same data
    atomic_write_json(here / "manifest.json", manifest)
    assert legacy_manifest_checksum(here) != old and legacy_manifest_matches(here, old)
    assert run.data_checksum() == manifest_checksum(here) == rec["dataset_checksum"]
    assert evaluate_run(run.path, ks=(20,))["metrics"]["MRR@20"] == pytest.approx(rec["test"]["MRR@20"], abs=1e-9)
    manifest["n_items"] = int(manifest["n_items"]) + 1  # other data: no timing makes up for it
    atomic_write_json(here / "manifest.json", manifest)
    assert not legacy_manifest_matches(here, old)
    assert run.data_checksum() == old
    with pytest.raises(SbrError, match="differs from the data this run used"):
        evaluate_run(run.path, ks=(20,))
