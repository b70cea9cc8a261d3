"""Early stopping on the selection split: the honest rule and the official code's rule."""

from __future__ import annotations

import math
from typing import Any

from sbrbench.metrics import parse_metric


class EarlyStopping:
    """Track the best selection metric (higher is better) and decide when to stop.

    `rule="metric"`: stop after `patience` epochs in a row without a strict gain in `metric`.
    `rule="official"` (SR-GNN / TAGNN / GCE-GNN `main.py`): an epoch improves when HR@K or MRR@K (K
    of `metric`) is >= its best so far; `bad_epochs` counts the epochs that did not improve and is
    never reset; stop once it reaches `patience`. Either way the best weights are those of the
    strictly best `metric` epoch. `patience=0` never stops. The state round-trips through
    `state_dict` for checkpoints.
    """

    def __init__(self, patience: int, metric: str = "MRR@20", rule: str = "metric") -> None:
        self.patience = int(patience)
        self.metric = metric
        self.rule = rule
        _, k = parse_metric(metric, 20)
        self._official_keys = (f"HR@{k}", f"MRR@{k}")
        self.best_value = -math.inf
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.best_official = [-math.inf, -math.inf]

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record epoch `epoch`'s metrics; True when its selection metric is the best so far."""
        value = float(metrics[self.metric])
        best = value > self.best_value
        if best:
            self.best_value, self.best_epoch = value, int(epoch)
        if self.rule == "official":
            flag = False
            for i, key in enumerate(self._official_keys):
                if metrics[key] >= self.best_official[i]:
                    self.best_official[i] = float(metrics[key])
                    flag = True
            self.bad_epochs += 0 if flag else 1
        else:
            self.bad_epochs = 0 if best else self.bad_epochs + 1
        return best

    @property
    def should_stop(self) -> bool:
        """True once the rule's count of non-improving epochs reached `patience`."""
        return bool(self.patience) and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_official": list(self.best_official)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = float(state["best_value"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.best_official = [float(x) for x in state.get("best_official", [-math.inf, -math.inf])]
