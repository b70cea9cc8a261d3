"""`sbrbench sweep`: a grid of runs (models × datasets × seeds × settings) executed on Ray.

Every cell of the grid is one ordinary run record under `results/runs/`, tagged with a sidecar
`sweep.json` that holds the cell's key: a hash of its configuration (model, dataset, protocol,
seed, selection, the resolved hyper-parameters and training options). A second invocation of the
same grid therefore skips finished cells, resumes interrupted ones from their last checkpoint
(Ctrl-C, SIGTERM, a killed worker) and runs the rest; a cell shared by two grids is run once.
A failed cell is reported with its one-line error and does not stop the others.

The grid comes from the command line (`--models a,b --datasets d --seeds 1,2 --set k=50,100`)
and/or a TOML file for bigger grids::

    models = ["sknn", "srgnn"]
    datasets = ["diginetica-sample"]
    seeds = [42, 43, 44]
    select_on = "valid"          # optional: protocol, metric, max_train_examples too
    [set]                        # every model: a value or a list of values (the grid)
    epochs = 5
    [model.srgnn]                # one model only
    dim = [50, 100]

Cells run through `sbrbench.runner` (a local Ray instance by default, a cluster with
`address`, or this process with `workers=0`). A summary is written to
`results/sweeps/<name>.{json,md}`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sbrbench import paths
from sbrbench.config import SELECT_CHOICES
from sbrbench.device import check_seeds
from sbrbench.errors import SbrError
from sbrbench.io import atomic_write_json, atomic_write_text
from sbrbench.models import MODELS, resolve_config
from sbrbench.results import RunDir
from sbrbench.runner import Runner, check_installed, one_line, open_runner

SWEEP_NOTE = "sweep.json"
GRID_KEYS = ("models", "datasets", "seeds", "set", "model", "protocol", "select_on", "metric", "max_train_examples")
SHOWN_METRICS = ("HR@20", "MRR@20")

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Grid:
    """What to run: every model × dataset × seed × combination of settings."""

    models: list[str]
    datasets: list[str]
    seeds: list[int] = field(default_factory=lambda: [42])
    settings: dict[str, list[Any]] = field(default_factory=dict)  # every model
    per_model: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # model -> its own settings
    protocol: str | None = None
    select_on: str = "valid"
    metric: str | None = None
    max_train_examples: int | None = None


@dataclass(frozen=True)
class Cell:
    """One run of the grid and its identity across invocations (`key`)."""

    model: str
    dataset: str
    seed: int
    overrides: tuple[tuple[str, Any], ...]
    key: str

    def label(self) -> str:
        sets = " ".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.model} {self.dataset} seed {self.seed}" + (f" {sets}" if sets else "")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _listed(value: Any, what: str) -> list[Any]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    out = _as_list(value)
    if not out:
        raise SbrError(f"the sweep's {what} list is empty")
    return out


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid TOML file as a dict (one-line errors for a missing, malformed or unknown key)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SbrError(f"no sweep file at {p}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SbrError(f"malformed sweep file {p}: {str(exc).splitlines()[0]}") from None
    unknown = [k for k in data if k not in GRID_KEYS]
    if unknown:
        raise SbrError(f"sweep file {p}: unknown key {unknown[0]!r}; keys: {', '.join(GRID_KEYS)}")
    for table in ("set", "model"):
        if table in data and not isinstance(data[table], dict):
            raise SbrError(f"sweep file {p}: [{table}] must be a table")
    return data


def make_grid(file: str | Path | None = None, *, models: list[str] | str | None = None,
              datasets: list[str] | str | None = None, seeds: list[int] | str | None = None,
              settings: dict[str, list[Any]] | None = None, **options: Any) -> Grid:
    """A grid from a TOML file and/or arguments (arguments win; `settings` merge over the file's)."""
    data = load_grid_file(file) if file else {}
    models = models or data.get("models")
    datasets = datasets or data.get("datasets")
    if not models:
        raise SbrError("a sweep needs models (--models a,b or `models = [...]` in the sweep file)")
    if not datasets:
        raise SbrError("a sweep needs datasets (--datasets d1,d2 or `datasets = [...]` in the sweep file)")
    try:
        seed_list = [int(s) for s in _listed(seeds if seeds else data.get("seeds", [42]), "seeds")]
    except (TypeError, ValueError):
        raise SbrError(f"seeds must be integers, got {seeds or data.get('seeds')!r}") from None
    for s in seed_list:
        check_seeds(s)
    sets = {k: _as_list(v) for k, v in (data.get("set") or {}).items()}
    sets.update({k: _as_list(v) for k, v in (settings or {}).items()})
    per_model: dict[str, dict[str, list[Any]]] = {}
    for m, table in (data.get("model") or {}).items():
        if not isinstance(table, dict):
            raise SbrError(f"sweep file: [model.{m}] must be a table of settings")
        per_model[MODELS.canonical(m)] = {k: _as_list(v) for k, v in table.items()}
    opts = {k: data[k] for k in ("protocol", "select_on", "metric", "max_train_examples") if k in data}
    opts.update({k: v for k, v in options.items() if v is not None})
    return Grid(models=[str(m) for m in _listed(models, "models")],
                datasets=[str(d) for d in _listed(datasets, "datasets")],
                seeds=list(dict.fromkeys(seed_list)), settings=sets, per_model=per_model, **opts)


def config_key(model: str, dataset: str, seed: int, overrides: dict[str, Any], *, protocol: str | None,
               select_on: str, metric: str | None, max_train_examples: int | None, extra: dict[str, Any] | None = None
               ) -> str:
    """The hash identifying a run's configuration: resolved hyper-parameters and training options
    (defaults < dataset defaults < `overrides`), model, dataset, protocol, seed, selection."""
    mc = resolve_config(model, dataset, overrides)
    ident = {"model": mc.model, "dataset": dataset, "protocol": protocol, "seed": int(seed), "select_on": select_on,
             "metric": metric, "max_train_examples": max_train_examples, "hparams": mc.params_dict(),
             "train": asdict(mc.train), **(extra or {})}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(grid: Grid) -> list[Cell]:
    """Every cell of the grid, validated (unknown models, settings or values: one-line errors)."""
    if grid.select_on not in SELECT_CHOICES:
        raise SbrError(f"--select-on must be one of {', '.join(SELECT_CHOICES)}, got {grid.select_on!r}")
    for m in grid.per_model:
        if m not in [MODELS.canonical(x) for x in grid.models]:
            raise SbrError(f"the sweep file sets [model.{m}] but {m} is not among the models")
    cells: list[Cell] = []
    seen: set[str] = set()
    for model in grid.models:
        name = MODELS.canonical(model)
        space = {**grid.settings, **grid.per_model.get(name, {})}
        keys = list(space)
        for dataset in grid.datasets:
            for values in itertools.product(*(space[k] for k in keys)):
                overrides = dict(zip(keys, values, strict=True))
                for seed in grid.seeds:
                    key = config_key(name, dataset, seed, overrides, protocol=grid.protocol, select_on=grid.select_on,
                                     metric=grid.metric, max_train_examples=grid.max_train_examples)
                    if key not in seen:
                        seen.add(key)
                        cells.append(Cell(name, dataset, int(seed), tuple(overrides.items()), key))
    return cells


def index_runs(root: Path, note: str = SWEEP_NOTE, field_name: str = "cell_key") -> dict[str, RunDir]:
    """The latest run directory of each key under `root/runs` (runs tagged with sidecar `note`)."""
    found: dict[str, RunDir] = {}
    for path in (root / "runs").glob(f"*/*/*/{note}"):
        run = RunDir(path.parent)
        meta = run.read_sidecar(note)
        key = (meta or {}).get(field_name)
        if key and (key not in found or run.path.name > found[key].path.name):
            found[key] = run
    return found


def run_state(run: RunDir | None) -> str:
    """done / running / interrupted (resumable) / missing (not started, failed or nothing to resume)."""
    if run is None:
        return "missing"
    return {"complete": "done", "running": "running", "resumable": "interrupted"}.get(run.status(), "missing")


def settle_existing(row: dict[str, Any], run: RunDir | None, state: str, **blank: Any) -> bool:
    """Fill `row` for a run already finished (status reused, its metrics) or still running in
    another process; True when either, so nothing is to be run. `blank`: fields set with the
    metrics of a reused run (e.g. seconds=None)."""
    if state == "done":
        assert run is not None
        rec = run.read_metrics()
        row.update(status="reused", valid=rec.get("valid"), test=rec.get("test"), **blank, error=None)
        return True
    if state == "running":
        row.update(status="running elsewhere", error=f"another process trains {run}")
        return True
    return False


def record_results(rows: dict[Any, dict[str, Any]], results: dict[Any, dict[str, Any]], *fields: str) -> None:
    """Copy each `execute_run` result into its row (status done / failed / interrupted, run
    directory, metrics, error); `fields`: further result fields copied as they are."""
    for key, res in results.items():
        rows[key].update(status="done" if res["status"] == "complete" else res["status"],
                         run_dir=res.get("run_dir") or rows[key]["run_dir"], valid=res.get("valid"),
                         test=res.get("test"), **{f: res.get(f) for f in fields}, error=res.get("error"))


def write_summary(out: dict[str, Any], stem: Path) -> dict[str, str]:
    """Write `out["markdown"]` to `stem`.md and the rest of `out` to `stem`.json; their paths."""
    md, js = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")
    atomic_write_text(md, out["markdown"])
    atomic_write_json(js, {k: v for k, v in out.items() if k != "markdown"})
    return {"markdown": str(md), "json": str(js)}


def worker_placement(workers: int | None, cpus_per_trial: float, gpus_per_trial: float) -> tuple[str, int | None]:
    """The device and torch thread count of each run: a GPU when trials get one; `cpus_per_trial`
    threads in a worker, this process's own setting with `workers=0`."""
    return ("cuda:0" if gpus_per_trial > 0 else "cpu"), (max(1, int(cpus_per_trial)) if workers != 0 else None)


def execute_run(p: dict[str, Any]) -> dict[str, Any]:
    """Run one training run in a worker (Ray task or this process); never raises for a failed run.

    `p`: model, dataset (a processed directory), overrides, seed, select_on, metric,
    max_train_examples, results_dir, device, threads, sidecars, resume (a run directory or None),
    callback (optional `TrainingCallback`). Returns status (complete / failed / interrupted /
    pruned), run_dir, valid, test, best_epoch, seconds, error.
    """
    from sbrbench.train import TrainingInterrupted, train

    t0 = time.perf_counter()
    rec: dict[str, Any] = {}
    try:
        if p.get("resume"):
            rec = train(resume=p["resume"], device=p["device"], threads=p["threads"], callback=p.get("callback"))
        else:
            rec = train(
                p["model"], p["dataset"], results_dir=p["results_dir"], overrides=dict(p["overrides"]),
                seed=p["seed"], select_on=p["select_on"], metric=p.get("metric"), device=p["device"],
                threads=p["threads"], max_train_examples=p.get("max_train_examples"), callback=p.get("callback"),
                sidecars=p.get("sidecars"),
            )
        status, error = str(rec.get("status")), None
    except TrainingInterrupted as exc:
        status, error = "interrupted", one_line(exc)
    except Exception as exc:  # an exception may name its own status (a pruned tuning trial) and run
        status, error = getattr(exc, "trial_status", "failed"), one_line(exc)
        rec = {"run_dir": getattr(exc, "run_dir", None)}
    return {"status": status, "error": error, "run_dir": rec.get("run_dir"), "valid": rec.get("valid"),
            "test": rec.get("test"), "best_epoch": rec.get("best_epoch"), "epochs": rec.get("epochs"),
            "metric": rec.get("selection", {}).get("metric") if isinstance(rec.get("selection"), dict) else None,
            "seconds": round(time.perf_counter() - t0, 3)}


def run_cell(p: dict[str, Any]) -> dict[str, Any]:
    """A sweep cell in a worker: `execute_run` (a module-level function Ray can ship by reference)."""
    return execute_run(p)


@dataclass
class Tally:
    """Live counts of a batch of runs, and an ETA from the runs finished so far."""

    total: int
    workers: int
    reused: int = 0
    done: int = 0
    failed: int = 0
    pruned: int = 0  # tuning trials stopped early by the study
    running: int = 0
    seconds: list[float] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    @property
    def pending(self) -> int:
        return self.total - self.reused - self.done - self.failed - self.pruned - self.running

    def eta(self) -> float | None:
        if not self.seconds:
            return None
        mean = sum(self.seconds) / len(self.seconds)
        return mean * (self.pending + self.running) / max(self.workers, 1)

    def snapshot(self, message: str = "") -> dict[str, Any]:
        return {"total": self.total, "reused": self.reused, "done": self.done, "failed": self.failed,
                "pruned": self.pruned, "running": self.running, "pending": self.pending, "eta_seconds": self.eta(),
                "elapsed_seconds": round(time.perf_counter() - self.t0, 1), "message": message}


def run_pool(runner: Runner, fn: Callable[[dict[str, Any]], dict[str, Any]],
             next_job: Callable[[], tuple[Any, dict[str, Any], str] | None],
             on_result: Callable[[Any, dict[str, Any]], str], tally: Tally, progress: Progress | None) -> None:
    """Run `fn` on payloads with at most `runner.workers` in flight. `next_job()` gives the next
    (id, payload, message when started), or None when there are no more; `on_result(id, result)`
    records a finished job (and its counts in `tally`) and returns the message to report."""
    live: dict[int, Any] = {}
    more = True
    while more or live:
        while more and len(live) < runner.workers:
            job = next_job()
            if job is None:
                more = False
                break
            jid, payload, message = job
            live[runner.submit(fn, payload)] = jid
            tally.running += 1
            if progress:
                progress(tally.snapshot(message))
        for tid, res in runner.wait(timeout=1.0):
            jid = live.pop(tid)
            tally.running -= 1
            tally.seconds.append(float(res.get("seconds") or 0.0))
            message = on_result(jid, res)
            if progress:
                progress(tally.snapshot(message))


def run_jobs(runner: Runner, fn: Callable[[dict[str, Any]], dict[str, Any]],
             jobs: list[tuple[Any, dict[str, Any], str]], tally: Tally, progress: Progress | None
             ) -> dict[Any, dict[str, Any]]:
    """Run `(id, payload, label)` jobs with at most `runner.workers` in flight; results by id."""
    todo = list(jobs)
    labels = {jid: label for jid, _, label in jobs}
    out: dict[Any, dict[str, Any]] = {}

    def next_job() -> tuple[Any, dict[str, Any], str] | None:
        if not todo:
            return None
        jid, payload, label = todo.pop(0)
        return jid, payload, f"started {label}"

    def on_result(jid: Any, res: dict[str, Any]) -> str:
        ok = res.get("status") == "complete"
        tally.done += ok
        tally.failed += not ok
        out[jid] = res
        what = "finished" if ok else f"{res.get('status')}: {res.get('error') or '?'}"
        return f"{what} {labels[jid]}"

    run_pool(runner, fn, next_job, on_result, tally, progress)
    return out


def sweep(
    grid: Grid,
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every cell of `grid` not finished yet; returns (and writes) the summary.

    Returns {"name", "runner", "cells": [{label, model, dataset, seed, overrides, key, status
    (done / reused / failed / interrupted / running elsewhere), run_dir, valid, test, seconds,
    error}], "counts", "ray_start_seconds", "files"}.
    """
    if workers != 0:
        check_installed("sweep", ("ray",))
    cells = plan(grid)
    root = paths.results_dir(results_dir).resolve()
    ds_dirs = _dataset_dirs(grid, data_dir)
    index = index_runs(root)
    sweep_name = name or "sweep-" + hashlib.sha256("".join(c.key for c in cells).encode()).hexdigest()[:8]
    rows: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[Any, dict[str, Any], str]] = []
    device, threads = worker_placement(workers, cpus_per_trial, gpus_per_trial)
    for cell in cells:
        run = index.get(cell.key)
        state = run_state(run)
        row = {"label": cell.label(), "model": cell.model, "dataset": cell.dataset, "seed": cell.seed,
               "overrides": dict(cell.overrides), "key": cell.key, "run_dir": str(run) if run else None}
        rows[cell.key] = row
        if settle_existing(row, run, state, seconds=None):
            continue
        note = {"cell_key": cell.key, "sweep": sweep_name, "model": cell.model, "dataset": cell.dataset,
                "seed": cell.seed, "overrides": dict(cell.overrides)}
        jobs.append((cell.key, {
            "model": cell.model, "dataset": str(ds_dirs[cell.dataset]), "overrides": dict(cell.overrides),
            "seed": cell.seed, "select_on": grid.select_on, "metric": grid.metric,
            "max_train_examples": grid.max_train_examples, "results_dir": str(root), "device": device,
            "threads": threads, "sidecars": {SWEEP_NOTE: note},
            "resume": str(run) if state == "interrupted" else None,
        }, cell.label() + (" (resuming)" if state == "interrupted" else "")))
    tally = Tally(total=len(cells), workers=max(workers or 1, 1),
                  reused=sum(r.get("status") == "reused" for r in rows.values()))
    tally.failed = sum(r.get("status") == "running elsewhere" for r in rows.values())
    runner_desc, started = "nothing to run", None
    if jobs:
        with open_runner(workers, address=address, cpus_per_task=cpus_per_trial, gpus_per_task=gpus_per_trial,
                         command="sweep") as runner:
            runner_desc, started = runner.describe(), runner.started_s
            tally.workers = runner.workers
            if progress:
                progress(tally.snapshot(f"{len(jobs)} of {len(cells)} cells to run on {runner_desc}"
                                        + (f" (started in {started:.1f}s)" if started else "")))
            results = run_jobs(runner, run_cell, jobs, tally, progress)
        record_results(rows, results, "seconds")
    ordered = [rows[c.key] for c in cells]
    counts: dict[str, int] = {}
    for r in ordered:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    out = {"name": sweep_name, "runner": runner_desc, "ray_start_seconds": started, "counts": counts,
           "select_on": grid.select_on, "cells": ordered}
    out["markdown"] = render_sweep_markdown(out)
    out["files"] = write_summary(out, root / "sweeps" / sweep_name)
    return out


def _dataset_dirs(grid: Grid, data_dir: str | Path | None) -> dict[str, Path]:
    """Each dataset's processed directory, found before anything runs (one-line errors)."""
    from sbrbench.data.store import processed_location

    out = {}
    for d in grid.datasets:
        out[d] = processed_location(d, grid.protocol, data_dir=data_dir).resolve()
    return out


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.2f}"


def summary_rows(out: dict[str, Any], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the summary table (test metrics in percent); `short`: run
    directories by their name only."""
    head = ["model", "dataset", "seed", "settings", "status", *[f"test {m} (%)" for m in SHOWN_METRICS], "seconds",
            "run / error"]
    rows = []
    for c in out["cells"]:
        test = c.get("test") or {}
        secs = c.get("seconds")
        run = c.get("run_dir")
        where = c.get("error") or ((Path(run).name if short else run) if run else "—")
        rows.append([c["model"], c["dataset"], str(c["seed"]),
                     " ".join(f"{k}={v}" for k, v in (c.get("overrides") or {}).items()) or "—", c["status"],
                     *[_pct(test.get(m)) for m in SHOWN_METRICS], "—" if secs is None else f"{secs:.1f}", where])
    return head, rows


def render_sweep_markdown(out: dict[str, Any]) -> str:
    head, rows = summary_rows(out)
    counts = ", ".join(f"{n} {s}" for s, n in out["counts"].items())
    return "\n".join([f"# sweep {out['name']} ({counts}; runner: {out['runner']})", "",
                      tabulate(rows, headers=head, tablefmt="github", disable_numparse=True), ""])


def sweep_status(grid: Grid, *, results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Where each cell stands (done / running / interrupted / missing), from the run records alone."""
    root = paths.results_dir(results_dir).resolve()
    index = index_runs(root)
    out = []
    for cell in plan(grid):
        run = index.get(cell.key)
        out.append({"label": cell.label(), "key": cell.key, "status": run_state(run),
                    "epochs_done": len(run.read_history()) if run else 0, "run_dir": str(run) if run else None})
    return out
