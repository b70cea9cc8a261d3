"""`sbrbench tune`: declared search spaces, a study on a local Ray instance, duplicates, pruning through
the training callback, resuming a cut-off study, and budgets on the leaderboard."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna  # the [sweep] extra, which CI installs
import pytest

from sbrbench.errors import SbrError
from sbrbench.models import MODELS, resolve_config
from sbrbench.models.search import Choice, FloatRange, IntRange


@pytest.fixture(scope="module")
def data_dir(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sbrbench.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("tune-data")
    preprocess("diginetica-sample", data_dir=root, mirror=str(shared_datasets))
    return root


def test_every_declared_search_space_names_settings_of_its_model_and_valid_values() -> None:
    from sbrbench.config import TrainOptions

    spaces = {n: MODELS.get(n).search_space for n in MODELS.names() if MODELS.get(n).search_space}
    assert {"spop", "pop", "sknn", "vsknn", "stan", "vstan", "srgnn", "itemknn"} <= set(spaces)
    for name, space in spaces.items():
        cls = MODELS.get(name)
        keys = {f.name for f in dataclasses.fields(cls.Params)} | {f.name for f in dataclasses.fields(TrainOptions)}
        for key, dim in space.items():
            assert key in keys, f"{name}: {key}"
            values = dim.choices if isinstance(dim, Choice) else (dim.low, dim.high)
            assert isinstance(dim, (Choice, IntRange, FloatRange))
            for v in values:
                cfg = resolve_config(name, "diginetica", {key: v})  # typed and accepted
                got = cfg.params_dict().get(key, getattr(cfg.train, key, None))
                assert got == v, f"{name}: {key}={v!r} became {got!r}"


def test_trial_zero_is_the_default_configuration_where_the_space_holds_it() -> None:
    from sbrbench.models.search import Choice, FloatRange, IntRange, contains
    from sbrbench.tune import default_trial, search_space

    assert default_trial("srgnn", "diginetica", {}, search_space("srgnn")) == {
        "lr": 1e-3, "l2": 1e-5, "dim": 100, "step": 1}
    assert default_trial("srgnn", "diginetica", {"dim": 50}, {"lr": FloatRange(1e-2, 1e-1)}) == {}  # 1e-3 outside
    assert contains(IntRange(20, 200, step=20), 120) and not contains(IntRange(20, 200, step=20), 130)
    assert contains(Choice("a", 1), 1) and not contains(Choice(1, 2), True) and not contains(FloatRange(0, 1), "x")


def test_a_model_without_a_search_space_gets_a_clear_error(tmp_path: Path) -> None:
    from sbrbench.tune import tune

    bare = next(n for n in MODELS.names() if not MODELS.get(n).search_space)
    with pytest.raises(SbrError, match=f"{bare} declares no search space.*models that can: .*sknn"):
        tune(bare, "diginetica-sample", trials=2, workers=0, results_dir=tmp_path)
    with pytest.raises(ValueError):
        FloatRange(0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        Choice("a", "a")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sbrbench", *args], capture_output=True, text=True, env=env,
                          timeout=150)


def test_tune_sknn_on_local_ray_records_its_study_and_the_tuned_runs(data_dir: Path, tmp_path: Path) -> None:
    from test_sweep import ray_processes

    before = ray_processes()
    args = ["tune", "sknn", "diginetica-sample", "--trials", "4", "--workers", "1", "--seeds", "42,43",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--json"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["budget"] == 4 and out["budget_label"] == "tuned, 4 trials" and "local Ray instance" in out["runner"]
    study = optuna.load_study(study_name="sknn-diginetica-sample", storage=out["storage"])
    assert len(study.trials) == 4 and out["best"]["number"] == study.best_trial.number
    from sbrbench.tune import default_trial, search_space

    assert study.trials[0].params == default_trial("sknn", "diginetica-sample", {}, search_space("sknn")) != {}
    assert Path(out["files"]["study"]).is_file() and out["best"]["metric"] == "MRR@20"
    # trials are selected on validation only: their runs lie apart from the leaderboard's
    trial_runs = list(tmp_path.glob("tune/sknn-diginetica-sample/runs/*/sknn/*/metrics.json"))
    assert len(trial_runs) == 4 - out["trials"]["ran_now"]["duplicate"]
    finals = sorted(tmp_path.glob("runs/*/sknn/*/tune.json"))
    assert [f["status"] for f in out["finals"]] == ["done", "done"] and len(finals) == 2
    note = json.loads(finals[0].read_text())
    assert note["tuned"] and note["trials"] == 4 and note["params"] == out["best"]["params"]
    deadline = time.time() + 10
    while ray_processes() - before and time.time() < deadline:
        time.sleep(0.5)
    assert ray_processes() - before == set()
    # a second invocation has nothing left to do; the leaderboard shows the budget
    from sbrbench.leaderboard import build_leaderboard
    from sbrbench.train import train
    from sbrbench.tune import tune

    again = tune("sknn", "diginetica-sample", trials=4, seeds=[42, 43], workers=1, data_dir=data_dir,
                 results_dir=tmp_path)
    assert again["runner"] == "nothing to run" and [f["status"] for f in again["finals"]] == ["reused", "reused"]
    train("sknn", "diginetica-sample", data_dir=data_dir, results_dir=tmp_path, seed=42)
    lb = build_leaderboard(tmp_path, dataset="diginetica-sample")
    assert sorted((r["model"], r["budget"], r["n"]) for r in lb.rows) == [
        ("sknn", "tuned, 4 trials", 2), ("sknn", "untuned", 1)]
    assert lb.rows[0]["budget"] == "untuned"  # ranked within its budget, never across


def test_tune_spop_in_process_counts_repeated_parameters_as_trials(data_dir: Path, tmp_path: Path) -> None:
    from sbrbench.tune import tune

    out = tune("spop", "diginetica-sample", trials=4, workers=0, data_dir=data_dir, results_dir=tmp_path)
    assert out["budget"] == 4 and out["trials"]["complete"] == 4
    ran = out["trials"]["ran_now"]
    assert ran["complete"] + ran["duplicate"] == 4 and ran["complete"] <= 2  # count is clicks or sessions
    assert out["best"]["params"]["count"] in ("clicks", "sessions") and out["pruning"] == "off"


def test_pruning_goes_through_the_training_callback(data_dir: Path, tmp_path: Path) -> None:
    from sbrbench.sweep import execute_run
    from sbrbench.tune import PruningCallback

    class Study:  # stands in for the StudyServer: prune at the second epoch
        def __init__(self) -> None:
            self.reports: list[tuple[int, int, float]] = []

        def report(self, number: int, step: int, value: float) -> bool:
            self.reports.append((number, step, value))
            return step >= 2

    study = Study()
    res = execute_run({"model": "srgnn", "dataset": str(data_dir / "processed" / "diginetica-sample" / "srgnn"),
                       "overrides": {"epochs": 5, "dim": 8}, "seed": 1, "select_on": "valid",
                       "results_dir": str(tmp_path), "device": "cpu", "threads": 1,
                       "callback": PruningCallback(study, 7)})
    assert res["status"] == "pruned"
    assert res["error"] == f"pruned after epoch 2 (valid_MRR@20 {study.reports[-1][2]:.4f})"
    assert [(n, s) for n, s, _ in study.reports] == [(7, 1), (7, 2)]
    from sbrbench.results import RunDir

    assert len(RunDir(res["run_dir"]).read_history()) == 2


def test_a_cut_off_study_resumes_and_reruns_the_cut_off_trial(data_dir: Path, tmp_path: Path) -> None:
    from sbrbench.tune import tune

    first = tune("itemknn", "diginetica-sample", trials=2, workers=0, data_dir=data_dir, results_dir=tmp_path)
    study = optuna.load_study(study_name="itemknn-diginetica-sample", storage=first["storage"])
    cut = study.ask({"shrink": optuna.distributions.FloatDistribution(0.0, 100.0)})  # a trial left RUNNING
    out = tune("itemknn", "diginetica-sample", trials=3, workers=0, data_dir=data_dir, results_dir=tmp_path)
    study = optuna.load_study(study_name="itemknn-diginetica-sample", storage=first["storage"])
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"] and out["budget"] == 3
    assert study.trials[3].params == cut.params  # its parameters ran again
    with pytest.raises(SbrError, match="made with other settings"):
        tune("itemknn", "diginetica-sample", trials=3, workers=0, overrides={"self_similarity": True},
             data_dir=data_dir, results_dir=tmp_path)
