"""What every run records beyond its metrics: ties, session-length buckets, cost and the leak check.

`RunExtras` is held by the `Trainer`: it checks the model's dataset-level structures once they
exist (`sbrbench.audit.check_model_structures`: a pair only held-out sessions contain stops the
run with a one-line error), keeps each final evaluation's tie counts and prefix lengths through
`RunDir` (`ranks/<split>-ties.npy`, `ranks/<split>-lengths.npy`), and adds to `metrics.json`:

* `ties`: {split: `sbrbench.honesty.tie_summary`} — tied share, optimistic vs pessimistic HR@K/MRR@K;
* `by_length`: {split: `sbrbench.honesty.length_breakdown`} — metrics per prefix-length bucket;
* `cost`: training seconds per epoch and in total, examples/s, peak memory (process RSS, or CUDA
  allocated on a GPU), evaluation latency per example (final test pass), parameter count, device,
  threads;
* `leak_check`: the structure check's counts;
* `unfitted_targets`: {split: `sbrbench.honesty.unfitted_summary`} — the share of examples whose
  target no fitted session contains, and HR@K / MRR@K on them and on the others (the indices are
  kept in `ranks/<split>-unfitted.npy`).
"""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.audit import check_model_structures
from sbrbench.errors import SbrError
from sbrbench.honesty import DEFAULT_LENGTH_EDGES, length_breakdown, tie_summary, unfitted_summary

if TYPE_CHECKING:
    from sbrbench.config import RunConfig
    from sbrbench.data.dataset import ProcessedDataset
    from sbrbench.metrics import RankCollector
    from sbrbench.models import Model
    from sbrbench.results import RunDir


def peak_memory_mb(device: str) -> tuple[float | None, str]:
    """(peak MB, kind): CUDA memory allocated by torch on a GPU, else the process's peak RSS."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return torch.cuda.max_memory_allocated(device) / 2**20, "cuda"
        except Exception:  # noqa: BLE001 - a missing figure is not an error
            return None, "cuda"
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None, "rss"
    return (rss / 2**20 if platform.system() == "Darwin" else rss / 1024), "rss"


class RunExtras:
    """Collects a run's honesty and cost figures (see the module docstring)."""

    def __init__(self, model: Model, ds: ProcessedDataset, cfg: RunConfig, run: RunDir) -> None:
        self.model, self.ds, self.cfg, self.run = model, ds, cfg, run
        self.ties: dict[str, Any] = {}
        self.by_length: dict[str, Any] = {}
        self.unfitted: dict[str, Any] = {}
        self.latency: dict[str, float] = {}
        self.leak_check: dict[str, Any] | None = None
        self.t_start = time.perf_counter()
        if str(cfg.device).startswith("cuda"):
            import contextlib

            import torch

            with contextlib.suppress(Exception):  # a missing figure is not an error
                torch.cuda.reset_peak_memory_stats(cfg.device)

    def check_structures(self) -> None:
        """Check the prepared or fitted model's structures; raises `LeakError` on a leak."""
        self.leak_check = check_model_structures(self.model, self.ds, tuple(self.cfg.fit_splits))

    def add_split(self, split: str, col: RankCollector, seconds: float) -> None:
        """Keep the final evaluation of `split`: tie counts, prefix lengths, their summaries."""
        ranks = col.numpy()
        ks = tuple(int(k) for k in self.cfg.ks)
        try:
            ties = col.ties().cpu().numpy()
        except SbrError:  # a collector fed without tie counts: the run still completes, without them
            ties = None
        if ties is not None:
            self.run.save_ties(split, ties)
            self.ties[split] = tie_summary(ranks, ties, ks)
        lengths = self.ds.examples(split).length
        if lengths.shape[0] == ranks.shape[0]:
            self.run.save_lengths(split, lengths)
            self.by_length[split] = length_breakdown(ranks, lengths, ks, DEFAULT_LENGTH_EDGES)
        if ranks.ndim == 1 and lengths.shape[0] == ranks.shape[0]:  # one target per example: the split's own
            unfitted = self.ds.unfitted_examples(split, tuple(self.cfg.fit_splits))
            self.run.save_unfitted(split, unfitted)
            self.unfitted[split] = unfitted_summary(ranks, unfitted, ks)
        self.latency[split] = seconds / max(int(ranks.shape[0]), 1)

    def cost(self, train_seconds: float, eval_seconds: float, history: list[dict[str, Any]]) -> dict[str, Any]:
        secs = [float(r["seconds"]) for r in history if "seconds" in r]
        eps = [float(r["examples_per_s"]) for r in history if "examples_per_s" in r]
        fit_examples = sum(len(self.ds.splits[s]) for s in self.cfg.fit_splits if s in self.ds.splits)
        peak, kind = peak_memory_mb(self.cfg.device)
        latency = self.latency.get("test", self.latency.get("valid"))
        neural = bool(self.model.neural)
        return {
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "epochs": len(history) if neural else None,
            "seconds_per_epoch": float(np.mean(secs)) if secs else None,
            "examples_per_s": float(np.mean(eps)) if eps else (
                fit_examples / train_seconds if train_seconds > 0 else None),
            "fit_examples": fit_examples,
            "peak_memory_mb": None if peak is None else round(peak, 1),
            "peak_memory_kind": kind,
            "eval_ms_per_example": None if latency is None else 1000.0 * latency,
            "n_params": int(sum(p.numel() for p in self.model.parameters())) if neural else None,
            "device": self.cfg.device,
            "threads": self.cfg.threads,
        }

    def fields(self, train_seconds: float, eval_seconds: float, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The entries `metrics.json` gains."""
        out: dict[str, Any] = {"cost": self.cost(train_seconds, eval_seconds, history)}
        if self.ties:
            out["ties"] = self.ties
        if self.by_length:
            out["by_length"] = self.by_length
        if self.unfitted:
            out["unfitted_targets"] = self.unfitted
        if self.leak_check is not None:
            out["leak_check"] = {k: v for k, v in self.leak_check.items() if k != "structures"} | {
                "structures": [{k: v for k, v in r.items() if not k.endswith("_examples")}
                               for r in self.leak_check["structures"]]}
        return out
