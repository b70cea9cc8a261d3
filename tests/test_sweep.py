"""`sbrbench sweep`: grids, configuration keys, a real sweep on a local Ray instance (resumable,
no process left behind), failed and interrupted cells, the install hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbrbench.errors import SbrError
from sbrbench.sweep import SWEEP_NOTE, Grid, config_key, make_grid, plan, sweep


@pytest.fixture(scope="module")
def data_dir(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official SR-GNN sample of Diginetica, preprocessed (SR-GNN protocol, 10% validation)."""
    from sbrbench.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("sweep-data")
    preprocess("diginetica-sample", data_dir=root, mirror=str(shared_datasets))
    return root


def ray_processes() -> set[int]:
    """Live processes of a Ray instance started by sbrbench (its temp dir) or Ray workers."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if ("sbrray-" in cmd or cmd.startswith("ray::")) and "zombie" not in state:
            out.add(int(d.name))
    return out


def ray_temp_dirs() -> set[Path]:
    """Temporary directories of local Ray instances started by sbrbench that no live process uses."""
    cmds = []
    for d in Path("/proc").iterdir():
        try:
            cmds.append((d / "cmdline").read_bytes().decode(errors="replace") if d.name.isdigit() else "")
        except OSError:  # gone meanwhile
            continue
    live = " ".join(cmds)
    return {d for d in Path("/tmp").glob("sbrray-*") if d.name not in live}


def _cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sbrbench", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_grid_from_a_toml_file_and_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "grid.toml"
    f.write_text('models = ["sknn", "srgnn"]\ndatasets = ["diginetica-sample"]\nseeds = [1, 2]\n'
                 '[set]\nepochs = 2\n[model.srgnn]\ndim = [8, 16]\n', encoding="utf-8")
    grid = make_grid(f, seeds="1,2,2", settings={"epochs": ["3"]})
    assert grid.models == ["sknn", "srgnn"] and grid.seeds == [1, 2] and grid.settings == {"epochs": ["3"]}
    cells = plan(grid)
    assert len(cells) == 2 + 2 * 2  # sknn × 2 seeds, srgnn × 2 dims × 2 seeds
    assert {dict(c.overrides).get("dim") for c in cells if c.model == "srgnn"} == {8, 16}
    assert len({c.key for c in cells}) == len(cells)
    f.write_text('models = ["sknn"]\ndatasets = ["x"]\nworkers = 3\n', encoding="utf-8")
    with pytest.raises(SbrError, match="unknown key 'workers'"):
        make_grid(f)
    with pytest.raises(SbrError, match="unknown model 'nope'"):
        plan(make_grid(models="sknn,nope", datasets="diginetica-sample"))
    with pytest.raises(SbrError, match="no setting 'kk'"):
        plan(make_grid(models="sknn", datasets="diginetica-sample", settings={"kk": ["1"]}))
    with pytest.raises(SbrError, match="needs datasets"):
        make_grid(models="sknn")


def test_the_cell_key_is_the_resolved_configuration() -> None:
    base = dict(protocol=None, select_on="valid", metric=None, max_train_examples=None)
    # k = 50 is sknn's Diginetica default, which applies to diginetica-sample: the same configuration
    assert config_key("sknn", "diginetica-sample", 1, {}, **base) == config_key(
        "sknn", "diginetica-sample", 1, {"k": "50"}, **base)
    assert config_key("sknn", "diginetica-sample", 1, {}, **base) != config_key(
        "sknn", "diginetica-sample", 2, {}, **base)
    assert config_key("sknn", "diginetica-sample", 1, {}, **base) != config_key(
        "sknn", "diginetica-sample", 1, {"k": 51}, **base)


def test_a_sweep_on_local_ray_writes_one_run_per_cell_and_a_second_one_runs_nothing(
        data_dir: Path, tmp_path: Path) -> None:
    before, dirs = ray_processes(), ray_temp_dirs()
    args = ["sweep", "--models", "spop,sknn", "--datasets", "diginetica-sample", "--seeds", "42,43",
            "--workers", "2", "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--json"]
    t0 = time.perf_counter()
    r = _cli(*args)
    first = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["counts"] == {"done": 4} and "local Ray instance, 2 worker(s)" in out["runner"]
    assert "ETA" in r.stderr and "finished sknn diginetica-sample seed 43" in r.stderr  # live progress
    runs = sorted(tmp_path.glob("runs/diginetica-sample/*/*/metrics.json"))
    assert len(runs) == 4
    assert all(json.loads(p.read_text())["status"] == "complete" for p in runs)
    assert all(json.loads((p.parent / SWEEP_NOTE).read_text())["cell_key"] for p in runs)
    # every process of the local instance is gone, and its temporary directory
    deadline = time.time() + 10
    while ray_processes() - before and time.time() < deadline:
        time.sleep(0.5)
    assert ray_processes() - before == set()
    assert ray_temp_dirs() - dirs == set()
    t0 = time.perf_counter()  # the same grid again (in this process): nothing to run, Ray not started
    out2 = sweep(make_grid(models="spop,sknn", datasets="diginetica-sample", seeds="42,43"), workers=2,
                 data_dir=data_dir, results_dir=tmp_path)
    assert out2["counts"] == {"reused": 4} and out2["runner"] == "nothing to run"
    assert sorted(tmp_path.glob("runs/diginetica-sample/*/*/metrics.json")) == runs
    assert time.perf_counter() - t0 < first
    assert Path(out2["files"]["markdown"]).is_file()


def test_a_failed_cell_is_reported_in_one_line_and_the_others_run(data_dir: Path, tmp_path: Path) -> None:
    grid = make_grid(models="sknn", datasets="diginetica-sample", seeds=[1],
                     settings={"similarity": ["jaccard", "bogus"]})
    seen: list[str] = []
    out = sweep(grid, workers=0, data_dir=data_dir, results_dir=tmp_path, progress=lambda s: seen.append(s["message"]))
    status = {c["overrides"]["similarity"]: c for c in out["cells"]}
    assert status["jaccard"]["status"] == "done" and status["jaccard"]["test"]["MRR@20"] > 0
    assert status["bogus"]["status"] == "failed"
    assert "similarity" in status["bogus"]["error"] and "\n" not in status["bogus"]["error"]
    assert out["counts"] == {"done": 1, "failed": 1} and out["runner"] == "in this process (no Ray)"
    assert any(m.startswith("failed: ") for m in seen)


def test_an_interrupted_cell_is_resumed_in_place(data_dir: Path, tmp_path: Path) -> None:
    from sbrbench.train import TrainingCallback, TrainingInterrupted, train

    grid = Grid(models=["srgnn"], datasets=["diginetica-sample"], seeds=[3], settings={"epochs": [2], "dim": [8]})
    [cell] = plan(grid)

    class Stop(TrainingCallback):
        def on_epoch_end(self, epoch: int, row: dict) -> None:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train("srgnn", "diginetica-sample", data_dir=data_dir, results_dir=tmp_path, overrides={"epochs": 2, "dim": 8},
              seed=3, callback=Stop(), sidecars={SWEEP_NOTE: {"cell_key": cell.key}})
    [run] = tmp_path.glob("runs/*/srgnn/*")
    out = sweep(grid, workers=0, data_dir=data_dir, results_dir=tmp_path)
    assert out["cells"][0]["status"] == "done" and out["cells"][0]["run_dir"] == str(run)
    assert list(tmp_path.glob("runs/*/srgnn/*")) == [run]
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


def test_without_ray_the_command_says_what_to_install(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    from sbrbench.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--models", "spop", "--datasets", "diginetica-sample", "--data-dir", str(data_dir),
              "--results-dir", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: `sbrbench sweep` needs ray: pip install 'sbrbench[sweep]'"
