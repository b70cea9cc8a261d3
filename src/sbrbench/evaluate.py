"""Evaluation: score a split with a model, re-evaluate a run, compare two runs.

Ranks are collected on the device by `sbrbench.metrics.RankCollector` (one host synchronisation
per evaluation) and stored per run by `sbrbench.results.RunDir`, so any metric at any K is
recomputed and two runs are compared with paired significance tests without the models.

Evaluation protocols: `next-item` (every (prefix, target) example of the split), `last-item`
(leave-one-out: only the example predicting the last item of each session) and `remaining-items`
(every prefix, with all the session's following items as targets).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.batching import ExampleSource
from sbrbench.device import autocast
from sbrbench.errors import DataError, SbrError
from sbrbench.guards import split_extras
from sbrbench.honesty import length_breakdown, parse_length_buckets, tie_summary, unfitted_summary
from sbrbench.metrics import DEFAULT_KS, RankCollector, parse_ks, parse_metric, per_example_from_ranks
from sbrbench.registry import unknown_name_message
from sbrbench.results import RunDir
from sbrbench.significance import paired_tests

if TYPE_CHECKING:
    from sbrbench.data.dataset import ProcessedDataset
    from sbrbench.models import Model

log = logging.getLogger(__name__)

EVAL_PROTOCOLS = ("next-item", "last-item", "remaining-items")
EVAL_TARGETS = ("next", "remaining")


def score_examples(model: Model, source: ExampleSource, batch_size: int, device: str,
                   precision: str = "fp32") -> RankCollector:
    """Rank the targets of every example of `source` with `model` (eval mode, no gradients).

    Returns the filled `RankCollector` (ranks stay on `device` until asked for). Under `bf16` the
    scores are computed in autocast and ranked in float32.
    """
    import torch

    col = RankCollector(device, **getattr(source, "rank_options", {}))  # the protocol's rank options
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in source.batches(batch_size):
            with autocast(device, precision):
                scores = model(batch)
            col.update(scores.float(), batch.targets)
    model.train(was_training)
    return col


def evaluation_source(model: Model, dataset: ProcessedDataset, split: str, device: str,
                      items: Any = None) -> ExampleSource:
    """The examples of `split` as the model reads them (with session graphs when it needs them);
    the model is told which split it is about to score (`Model.evaluation_split`).

    Targets per example are the protocol's (`dataset.info["eval_targets"]`): `next` (one, the
    default) or `remaining` (every following item of the session, as ComiRec evaluates). A protocol
    that caps histories (`info["history_len"]` with remaining-items targets: ComiRec's L) has each
    prefix cut to its last L items, and its rank options (`info["rank_options"]`: duplicate targets
    counted by Recall, extra metric families) travel with the source to the `RankCollector`.
    """
    targets = str(dataset.info.get("eval_targets", "next"))
    if targets not in EVAL_TARGETS:
        raise DataError(unknown_name_message("kind of evaluation targets", targets, list(EVAL_TARGETS)))
    model.evaluation_split(dataset, split)
    history = dataset.info.get("history_len") if targets == "remaining" else None
    src = ExampleSource.from_dataset(dataset, split, device, graphs=model.needs_graph, items=items,
                                     targets=targets, history=None if history is None else int(history))
    src.rank_options = dict(dataset.info.get("rank_options") or {})
    return src


def protocol_targets(
    dataset: ProcessedDataset, split: str, protocol: str = "next-item", max_targets: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which examples of `split` a protocol evaluates, and their targets.

    Returns (example indices into the split (M,), targets): (M,) for `next-item` and `last-item`,
    (M, T) padded with 0 for `remaining-items` (T = longest remainder, or `max_targets`).
    """
    if protocol not in EVAL_PROTOCOLS:
        raise SbrError(unknown_name_message("evaluation protocol", protocol, list(EVAL_PROTOCOLS)))
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


def evaluate_run(
    run_dir: str | Path, *, split: str = "test", ks: tuple[int, ...] = DEFAULT_KS, device: str = "cpu",
    length_buckets: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Reload a run's model (best checkpoint, or a deterministic re-fit) and re-score `split`.

    Returns {"metrics": {...}, "n_examples": N, "ties": tie diagnostics, "by_length": metrics per
    prefix-length bucket, "unfitted": the examples whose target the fit never contains (None for
    several targets per example)}.
    """
    run = RunDir.open(run_dir)
    cfg = run.read_config()
    model, ds = run.load_model(device)
    source = evaluation_source(model, ds, split, device)
    col = score_examples(model, source, int(cfg.train.eval_batch_size), device, cfg.precision)
    ranks = col.numpy()
    return {"metrics": col.metrics(tuple(ks)), "n_examples": len(source),
            "ties": tie_summary(ranks, col.ties().cpu().numpy(), tuple(ks)),
            "by_length": length_breakdown(ranks, ds.examples(split).length, tuple(ks),
                                          parse_length_buckets(length_buckets)),
            "unfitted": None if ranks.ndim != 1 else unfitted_summary(
                ranks, ds.unfitted_examples(split, tuple(cfg.fit_splits)), tuple(ks))}


def evaluate_run_dir(
    run_dir: str | Path,
    split: str = "test",
    ks: tuple[int, ...] | list[int] | str = DEFAULT_KS,
    *,
    recompute: bool = False,
    device: str = "cpu",
    length_buckets: str | tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """`sbrbench evaluate RUN_DIR`: metrics from stored ranks, or re-run from the checkpoint.

    The model is re-run (`evaluate_run`) with `recompute=True` or when the run has no stored ranks
    for `split`. The result also holds `ties` (optimistic vs pessimistic figures, when the run
    stored tie counts) and `by_length` (metrics per prefix-length bucket, `length_buckets` edges,
    default 2,5: short <= 2, medium 3-5, long > 5).
    """
    run = RunDir.open(run_dir)
    rec = run.read_metrics()
    kk = parse_ks(ks)
    edges = parse_length_buckets(length_buckets)
    if not recompute and run.has_ranks(split):
        return {**run.metrics_from_ranks(split, kk), **split_extras(run, split, kk, edges)}
    out = evaluate_run(run.path, split=split, ks=kk, device=device, length_buckets=edges)
    return {**run.identity(rec), "split": split, "n_examples": out["n_examples"], "ks": list(kk),
            "source": f"checkpoint on {device}", "metrics": out["metrics"], "ties": out["ties"],
            "by_length": out["by_length"], "unfitted": out["unfitted"]}


def compare_runs(
    run_a: str | Path, run_b: str | Path, split: str = "test", metric: str = "MRR", k: int = 20
) -> dict[str, Any]:
    """Paired significance tests between two runs on the same examples, from stored ranks.

    `metric` is a family (`"MRR"`, with `k`) or a full name (`"MRR@20"`). Both runs must have used
    the same processed dataset (same `dataset_checksum`) and hold the same number of examples.
    Runs the Wilcoxon signed-rank test and the paired t-test (`sbrbench.significance`) on the
    per-example values. Returns means, `diff` = mean_b − mean_a, relative difference, p-values,
    and wins/ties/losses of B against A.
    """
    family, kk = parse_metric(metric, k)
    name = f"{family}@{kk}"
    runs = [RunDir.open(run_a), RunDir.open(run_b)]
    recs = [r.read_metrics() for r in runs]
    sums = [r.get("dataset_checksum") for r in recs]
    for run, s in zip(runs, sums):
        if not s:
            raise DataError(f"{run.metrics_path} has no dataset_checksum: cannot check both runs used the same data")
    if sums[0] != sums[1]:
        raise SbrError(
            f"the runs used different data ({recs[0].get('dataset')}/{recs[0].get('protocol')} "
            f"checksum {str(sums[0])[:12]} vs {recs[1].get('dataset')}/{recs[1].get('protocol')} "
            f"checksum {str(sums[1])[:12]}): a paired comparison needs the same examples"
        )
    ranks = [r.load_ranks(split) for r in runs]
    if ranks[0].shape[0] != ranks[1].shape[0]:
        raise SbrError(
            f"the runs hold different numbers of {split} examples ({ranks[0].shape[0]} vs "
            f"{ranks[1].shape[0]}): a paired comparison needs the same examples"
        )
    va, vb = (per_example_from_ranks(r, family, kk) for r in ranks)
    t = paired_tests(va, vb)
    if t["n_examples"] == 0:
        raise SbrError(f"no {split} examples with a target to compare")
    ma, mb = t["mean_a"], t["mean_b"]
    return {
        "metric": name,
        "split": split,
        "n_examples": t["n_examples"],
        "run_a": {**runs[0].identity(recs[0]), "mean": ma},
        "run_b": {**runs[1].identity(recs[1]), "mean": mb},
        "diff": t["diff"],
        "relative_diff": t["diff"] / ma if ma else None,
        "wins_b": t["wins_b"],
        "ties": t["ties"],
        "wins_a": t["wins_a"],
        "wilcoxon": t["wilcoxon"],
        "ttest_rel": t["ttest_rel"],
    }
