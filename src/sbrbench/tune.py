"""`sbrbench tune MODEL DATASET --trials N`: hyper-parameter search with Optuna, trials on Ray.

* The search space is the model's own (`Model.search_space`, `sbrbench.models.search`); a model
  without one gets a one-line error. `--set` pins settings (a pinned key leaves the space).
* Trial 0 of a new study is the model's default configuration for the dataset (`default_trial`),
  so the budget always includes the untuned point and tuning can only improve on it (on
  validation).
* Optuna's TPE sampler (or random search), seeded; median pruning of neural trials on their
  per-epoch validation metric: the Trainer reports each epoch through a `TrainingCallback`
  (`PruningCallback`) that asks the study and raises `TrialPruned` — the Trainer knows nothing of
  Optuna. Non-neural models have no epochs and are never pruned.
* Selection is always on the validation split (the objective is the trial's validation value of
  the selection metric); the test split is never looked at while tuning.
* Trials run through `sbrbench.runner` (a local Ray instance by default), as sweep cells do. The
  study lives in one process (a Ray actor on this machine, or this process with `workers=0`),
  which alone writes its SQLite file `results/tune/<name>/study.db`: re-running the command
  resumes the study (trials already finished count towards `--trials`; trials cut off by an
  interruption are run again), and Optuna's own tools read it (`optuna trials --storage
  sqlite:///results/tune/<name>/study.db --study-name <name>`, optuna-dashboard).
* Trial runs are ordinary run records under `results/tune/<name>/runs/` (not on the
  leaderboard). The best configuration is then re-run once per `--seeds` seed as ordinary runs
  under `results/runs/` carrying `tune.json` (`sbrbench.budget`): the leaderboard shows them as
  "tuned, N trials" and ranks them only against rows of the same budget. These final runs are
  resumable like sweep cells (matched by configuration hash).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sbrbench import paths
from sbrbench.budget import TUNE_NOTE, budget_label
from sbrbench.device import check_seeds
from sbrbench.errors import SbrError
from sbrbench.models import MODELS, resolve_config
from sbrbench.models.search import Choice, FloatRange, IntRange, contains, describe_space
from sbrbench.results import RunDir
from sbrbench.runner import Runner, check_installed, invoke, open_runner
from sbrbench.study import StudyServer, best_trial, load_study, open_study, quiet_optuna, state_counts, used_trials
from sbrbench.sweep import (SHOWN_METRICS, Tally, config_key, execute_run, index_runs, record_results, run_jobs,
                             run_pool, run_state, settle_existing, worker_placement, write_summary)
from sbrbench.train.callbacks import TrainingCallback, TrainingStart

TRIAL_NOTE = "trial.json"
SAMPLERS = ("tpe", "random")
STUDY_FILE = "study.db"
Progress = Callable[[dict[str, Any]], None]


class TrialPruned(SbrError):
    """Raised by `PruningCallback` inside a trial's training: the study pruned it."""

    trial_status = "pruned"

    def __init__(self, message: str, run_dir: str | None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class PruningCallback(TrainingCallback):
    """Reports each epoch's validation value to the study; raises `TrialPruned` when told to stop."""

    def __init__(self, study: Any, number: int) -> None:
        self.study, self.number = study, number
        self.key = ""
        self.run_dir: str | None = None

    def on_start(self, info: TrainingStart) -> None:
        self.key, self.run_dir = f"{info.select_split}_{info.metric}", info.run_dir

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        value = row.get(self.key)
        if value is None:
            return
        if invoke(self.study, "report", self.number, epoch, float(value)):
            raise TrialPruned(f"pruned after epoch {epoch} ({self.key} {float(value):.4f})", self.run_dir)


def search_space(model: str) -> dict[str, Any]:
    """The model's declared search space, or a one-line error saying it has none."""
    cls = MODELS.get(model)
    space = dict(cls.search_space)
    if not space:
        tunable = sorted(n for n in MODELS.names() if MODELS.get(n).search_space)
        raise SbrError(f"{cls.name} declares no search space (Model.search_space), so it cannot be tuned; "
                       f"models that can: {', '.join(tunable) or '(none)'}")
    return space


def default_trial(model: str, dataset: str, fixed: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """The model's defaults for `dataset` (what an untuned `sbrbench train` uses) on the dimensions of
    `space` that contain them. Trial 0 of every study, so a tuned configuration is never one that
    does worse on validation than the defaults; dimensions whose default lies outside the space are
    left to the sampler."""
    mc = resolve_config(model, dataset, fixed)
    out: dict[str, Any] = {}
    for key, dim in space.items():
        value = getattr(mc.params, key) if hasattr(mc.params, key) else getattr(mc.train, key, None)
        if value is not None and contains(dim, value):
            out[key] = value
    return out


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of a search space."""
    d = quiet_optuna().distributions
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, IntRange):
            out[key] = d.IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
        elif isinstance(dim, FloatRange):
            out[key] = d.FloatDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Choice):
            out[key] = d.CategoricalDistribution(dim.choices)
        else:
            raise SbrError(f"search space entry {key!r} is not an IntRange, FloatRange or Choice: {dim!r}")
    return out


def run_trial(p: dict[str, Any]) -> dict[str, Any]:
    """A tuning trial in a worker: one training run reporting its epochs to the study."""
    if p.get("prune"):
        p = {**p, "callback": PruningCallback(p["study"], p["number"])}
    return execute_run(p)


def _objective(res: dict[str, Any], metric: str | None) -> float | None:
    valid = res.get("valid") or {}
    key = res.get("metric") or metric
    v = valid.get(key) if key else None
    return float(v) if v is not None else None


def tune(
    model: str,
    dataset: str,
    *,
    trials: int,
    seeds: list[int] | None = None,
    seed: int = 42,
    sampler: str = "tpe",
    prune: bool = True,
    overrides: dict[str, Any] | None = None,
    metric: str | None = None,
    protocol: str | None = None,
    max_train_examples: int | None = None,
    name: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tune `model` on `dataset` with `trials` trials, then re-run the best configuration per seed.

    Returns {"study", "storage", "model", "dataset", "metric", "space", "budget", "trials": counts,
    "best": {number, value, params}, "finals": [...], "runner", "ray_start_seconds", "files"}.
    """
    from sbrbench.data.store import processed_location

    check_installed("tune", ("optuna", "ray") if workers != 0 else ("optuna",))
    if trials < 1:
        raise SbrError(f"--trials must be >= 1, got {trials}")
    if sampler not in SAMPLERS:
        raise SbrError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    cls = MODELS.get(model)
    mname = cls.name
    fixed = {k: v for k, v in (overrides or {}).items() if v is not None}
    space = {k: v for k, v in search_space(mname).items() if k not in fixed}
    if not space:
        raise SbrError(f"--set pins every dimension of {mname}'s search space: nothing left to tune")
    resolve_config(mname, dataset, fixed)  # unknown keys or bad values: one-line errors now
    seeds = list(dict.fromkeys(int(s) for s in (seeds or [seed])))
    for s in seeds:
        check_seeds(s)
    ds_dir = processed_location(dataset, protocol, data_dir=data_dir).resolve()
    root = paths.results_dir(results_dir).resolve()
    study_name = name or f"{mname}-{dataset}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", study_name):
        raise SbrError(f"--name must be letters, digits, '.', '_' or '-', got {study_name!r}")
    sdir = root / "tune" / study_name
    sdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{sdir / STUDY_FILE}"
    setup = {"model": mname, "dataset": dataset, "protocol": protocol, "metric": metric, "select_on": "valid",
             "fixed": {k: str(v) for k, v in sorted(fixed.items())}, "space": describe_space(space),
             "max_train_examples": max_train_examples, "trial_seed": seed, "sampler": sampler, "prune": prune}
    study = open_study(storage, study_name, setup)
    if not study.trials:  # a new study: its first trial is the untuned configuration
        study.enqueue_trial(default_trial(mname, dataset, fixed, space))
    used = used_trials(study)
    remaining = max(trials - used, 0)
    del study  # from here on only the StudyServer touches the file
    neural = cls.neural
    device, threads = worker_placement(workers, cpus_per_trial, gpus_per_trial)
    tally = Tally(total=remaining, workers=max(workers or 1, 1))
    runner_desc, started = "nothing to run", None
    ran_now = {"complete": 0, "pruned": 0, "failed": 0, "duplicate": 0}
    with ExitStack() as stack:
        runner: Runner | None = None

        def get_runner() -> Runner:
            nonlocal runner, runner_desc, started
            if runner is None:
                runner = stack.enter_context(open_runner(workers, address=address, cpus_per_task=cpus_per_trial,
                                                         gpus_per_task=gpus_per_trial, command="tune"))
                runner_desc, started = runner.describe(), runner.started_s
                tally.workers = runner.workers
                if progress:
                    took = f" (started in {started:.1f}s)" if started else ""
                    progress(tally.snapshot(f"runner: {runner_desc}{took}"))
            return runner

        if remaining:
            r = get_runner()
            server = r.spawn(StudyServer, storage, study_name, distributions(space), sampler, seed + used,
                             max(1, min(10, trials // 2)), prune and neural)
            _run_trials(r, server, remaining, tally, progress, ran_now, {
                "model": mname, "dataset": str(ds_dir), "overrides": fixed, "seed": seed, "select_on": "valid",
                "metric": metric, "max_train_examples": max_train_examples, "results_dir": str(sdir),
                "device": device, "threads": threads, "prune": prune and neural, "study": server,
                "study_name": study_name,
            }, metric)
            del server
        study = load_study(storage, study_name)
        best = best_trial(study)
        best["metric"] = best.get("metric") or metric
        budget = used_trials(study)
        finals = _finals(mname, dataset, ds_dir, seeds, best, budget, fixed, metric, protocol, max_train_examples,
                         root, study_name, storage, device, threads, get_runner, progress)
    counts = state_counts(load_study(storage, study_name))
    out = {
        "study": study_name, "storage": storage, "model": mname, "dataset": dataset,
        "metric": best.get("metric") or metric, "space": describe_space(space), "fixed": fixed,
        "sampler": sampler, "pruning": "median" if (prune and neural) else "off", "budget": budget,
        "budget_label": budget_label({"tuned": True, "trials": budget}), "trials": {**counts, "ran_now": ran_now},
        "best": best, "finals": finals, "runner": runner_desc, "ray_start_seconds": started,
        "inspect": f"optuna trials --storage {storage} --study-name {study_name}",
    }
    out["markdown"] = render_tune_markdown(out)
    out["files"] = {**write_summary(out, sdir / "summary"), "study": str(sdir / STUDY_FILE)}
    return out


def _run_trials(runner: Runner, server: Any, remaining: int, tally: Tally, progress: Progress | None,
                ran_now: dict[str, int], base: dict[str, Any], metric: str | None) -> None:
    """Ask, run and tell `remaining` trials with at most `runner.workers` in flight."""
    asked = 0

    def next_job() -> tuple[int, dict[str, Any], str] | None:
        nonlocal asked
        while asked < remaining:
            number, params = invoke(server, "ask")
            asked += 1
            dup = invoke(server, "duplicate_of", params)
            if dup is not None:  # same parameters as a finished trial: its value, no second run
                invoke(server, "tell", number, "complete", dup[1], {"duplicate_of": dup[0]})
                ran_now["duplicate"] += 1
                tally.done += 1
                if progress:
                    progress(tally.snapshot(f"trial {number}: same parameters as trial {dup[0]} ({dup[1]:.4f})"))
                continue
            payload = {**base, "number": number, "overrides": {**base["overrides"], **params},
                       "sidecars": {TRIAL_NOTE: {"study": base["study_name"], "trial": number, "params": params}}}
            return number, payload, f"trial {number} started: {_fmt_params(params)}"
        return None

    def on_result(number: int, res: dict[str, Any]) -> str:
        status = res.get("status")
        value = _objective(res, metric) if status == "complete" else None
        state = ("complete" if status == "complete" and value is not None
                 else "pruned" if status == "pruned" else "fail")
        invoke(server, "tell", number, state, value,
               {"run_dir": res.get("run_dir"), "error": res.get("error"), "seconds": res.get("seconds"),
                "metric": res.get("metric") or metric})
        if state == "complete":
            tally.done += 1
            ran_now["complete"] += 1
        else:
            if state == "pruned":
                tally.pruned += 1
            else:
                tally.failed += 1
            ran_now["pruned" if state == "pruned" else "failed"] += 1
        if res.get("run_dir") and state != "complete":
            note = RunDir(res["run_dir"]).read_sidecar(TRIAL_NOTE) or {}
            RunDir(res["run_dir"]).write_sidecar(TRIAL_NOTE, {**note, "state": state, "error": res.get("error")})
        what = f"{value:.4f}" if value is not None else f"{state}: {res.get('error') or '?'}"
        return f"trial {number} {what}"

    run_pool(runner, run_trial, next_job, on_result, tally, progress)


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _finals(model: str, dataset: str, ds_dir: Path, seeds: list[int], best: dict[str, Any], budget: int,
            fixed: dict[str, Any], metric: str | None, protocol: str | None, max_train_examples: int | None,
            root: Path, study_name: str, storage: str, device: str, threads: int | None,
            get_runner: Callable[[], Runner], progress: Progress | None) -> list[dict[str, Any]]:
    """The best configuration re-run once per seed under results/runs (reused when already done)."""
    overrides = {**fixed, **best["params"]}
    index = index_runs(root, TUNE_NOTE, "key")
    rows: dict[str, dict[str, Any]] = {}
    jobs = []
    for s in seeds:
        key = config_key(model, dataset, s, overrides, protocol=protocol, select_on="valid", metric=metric,
                         max_train_examples=max_train_examples, extra={"tuned": study_name, "trials": budget})
        run = index.get(key)
        state = run_state(run)
        rows[key] = {"seed": s, "key": key, "run_dir": str(run) if run else None}
        if settle_existing(rows[key], run, state):
            continue
        note = {"key": key, "tuned": True, "trials": budget, "study": study_name, "storage": storage,
                "best_trial": best["number"], "best_value": best["value"], "params": best["params"],
                "fixed": {k: str(v) for k, v in fixed.items()}}
        jobs.append((key, {
            "model": model, "dataset": str(ds_dir), "overrides": overrides, "seed": s, "select_on": "valid",
            "metric": metric, "max_train_examples": max_train_examples, "results_dir": str(root),
            "device": device, "threads": threads, "sidecars": {TUNE_NOTE: note},
            "resume": str(run) if state == "interrupted" else None,
        }, f"best configuration, seed {s}"))
    if jobs:
        runner = get_runner()
        tally = Tally(total=len(jobs), workers=runner.workers)
        record_results(rows, run_jobs(runner, execute_run, jobs, tally, progress))
    return list(rows.values())


def render_tune_markdown(out: dict[str, Any]) -> str:
    """The tuning result as Markdown: study, budget, best configuration, final runs."""
    best = out["best"]
    lines = [
        f"# tune {out['model']} on {out['dataset']} ({out['budget_label']}, {out['sampler']} sampler, "
        f"pruning {out['pruning']})", "",
        f"Study `{out['study']}` in `{out['storage']}`; trials by state: "
        + ", ".join(f"{n} {s}" for s, n in out["trials"].items() if s != "ran_now") + ".", "",
        "Search space: " + "; ".join(f"{k}: {v}" for k, v in out["space"].items()) + ".", "",
        f"Best trial {best['number']}: validation {out['metric'] or 'selection metric'} {best['value']:.4f} with "
        + _fmt_params(best["params"]) + ".", "",
    ]
    head = ["seed", "status", *[f"test {m} (%)" for m in SHOWN_METRICS], "run / error"]
    rows = []
    for f in out["finals"]:
        test = f.get("test") or {}
        rows.append([str(f["seed"]), f["status"],
                     *["—" if test.get(m) is None else f"{100 * test[m]:.2f}" for m in SHOWN_METRICS],
                     f.get("error") or f.get("run_dir") or "—"])
    lines += [tabulate(rows, headers=head, tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)
