"""`sbrbench audit`: what in a processed dataset can make a benchmark number dishonest.

`audit_dataset(ds)` measures, against the protocol's training set (the fitted sessions of train
and valid, `ProcessedDataset.fit_sessions`):

* `duplicates` — test sessions (as the test split reads them) equal to a training session
  (`exact`), or a proper prefix of one (`prefix`); test examples whose prefix and target are the
  start of a training session (`examples`): a model that memorises training sessions answers them;
* `unseen_targets` — test examples whose target never occurs in training (no model can rank it
  from training data) and the number of such items; with a validation split, also those whose
  target only the validation sessions contain (`unseen_without_valid`: a run that selects on
  validation fits on the rest and cannot rank them either);
* `repeats` — consecutive repeated clicks, and test examples whose target repeats the last click;
* `crossing` — sessions read by both the fit splits and the test split (by design under
  leave-one-out protocols), test targets that the fit splits read (a leak), and, with session
  times, test sessions older than the newest training session;
* `target_in_prefix` — the share of test targets already in their own prefix;
* `lengths` — the prefix-length distribution of every split (buckets as in `sbrbench.honesty`)
  and its total-variation distance between train and test;
* `popularity` — how training popularity carries over to the test targets: top-K overlap, the
  share of test targets among the top-K training items against the training clicks' share, and
  the Spearman correlation of the two popularity profiles.

Each check yields figures and, when it fires, a finding `{check, severity, message}`; severity
`leak` (a benchmark-breaking fault: the command fails), `warning`, or `info`. The thresholds are
`AuditThresholds` fields. `PairAudit` checks item pairs held by a dataset-level structure (graph,
neighbour table, co-occurrence counts) against the pairs that co-occur in the fitted sessions:
a pair that only held-out sessions contain is a leak. Everything is vectorised numpy (sessions are
hashed with a 64-bit polynomial rolling hash), so a full dataset takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.data.dataset import FIT_SPLITS
from sbrbench.errors import DataError

if TYPE_CHECKING:
    from sbrbench.data.dataset import ProcessedDataset

SEVERITIES = ("leak", "warning", "info")
DEFAULT_EDGES = (2, 5)  # the prefix-length buckets of `sbrbench.honesty` (short <= 2, medium 3-5, long > 5)


@dataclass(frozen=True)
class AuditThresholds:
    """When the descriptive checks fire (the counting checks fire on any occurrence)."""

    target_in_prefix: float = 0.05  # share of test targets already in their prefix
    length_tv: float = 0.15  # total-variation distance of train vs test prefix-length buckets
    popularity_ratio: float = 0.5  # test targets' share in the train top-K / train clicks' share
    popularity_k: int = 100  # top-K (capped at a twentieth of the catalogue, at least 10)


# ---- hashing ------------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1
_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64


def _inverse64(b: int) -> int:
    inv = b
    for _ in range(7):
        inv = (inv * (2 - b * inv)) & _M64
    return inv


def _powers(base: int, n: int) -> np.ndarray:
    out = np.empty(max(n, 1), dtype=np.uint64)
    out[0] = 1
    if n > 1:
        out[1:] = np.cumprod(np.full(n - 1, base, dtype=np.uint64), dtype=np.uint64)
    return out


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def prefix_keys(items: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """uint64 key of every session prefix: entry g is the key of `items[start : g + 1]` for the
    session holding click g (equal sequences, equal keys; different ones collide with
    probability ~2**-64)."""
    items = np.asarray(items, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)
    if items.size == 0:
        return np.zeros(0, dtype=np.uint64)
    sess = np.repeat(np.arange(lens.shape[0], dtype=np.int64), lens)
    pos = np.arange(items.shape[0], dtype=np.int64) - offsets[sess]
    n = int(lens.max())
    pw, inv = _powers(_BASE, n), _powers(_inverse64(_BASE), n)
    with np.errstate(over="ignore"):
        y = (items.astype(np.uint64) + np.uint64(1)) * inv[pos]
        cs = np.cumsum(y, dtype=np.uint64)
        before = np.concatenate([np.zeros(1, np.uint64), cs])[offsets[:-1]]
        h = (cs - before[sess]) * pw[pos]
        return _mix(h ^ ((pos.astype(np.uint64) + np.uint64(1)) * np.uint64(0xD6E8FEB86659FD93)))


# ---- what each split reads -----------------------------------------------------------------------------
def read_extent(ds: ProcessedDataset, splits: Sequence[str]) -> np.ndarray:
    """Per session, the last position the examples of `splits` read (their target), -1 if none."""
    maxpos = np.full(ds.n_sessions, -1, dtype=np.int64)
    for name in splits:
        if name in ds.splits and len(ds.splits[name]):
            sp = ds.splits[name]
            np.maximum.at(maxpos, sp.session.astype(np.int64), sp.pos.astype(np.int64))
    return maxpos


def _read_csr(ds: ProcessedDataset, maxpos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, offsets, sessions) of the read part of every session with maxpos >= 0."""
    sess = np.flatnonzero(maxpos >= 0).astype(np.int64)
    lens = maxpos[sess] + 1
    offs = np.zeros(sess.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    idx = np.repeat(ds.offsets[sess] - offs[:-1], lens) + np.arange(offs[-1], dtype=np.int64)
    return ds.items[idx].astype(np.int64), offs, sess


def _share(a: int, b: int) -> float:
    return float(a / b) if b else 0.0


def _finding(check: str, severity: str, message: str) -> dict[str, str]:
    return {"check": check, "severity": severity, "message": message}


# ---- the dataset audit ---------------------------------------------------------------------------------
def audit_dataset(ds: ProcessedDataset, *, edges: Sequence[int] = DEFAULT_EDGES,
                  thresholds: AuditThresholds | None = None) -> dict[str, Any]:
    """The full audit report of a processed dataset (see the module docstring); JSON-ready."""
    th = thresholds or AuditThresholds()
    t0 = time.perf_counter()
    if "test" not in ds.splits or len(ds.splits["test"]) == 0:
        raise DataError(f"dataset {ds.name!r} ({ds.protocol}) has no test examples to audit")
    fit = ds.fit_sessions(FIT_SPLITS)
    te = ds.examples("test")
    n_test = int(te.target.shape[0])
    findings: list[dict[str, str]] = []
    checks: dict[str, Any] = {}

    # duplicates: test sessions (as read) vs the training sessions (as fitted)
    fit_keys = prefix_keys(fit.items, fit.offsets)
    fit_full = fit_keys[fit.offsets[1:] - 1] if len(fit) else np.zeros(0, np.uint64)
    all_keys = prefix_keys(ds.items, ds.offsets)
    test_max = read_extent(ds, ("test",))
    test_sess = np.flatnonzero(test_max >= 0)
    t_keys = all_keys[ds.offsets[test_sess] + test_max[test_sess]]
    fit_sorted, full_sorted = np.sort(fit_keys), np.sort(fit_full)
    exact = _member(t_keys, full_sorted)
    as_prefix = _member(t_keys, fit_sorted) & ~exact
    ex_keys = all_keys[te.start + te.length]  # prefix + target of every test example
    ex_dup = _member(ex_keys, fit_sorted)
    checks["duplicates"] = {
        "test_sessions": int(test_sess.shape[0]),
        "exact": int(exact.sum()), "exact_share": _share(int(exact.sum()), test_sess.shape[0]),
        "prefix": int(as_prefix.sum()), "prefix_share": _share(int(as_prefix.sum()), test_sess.shape[0]),
        "examples": int(ex_dup.sum()), "examples_share": _share(int(ex_dup.sum()), n_test),
    }
    d = checks["duplicates"]
    if d["exact"] or d["prefix"] or d["examples"]:
        findings.append(_finding("duplicates", "warning",
            f"{d['exact']} test sessions ({100 * d['exact_share']:.2f}%) equal a training session and "
            f"{d['prefix']} ({100 * d['prefix_share']:.2f}%) are the start of a longer one; "
            f"{d['examples']} test examples ({100 * d['examples_share']:.2f}%) have prefix and target "
            "at the start of a training session (memorising training sessions answers them)"))

    # unseen targets: against the whole training set, and against it without the validation sessions
    unseen = ds.unfitted_examples("test", FIT_SPLITS)
    unseen_items = np.unique(te.target[unseen])
    checks["unseen_targets"] = {"test_examples": n_test, "unseen": int(unseen.size),
                                "share": _share(int(unseen.size), n_test), "items": int(unseen_items.size)}
    if unseen.size:
        findings.append(_finding("unseen_targets", "warning",
            f"{int(unseen.size)} test examples ({100 * checks['unseen_targets']['share']:.2f}%) have a target "
            f"never seen in training ({unseen_items.size} items): no model can rank them from training data"))
    if len(ds.splits.get("valid", ())):
        held = ds.unfitted_examples("test", ("train",))
        extra = int(held.size - unseen.size)
        checks["unseen_targets"] |= {"unseen_without_valid": int(held.size),
                                     "share_without_valid": _share(int(held.size), n_test)}
        if extra:
            findings.append(_finding("unseen_targets", "warning",
                f"{extra} more test examples ({100 * _share(extra, n_test):.2f}%) have a target that only the "
                f"validation sessions contain ({np.unique(te.target[held]).size - unseen_items.size} items): a run "
                "that selects on validation fits without them and cannot rank these targets either"))

    # consecutive repeats
    same = ds.items[1:] == ds.items[:-1]
    if same.size:
        starts = ds.offsets[1:-1]
        same[starts[starts > 0] - 1] = False
    n_rep = int(same.sum())
    rep_sess = int(np.unique(np.searchsorted(ds.offsets, np.flatnonzero(same) + 1, side="right") - 1).size) if n_rep else 0
    last = ds.items[te.start + te.length - 1].astype(np.int64)
    t_last = te.target == last
    checks["repeats"] = {"consecutive_clicks": n_rep, "share_of_clicks": _share(n_rep, ds.items.shape[0]),
                         "sessions": rep_sess, "test_target_is_last_click": int(t_last.sum()),
                         "test_target_is_last_click_share": _share(int(t_last.sum()), n_test)}
    if n_rep:
        findings.append(_finding("repeats", "warning",
            f"{n_rep} consecutive repeated clicks in {rep_sess} sessions; {int(t_last.sum())} test targets "
            f"({100 * checks['repeats']['test_target_is_last_click_share']:.2f}%) repeat the last click, which "
            "'recommend the last item' gets right at rank 1"))

    # sessions crossing the split boundary
    fit_max = read_extent(ds, FIT_SPLITS)
    shared = (fit_max >= 0) & (test_max >= 0)
    read_by_fit = fit_max[ds.split("test").session.astype(np.int64)] >= ds.split("test").pos.astype(np.int64)
    overlap = None
    if ds.session_time is not None:
        tm = np.asarray(ds.session_time, dtype=np.float64)
        fit_only = (fit_max >= 0) & ~shared & np.isfinite(tm)
        test_only = (test_max >= 0) & ~shared & np.isfinite(tm)
        if fit_only.any() and test_only.any():
            overlap = int((tm[test_only] < tm[fit_only].max()).sum())
    checks["crossing"] = {"shared_sessions": int(shared.sum()), "shared_share": _share(int(shared.sum()), test_sess.size),
                          "test_targets_read_by_fit": int(read_by_fit.sum()), "time_overlap": overlap}
    c = checks["crossing"]
    if c["test_targets_read_by_fit"]:
        findings.append(_finding("crossing", "leak",
            f"{c['test_targets_read_by_fit']} test targets are read by the training or validation split "
            "(the same click of the same session): models are trained on test labels"))
    if c["shared_sessions"]:
        findings.append(_finding("crossing", "info",
            f"{c['shared_sessions']} test sessions ({100 * c['shared_share']:.1f}%) continue a session the "
            "training data reads (by design under leave-one-out protocols: models see the earlier part)"))
    if overlap:
        findings.append(_finding("crossing", "warning",
            f"{overlap} test sessions are older than the newest training session: the split is not a clean "
            "temporal cut (future sessions train the model)"))

    # test targets already in the prefix
    total = int(te.length.sum())
    ex_of = np.repeat(np.arange(n_test, dtype=np.int64), te.length)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(te.length) - te.length, te.length)
    hit = ds.items[np.repeat(te.start, te.length) + within] == te.target[ex_of]
    in_prefix = np.zeros(n_test, dtype=bool)
    in_prefix[ex_of[hit]] = True
    checks["target_in_prefix"] = {"test_examples": n_test, "in_prefix": int(in_prefix.sum()),
                                  "share": _share(int(in_prefix.sum()), n_test)}
    if checks["target_in_prefix"]["share"] > th.target_in_prefix:
        findings.append(_finding("target_in_prefix", "info",
            f"{100 * checks['target_in_prefix']['share']:.1f}% of test targets already occur in their prefix "
            "(repeat consumption): models and baselines that re-recommend session items gain from it"))

    # prefix-length distribution per split
    bounds = np.asarray(tuple(edges), dtype=np.int64)
    lengths: dict[str, Any] = {}
    for name, sp in ds.splits.items():
        if not len(sp):
            continue
        ln = sp.pos.astype(np.int64)
        counts = np.bincount(np.searchsorted(bounds, ln, side="left"), minlength=bounds.size + 1)
        lengths[name] = {"examples": int(ln.size), "mean": float(ln.mean()), "median": float(np.median(ln)),
                         "p90": float(np.percentile(ln, 90)), "max": int(ln.max()),
                         "buckets": (counts / ln.size).tolist()}
    tv = None
    if "train" in lengths and "test" in lengths:
        tv = 0.5 * float(np.abs(np.subtract(lengths["train"]["buckets"], lengths["test"]["buckets"])).sum())
    checks["lengths"] = {"edges": list(bounds.tolist()), "splits": lengths, "train_test_tv": tv}
    if tv is not None and tv > th.length_tv:
        findings.append(_finding("lengths", "warning",
            f"train and test prefix lengths differ (total variation {tv:.2f} over the buckets "
            f"{', '.join(map(str, bounds.tolist()))}): mean {lengths['train']['mean']:.2f} vs "
            f"{lengths['test']['mean']:.2f}; report metrics per length bucket"))

    # item popularity overlap
    k = int(max(10, min(th.popularity_k, ds.catalogue_size // 20)))
    tr_pop = np.bincount(fit.items, minlength=ds.n_items).astype(np.float64)
    te_pop = np.bincount(te.target, minlength=ds.n_items).astype(np.float64)
    tr_pop[0] = te_pop[0] = 0.0
    top_tr = np.argsort(-tr_pop, kind="stable")[:k]
    top_te = np.argsort(-te_pop, kind="stable")[:k]
    top_tr = top_tr[tr_pop[top_tr] > 0]
    top_te = top_te[te_pop[top_te] > 0]
    inter = np.intersect1d(top_tr, top_te).size
    union = np.union1d(top_tr, top_te).size
    share_tr = float(tr_pop[top_tr].sum() / tr_pop.sum()) if tr_pop.sum() else 0.0
    share_te = float(te_pop[top_tr].sum() / te_pop.sum()) if te_pop.sum() else 0.0
    both = (tr_pop > 0) | (te_pop > 0)
    rho = _spearman(tr_pop[both], te_pop[both])
    ratio = share_te / share_tr if share_tr else None
    checks["popularity"] = {"k": k, "topk_jaccard": _share(inter, union), "train_clicks_in_train_topk": share_tr,
                            "test_targets_in_train_topk": share_te, "ratio": ratio, "spearman": rho}
    if ratio is not None and ratio < th.popularity_ratio:
        jac = checks["popularity"]["topk_jaccard"]
        jac_text, rho_text = (f"{jac:.2f}" if jac is not None else "n/a"), (f"{rho:.2f}" if rho is not None else "n/a")
        findings.append(_finding("popularity", "warning",
            f"the {k} most popular training items take {100 * share_tr:.1f}% of training clicks but only "
            f"{100 * share_te:.1f}% of test targets (top-{k} overlap {jac_text}, "
            f"Spearman {rho_text}): popularity shifts between training and test"))
    return {
        "dataset": ds.name, "protocol": ds.protocol, "items": ds.catalogue_size,
        "fit_splits": list(FIT_SPLITS), "thresholds": asdict(th), "checks": checks, "findings": findings,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """keys ∈ sorted_keys, by binary search (np.isin hashes: many times slower on uint64)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    i = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
    return sorted_keys[i] == keys


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), like scipy.stats.rankdata."""
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inv]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3:
        return None
    ra, rb = _rankdata(a), _rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def audit_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact form stored in the manifest: headline figures and the findings' messages."""
    c = report["checks"]
    return {
        "findings": [f"{f['severity']}: {f['message']}" for f in report["findings"]],
        "leaks": sum(1 for f in report["findings"] if f["severity"] == "leak"),
        "figures": {
            "duplicate_test_sessions_exact": c["duplicates"]["exact"],
            "duplicate_test_sessions_prefix": c["duplicates"]["prefix"],
            "duplicate_test_examples": c["duplicates"]["examples"],
            "unseen_test_targets": c["unseen_targets"]["unseen"],
            "unseen_test_targets_without_valid": c["unseen_targets"].get("unseen_without_valid"),
            "consecutive_repeats": c["repeats"]["consecutive_clicks"],
            "test_target_is_last_click_share": round(c["repeats"]["test_target_is_last_click_share"], 4),
            "shared_sessions": c["crossing"]["shared_sessions"],
            "test_targets_read_by_fit": c["crossing"]["test_targets_read_by_fit"],
            "time_overlap": c["crossing"]["time_overlap"],
            "target_in_prefix_share": round(c["target_in_prefix"]["share"], 4),
            "length_tv": None if c["lengths"]["train_test_tv"] is None else round(c["lengths"]["train_test_tv"], 4),
            "popularity_ratio": None if c["popularity"]["ratio"] is None else round(c["popularity"]["ratio"], 4),
        },
        "seconds": report.get("seconds"),
    }


# ---- pairs held by dataset-level structures --------------------------------------------------------------
def cooccurrence(items: np.ndarray, offsets: np.ndarray, n_items: int) -> Any:
    """The item × item co-occurrence support of CSR sessions (scipy CSR, sorted indices): entry
    (i, j) is non-zero when i and j occur in one session (at any distance; i == j when i occurs)."""
    import scipy.sparse as sp

    n_sess = int(offsets.shape[0] - 1)
    rows = np.repeat(np.arange(n_sess, dtype=np.int64), np.diff(offsets))
    h = sp.csr_matrix((np.ones(rows.shape[0], np.float32), (rows, np.asarray(items, np.int64))),
                      shape=(n_sess, n_items))
    h.data[:] = 1.0
    c = (h.T.tocsr() @ h).tocsr()
    c.sort_indices()
    return c


class PairAudit:
    """Checks item pairs of a dataset-level structure against the sessions a run may learn from.

    A pair (i, j) is legitimate when i and j co-occur in a fitted session of `fit_splits`. Any
    other pair is reported; one that co-occurs in the test split's sessions (as the test split
    reads them) is a *test-only pair*, and one that co-occurs in the validation split while the
    validation split is held out (selection on validation) a *valid-only pair*: both are leaks.
    The co-occurrence supports are built once per instance.
    """

    def __init__(self, ds: ProcessedDataset, fit_splits: Sequence[str]) -> None:
        self.ds = ds
        self.fit_splits = tuple(fit_splits)
        fit = ds.fit_sessions(self.fit_splits)
        self.fit = cooccurrence(fit.items, fit.offsets, ds.n_items)
        self.held_out = [s for s in ("test", "valid") if s not in self.fit_splits and s in ds.splits and len(ds.splits[s])]
        self._held: dict[str, Any] = {}

    def _held_support(self, split: str) -> Any:
        if split not in self._held:
            items, offs, _ = _read_csr(self.ds, read_extent(self.ds, (split,)))
            self._held[split] = cooccurrence(items, offs, self.ds.n_items)
        return self._held[split]

    def check(self, name: str, src: np.ndarray, dst: np.ndarray, examples: int = 5) -> dict[str, Any]:
        """Classify the pairs (src[k], dst[k]) (padding id 0 and out-of-range ids ignored): `pairs`
        counts the entries checked, `not_in_fit` / `<split>_only` the distinct offending pairs."""
        n = self.ds.n_items
        src = np.asarray(src, dtype=np.int64).ravel()
        dst = np.asarray(dst, dtype=np.int64).ravel()
        ok = (src > 0) & (dst > 0) & (src < n) & (dst < n)
        s, d = src[ok], dst[ok]
        legit = np.asarray(self.fit[s, d]).ravel() != 0 if s.size else np.zeros(0, bool)
        bad = np.unique(s[~legit] * n + d[~legit])  # distinct offending pairs (few, or a leak)
        bad_s, bad_d = bad // n, bad % n
        out: dict[str, Any] = {"structure": name, "pairs": int(s.size), "not_in_fit": int(bad_s.size)}
        leaks = 0
        for split in self.held_out:
            if bad_s.size:
                hit = np.asarray(self._held_support(split)[bad_s, bad_d]).ravel() != 0
            else:
                hit = np.zeros(0, bool)
            out[f"{split}_only"] = int(hit.sum())
            out[f"{split}_only_examples"] = [[int(a), int(b)] for a, b in zip(bad_s[hit][:examples], bad_d[hit][:examples])]
            leaks += int(hit.sum())
        out["leak"] = leaks > 0
        return out
