"""Evaluation: ranks collected on the device, stored per run, recomputed and compared later.

A `RankCollector` keeps the pessimistic rank of every target (see `sbrbench.metrics`) on the model's
device and synchronises once, at the end of an evaluation. The ranks are stored compactly in the
run directory (`ranks/<split>.npy`, int32), so any metric at any K can be recomputed and two runs
compared with paired significance tests without the models.

Evaluation protocols: `next-item` (every (prefix, target) example of the split), `last-item`
(leave-one-out: only the example predicting the last item of each session) and `remaining-items`
(every prefix, with all the session's following items as targets).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.errors import DataError, NotAvailableError, SbrError
from sbrbench.io import atomic_open
from sbrbench.metrics import (
    DEFAULT_KS,
    chunked_target_ranks,
    metrics_from_ranks,
    parse_ks,
    parse_metric,
    per_example_from_ranks,
    rank_block,
)
from sbrbench.registry import unknown_name_message

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from sbrbench.data.dataset import ProcessedDataset

log = logging.getLogger(__name__)

PROTOCOLS = ("next-item", "last-item", "remaining-items")
SPLITS = ("valid", "test")
_NAN_MESSAGE = "the scores contain NaN: the model is broken (check the loss and learning rate)"


class RankCollector:
    """Accumulates target ranks on a device; one host synchronisation per evaluation.

    Example::

        col = RankCollector(device)
        for batch in batches:
            col.update(model(batch), batch.targets)      # no host sync here
        ranks = col.ranks()                               # one concatenation + NaN check
        metrics = col.metrics((5, 10, 20))
    """

    def __init__(self, device: str | torch.device = "cpu", *, check_nan: bool = True) -> None:
        import torch

        self.device = torch.device(device)
        self.check_nan = check_nan
        self._parts: list[Tensor] = []
        self._nan: Tensor | None = None
        self._single: bool | None = None
        self._cache: Tensor | None = None

    def __len__(self) -> int:
        return sum(int(p.shape[0]) for p in self._parts)

    def reset(self) -> None:
        """Forget every collected rank."""
        self._parts.clear()
        self._nan = None
        self._single = None
        self._cache = None

    def _add(self, ranks: Tensor, nan: Tensor | None, single: bool) -> None:
        if self._single is not None and single != self._single:
            raise SbrError("cannot mix one-target (B,) and several-target (B, T) batches in one evaluation")
        self._single = single
        self._parts.append(ranks.to(self.device, non_blocking=True))
        if nan is not None and self.check_nan:
            nan = nan.to(self.device)
            self._nan = nan if self._nan is None else (self._nan | nan)
        self._cache = None

    def update(self, scores: Tensor, targets: Tensor, seen: Tensor | None = None) -> None:
        """Rank `targets` (B,) or (B, T) against `scores` (B, n_items) and keep the ranks."""
        ranks, nan, single = rank_block(scores, targets, seen, check_nan=self.check_nan)
        self._add(ranks, nan, single)

    def update_chunked(
        self,
        score_chunk: Callable[[int, int], Tensor],
        target_scores: Tensor,
        targets: Tensor,
        n_items: int,
        *,
        chunk_size: int = 65536,
        seen: Tensor | None = None,
    ) -> None:
        """Like `update` for a catalogue scored chunk by chunk (`score_chunk(start, end)`)."""
        ranks, nan = chunked_target_ranks(
            score_chunk, target_scores, targets, n_items, chunk_size=chunk_size, seen=seen,
            check_nan=self.check_nan,
        )
        self._add(ranks, nan, ranks.dim() == 1)

    def update_ranks(self, ranks: Tensor) -> None:
        """Add precomputed pessimistic ranks ((B,) or (B, T), 0 = padding)."""
        self._add(ranks.long(), None, ranks.dim() == 1)

    def ranks(self) -> Tensor:
        """All ranks so far, (N,) or (N, T) int64 on the collector's device (raises on NaN scores)."""
        import torch

        if self._cache is not None:
            return self._cache
        if self._nan is not None and bool(self._nan):
            raise SbrError(_NAN_MESSAGE)
        if not self._parts:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        if self._single:
            out = torch.cat(self._parts)
        else:
            width = max(int(p.shape[1]) for p in self._parts)
            out = torch.cat([torch.nn.functional.pad(p, (0, width - int(p.shape[1]))) for p in self._parts])
        self._cache = out
        return out

    def numpy(self) -> np.ndarray:
        """The ranks as an int32 numpy array (the stored format)."""
        return _to_int32(self.ranks().cpu().numpy())

    def metrics(self, ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, float]:
        """Every metric at every K over all collected examples (fractions)."""
        return metrics_from_ranks(self.ranks(), ks)


