"""The Optuna study of a tuning run, kept by one process while trials run (`sbrbench tune`).

Light on purpose (Optuna only, no torch): on Ray it is an actor process of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from sbrbench.errors import SbrError


def quiet_optuna() -> Any:
    """Optuna, with its per-trial log lines off (a one-line install hint when it is missing)."""
    try:
        import optuna
    except ImportError:
        raise SbrError("`sbrbench tune` needs optuna: pip install 'sbrbench[sweep]'") from None
    optuna.logging.set_verbosity(logging.WARNING)
    optuna.logging.disable_default_handler()
    return optuna


class StudyServer:
    """The one owner of the Optuna study while trials run (a Ray actor, or a plain object).

    `ask` draws a trial's parameters from `dists` (Optuna distributions), `report` records an
    epoch's value and says whether to prune, `tell` closes a trial. Only this object writes the
    study's storage meanwhile. TPE (`n_startup_trials` random trials first) or random search,
    seeded; median pruning once two trials have finished, from the first epoch on.
    """

    def __init__(self, storage: str, name: str, dists: dict[str, Any], sampler: str, seed: int,
                 startup: int, prune: bool) -> None:
        optuna = quiet_optuna()
        self.dists = dists
        smp = (optuna.samplers.RandomSampler(seed=seed) if sampler == "random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup))
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if prune
                  else optuna.pruners.NopPruner())
        self.study = optuna.load_study(study_name=name, storage=storage, sampler=smp, pruner=pruner)
        self.live: dict[int, Any] = {}

    def ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(self.dists)
        self.live[trial.number] = trial
        return trial.number, dict(trial.params)

    def duplicate_of(self, params: dict[str, Any]) -> tuple[int, float] | None:
        """A finished trial with exactly these parameters (TPE repeats itself on small spaces)."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.params == params and t.value is not None:
                return t.number, float(t.value)
        return None

    def report(self, number: int, step: int, value: float) -> bool:
        trial = self.live[number]
        trial.report(value, step)
        return bool(trial.should_prune())

    def tell(self, number: int, state: str, value: float | None, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        trial = self.live.pop(number)
        for k, v in attrs.items():
            if v is not None:
                trial.set_user_attr(k, v)
        st = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(state, TrialState.FAIL)
        self.study.tell(trial, value if st == TrialState.COMPLETE else None, state=st)


def open_study(storage: str, name: str, setup: dict[str, Any]) -> Any:
    """Create or load the study; check it was made for the same `setup` (one-line error if not);
    close trials cut off by an interruption and queue their parameters again."""
    optuna = quiet_optuna()
    from optuna.trial import TrialState

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    have = study.user_attrs.get("sbrbench")
    if have is None:
        study.set_user_attr("sbrbench", setup)
    elif have != setup:
        diff = sorted(k for k in set(have) | set(setup) if have.get(k) != setup.get(k))
        raise SbrError(f"study {name!r} ({storage}) was made with other settings ({', '.join(diff)}); "
                       "give another --name, or remove its directory to start again")
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tr = optuna.trial.Trial(study, t._trial_id)
        tr.set_user_attr("error", "interrupted; parameters queued again")
        tr.set_user_attr("requeued", True)
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(t.params))
    return study


def load_study(storage: str, name: str) -> Any:
    return quiet_optuna().load_study(study_name=name, storage=storage)


def used_trials(study: Any) -> int:
    """Trials that count towards the budget: finished ones, except those cut off and re-queued."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("requeued"))


def best_trial(study: Any) -> dict[str, Any]:
    """The best complete trial: number, value, params (one-line error when none completed)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        errors = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
        raise SbrError(f"no trial of study {study.study_name!r} completed"
                       + (f"; last error: {errors[-1]}" if errors else ""))
    bt = study.best_trial
    return {"number": bt.number, "value": bt.value, "params": dict(bt.params), "metric": bt.user_attrs.get("metric")}


def state_counts(study: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out
