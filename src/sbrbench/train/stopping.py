"""Early stopping on the selection metric (higher is better)."""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Track the best value of the selection metric; stop after `patience` epochs without a gain.

    `patience=0` never stops. The state round-trips through `state_dict` for checkpoints.
    """

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best_value = -math.inf
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record epoch `epoch`'s value; True when it is the best so far (strictly)."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once `patience` epochs in a row brought no gain."""
        return bool(self.patience) and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = float(state["best_value"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