def rank_embeddings(
    queries: Tensor,
    item_emb: Tensor,
    targets: Tensor,
    *,
    seen: Tensor | None = None,
    chunk_size: int | None = None,
    check_nan: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Ranks for dot-product scoring `queries @ item_emb.T` with memory bounded by B × chunk_size.

    `item_emb` (n_items, d) includes row 0 (padding). The target scores are computed first
    (row-wise dot products), then counts of candidates scoring >= are accumulated over item chunks,
    so the (B, n_items) matrix never exists. Returns (ranks, 0-d NaN flag tensor or None).
    """
    import torch

    n_items = int(item_emb.shape[0])
    t = torch.as_tensor(targets, device=queries.device).long()
    t2 = t[:, None] if t.dim() == 1 else t
    tgt = torch.einsum("bd,btd->bt", queries, item_emb[t2])
    ts = tgt[:, 0] if t.dim() == 1 else tgt
    size = chunk_size or n_items
    return chunked_target_ranks(
        lambda a, b: queries @ item_emb[a:b].T, ts, t, n_items, chunk_size=size, seen=seen,
        check_nan=check_nan,
    )


# ---- protocols -------------------------------------------------------------------------------
def protocol_targets(
    dataset: ProcessedDataset, split: str, protocol: str = "next-item", max_targets: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which examples of `split` a protocol evaluates, and their targets.

    Returns (example indices into the split (M,), targets): (M,) for `next-item` and `last-item`,
    (M, T) padded with 0 for `remaining-items` (T = longest remainder, or `max_targets`).
    """
    if protocol not in PROTOCOLS:
        raise SbrError(unknown_name_message("evaluation protocol", protocol, list(PROTOCOLS)))
    ex = dataset.examples(split)
    n = ex.start.shape[0]
    if protocol == "next-item":
        return np.arange(n, dtype=np.int64), ex.target
    if protocol == "last-item":
        idx = np.flatnonzero(ex.start + ex.length + 1 == ex.session_end).astype(np.int64)
        return idx, ex.target[idx]
    rem = ex.session_end - (ex.start + ex.length)
    width = int(rem.max()) if n else 0
    if max_targets is not None:
        width = min(width, int(max_targets))
    col = np.arange(width, dtype=np.int64)
    pos = (ex.start + ex.length)[:, None] + col[None, :]
    ok = col[None, :] < np.minimum(rem, width)[:, None]
    items = dataset.items.astype(np.int64)
    out = np.where(ok, items[np.where(ok, pos, 0)], 0)
    return np.arange(n, dtype=np.int64), out


# ---- stored ranks ---------------------------------------------------------------------------------
def _to_int32(a: np.ndarray) -> np.ndarray:
    if a.size and (int(a.max()) > np.iinfo(np.int32).max or int(a.min()) < 0):
        raise ValueError("ranks out of the int32 range")
    return a.astype(np.int32, copy=False)


def save_ranks(path: str | Path, ranks: Tensor | np.ndarray) -> Path:
    """Write ranks ((N,) or (N, T)) as an int32 `.npy` file, atomically. Returns the path."""
    path = Path(path)
    arr = ranks if isinstance(ranks, np.ndarray) else ranks.detach().cpu().numpy()
    arr = _to_int32(np.ascontiguousarray(arr))
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return path


def load_ranks(path: str | Path) -> np.ndarray:
    """Read ranks written by `save_ranks`; a one-line `DataError` if missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no stored ranks at {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"damaged ranks file {path}: {exc}") from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
        raise DataError(f"damaged ranks file {path}: expected int (N,) or (N, T), got {arr.dtype} {arr.shape}")
    return arr


# ---- run directories ------------------------------------------------------------------------------
def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The `metrics.json` of a run directory, checked; one-line errors for missing/malformed files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SbrError(f"no run directory at {run_dir}")
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise DataError(f"{run_dir} is not a run directory (metrics.json missing)")
    try:
        rec = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"malformed {mpath}: {msg}") from None
    if not isinstance(rec, dict):
        raise DataError(f"malformed {mpath}: expected a JSON object")
    return rec


def _ranks_path(run_dir: Path, split: str) -> Path:
    if split not in SPLITS:
        raise SbrError(unknown_name_message("split", split, list(SPLITS)))
    return run_dir / "ranks" / f"{split}.npy"


def metrics_for_run(
    run_dir: str | Path, split: str = "test", ks: tuple[int, ...] | list[int] | str = DEFAULT_KS
) -> dict[str, Any]:
    """Recompute every metric at any K from a run's stored ranks, without the model.

    Returns {"run_dir", "model", "dataset", "protocol", "seed", "select_on", "split",
    "n_examples", "ks", "source": "stored ranks", "metrics": {name: fraction}}.
    """
    run_dir = Path(run_dir)
    rec = read_run(run_dir)
    kk = parse_ks(ks)
    ranks = load_ranks(_ranks_path(run_dir, split))
    return {
        **_run_identity(run_dir, rec),
        "split": split,
        "n_examples": int(ranks.shape[0]),
        "ks": list(kk),
        "source": "stored ranks",
        "metrics": metrics_from_ranks(ranks, kk),
    }


def _run_identity(run_dir: Path, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "model": rec.get("model"),
        "dataset": rec.get("dataset"),
        "protocol": rec.get("protocol"),
        "seed": rec.get("seed"),
        "select_on": rec.get("select_on"),
    }


def resolve_device(gpu: int | None = None, device: str | None = None) -> str:
    """`--gpu N` / `--device D` → a torch device string; clear errors if it is not there."""
    import torch

    if gpu is not None and device is not None:
        raise SbrError("give either --gpu or --device, not both")
    name = f"cuda:{gpu}" if gpu is not None else (device or "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SbrError(f"bad device {name!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SbrError(f"device {name} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SbrError(f"device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return str(dev)


def evaluate_run_dir(
    run_dir: str | Path,
    split: str = "test",
    ks: tuple[int, ...] | list[int] | str = DEFAULT_KS,
    *,
    recompute: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """`sbrbench evaluate RUN_DIR`: metrics from stored ranks, or re-run from the checkpoint.

    The model is re-run (`sbrbench.train.evaluate_run`) with `recompute=True` or when the run has
    no stored ranks for `split`.
    """
    run_dir = Path(run_dir)
    rec = read_run(run_dir)
    kk = parse_ks(ks)
    if not recompute and _ranks_path(run_dir, split).is_file():
        return metrics_for_run(run_dir, split, kk)
    try:
        from sbrbench.train import evaluate_run  # type: ignore[attr-defined]
    except ImportError:
        raise NotAvailableError(
            "re-evaluating a model from its checkpoint needs sbrbench.train.evaluate_run, "
            "which this version does not provide"
        ) from None
    out = evaluate_run(run_dir, split=split, ks=kk, device=device)
    metrics = out.get("metrics", out) if isinstance(out, dict) else out
    return {
        **_run_identity(run_dir, rec),
        "split": split,
        "n_examples": out.get("n_examples") if isinstance(out, dict) else None,
        "ks": list(kk),
        "source": f"checkpoint on {device}",
        "metrics": metrics,
    }


def compare_runs(
    run_a: str | Path, run_b: str | Path, split: str = "test", metric: str = "MRR", k: int = 20
) -> dict[str, Any]:
    """Paired significance tests between two runs on the same examples, from stored ranks.

    `metric` is a family (`"MRR"`, with `k`) or a full name (`"MRR@20"`). Both runs must have used
    the same processed dataset (same `dataset_checksum`) and hold the same number of examples.
    Runs the Wilcoxon signed-rank test and the paired t-test (scipy.stats, two-sided) on the
    per-example values. Returns means, `diff` = mean_b − mean_a, relative difference, p-values,
    and wins/ties/losses of B against A.
    """
    from scipy import stats

    family, kk = parse_metric(metric, k)
    name = f"{family}@{kk}"
    paths = [Path(run_a), Path(run_b)]
    recs = [read_run(p) for p in paths]
    sums = [r.get("dataset_checksum") for r in recs]
    for p, s in zip(paths, sums):
        if not s:
            raise DataError(f"{p}/metrics.json has no dataset_checksum: cannot check both runs used the same data")
    if sums[0] != sums[1]:
        raise SbrError(
            f"the runs used different data ({recs[0].get('dataset')}/{recs[0].get('protocol')} "
            f"checksum {str(sums[0])[:12]} vs {recs[1].get('dataset')}/{recs[1].get('protocol')} "
            f"checksum {str(sums[1])[:12]}): a paired comparison needs the same examples"
        )
    ranks = [load_ranks(_ranks_path(p, split)) for p in paths]
    if ranks[0].shape[0] != ranks[1].shape[0]:
        raise SbrError(
            f"the runs hold different numbers of {split} examples ({ranks[0].shape[0]} vs "
            f"{ranks[1].shape[0]}): a paired comparison needs the same examples"
        )
    va, vb = (per_example_from_ranks(r, family, kk) for r in ranks)
    ok = ~(np.isnan(va) | np.isnan(vb))
    va, vb = va[ok], vb[ok]
    n = int(va.shape[0])
    if n == 0:
        raise SbrError(f"no {split} examples with a target to compare")
    d = vb - va
    if np.all(d == 0):
        p_w = p_t = 1.0
        w_stat = t_stat = 0.0
    else:
        w = stats.wilcoxon(vb, va, zero_method="wilcox", alternative="two-sided")
        p_w, w_stat = float(w.pvalue), float(w.statistic)
        t = stats.ttest_rel(vb, va)
        p_t, t_stat = float(t.pvalue), float(t.statistic)
        if math.isnan(p_t):  # constant non-zero difference: the t statistic is infinite
            p_t = 0.0
    ma, mb = float(va.mean()), float(vb.mean())
    return {
        "metric": name,
        "split": split,
        "n_examples": n,
        "run_a": {**_run_identity(paths[0], recs[0]), "mean": ma},
        "run_b": {**_run_identity(paths[1], recs[1]), "mean": mb},
        "diff": mb - ma,
        "relative_diff": (mb - ma) / ma if ma else None,
        "wins_b": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "wins_a": int((d < 0).sum()),
        "wilcoxon": {"statistic": w_stat, "pvalue": p_w},
        "ttest_rel": {"statistic": t_stat, "pvalue": p_t},
    }
