"""How much tuning a run got: its budget label, read from the `tune.json` note of tuned runs.

"Everyone's a winner" (Shehzad & Jannach, RecSys 2023): comparisons are decided by how much
tuning each model got. `sbrbench tune` writes `tune.json` (`TUNE_NOTE`) into the run directory of
each final run of a tuned configuration; the leaderboard groups and ranks rows only within one
budget and shows it. Plain runs (defaults or hand-set values) are "untuned".
"""

from __future__ import annotations

from typing import Any

TUNE_NOTE = "tune.json"
UNTUNED = "untuned"


def budget_label(note: dict[str, Any] | None) -> str:
    """"tuned, N trials" for a tuned run's note, else "untuned"."""
    if not note or not note.get("tuned"):
        return UNTUNED
    try:
        n = int(note.get("trials"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "tuned, ? trials"
    return f"tuned, {n} trial" + ("" if n == 1 else "s")
