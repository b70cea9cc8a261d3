"""Run-level leak audits: a model's dataset-level structures and its batch independence.

* `model_structures(model)` finds the item-pair structures a prepared or fitted model holds:
  `sbrbench.graphs` graphs, session indexes (an `X` sessions × items incidence: the kNN family's
  sessions, whose item pairs are those of one session), item × item sparse matrices (scipy or torch: co-occurrence counts,
  similarities, rules), CSR buffer triples of an item × item propagation (`<name>crow` /
  `<name>col` named like `prop`, `adj`, `graph`, `vv_`), item neighbour tables ((n_items, k) integer
  tables named like `nbr`, `neighbour`, `neighbor`, `adj`), and whatever the model lists itself
  in an optional `audit_structures()` method (name → (src, dst) item arrays). A model may exempt
  a structure that does not come from sessions (e.g. text similarity) with a class attribute
  `leak_audit_exempt = ("name", ...)`.
* `check_model_structures(model, ds, fit_splits)` checks every such pair against the pairs that
  co-occur in the fitted sessions (`sbrbench.data.audit.PairAudit`) and raises `LeakError` when a
  structure holds a pair that only held-out sessions contain: the Trainer runs it on every run.
* `batch_independence(model, ds)` scores the first test examples in one batch, in reverse order
  and one by one: a model whose scores depend on the other examples of its batch (per-batch
  hypergraphs over unshuffled augmented test prefixes) can read their targets.
* `audit(dataset, ...)` is `sbrbench audit`: the dataset checks of `sbrbench.data.audit`, the
  library's dataset-level graphs, and optionally models (`--model`) or a run (`--run`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.data.audit import AuditThresholds, PairAudit, audit_dataset
from sbrbench.data.dataset import FIT_SPLITS
from sbrbench.errors import SbrError

if TYPE_CHECKING:
    from sbrbench.data.dataset import ProcessedDataset
    from sbrbench.models import Model


class LeakError(SbrError):
    """A dataset-level structure holds item pairs that only held-out sessions contain."""


_TABLE_NAME = re.compile(r"(nbr|neighbou?r|adj)", re.IGNORECASE)
_CSR_NAME = re.compile(r"(prop|adj|graph|nbr|neighbou?r|^vv_)", re.IGNORECASE)  # vv: item-item (MCLSR)


def _np(x: Any) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _pairs_of(obj: Any, n_items: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Item pairs of an item × item structure, or None when `obj` is not one."""
    import scipy.sparse as sp
    import torch

    from sbrbench.data.audit import cooccurrence
    from sbrbench.graphs import GlobalItemGraph, SessionHypergraph

    if isinstance(obj, GlobalItemGraph):
        src, dst, _ = obj.edges()
        return src, dst
    if isinstance(obj, SessionHypergraph):
        offs = np.concatenate([[0], np.cumsum(np.bincount(obj.edge, minlength=obj.n_edges))]).astype(np.int64)
        order = np.argsort(obj.edge, kind="stable")
        c = cooccurrence(obj.item[order], offs, obj.n_items).tocoo()
        return c.row.astype(np.int64), c.col.astype(np.int64)
    incidence = getattr(obj, "X", None)  # a session index (the kNN family): sessions × items item sets
    if sp.issparse(incidence) and incidence.shape[1] == n_items and not isinstance(obj, torch.nn.Module):
        x = incidence.tocsr()
        c = cooccurrence(x.indices.astype(np.int64), x.indptr.astype(np.int64), n_items).tocoo()
        return c.row.astype(np.int64), c.col.astype(np.int64)
    if sp.issparse(obj) and obj.shape == (n_items, n_items):
        c = obj.tocoo()
        keep = c.data != 0
        return c.row[keep].astype(np.int64), c.col[keep].astype(np.int64)
    if isinstance(obj, torch.Tensor) and obj.layout != torch.strided and tuple(obj.shape) == (n_items, n_items):
        t = obj.detach().cpu()
        if t.layout == torch.sparse_csr:
            crow, col = t.crow_indices().numpy(), t.col_indices().numpy()
            return np.repeat(np.arange(n_items, dtype=np.int64), np.diff(crow)), col.astype(np.int64)
        t = t.coalesce()
        idx = t.indices().numpy()
        return idx[0].astype(np.int64), idx[1].astype(np.int64)
    return None


def _walk(model: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(qualified name, object, its owner's namespace) for every attribute and buffer of the model
    and its sub-modules (parameters excluded)."""
    import torch

    modules = list(model.named_modules()) if isinstance(model, torch.nn.Module) else [("", model)]
    for prefix, mod in modules:
        space: dict[str, Any] = {k: v for k, v in vars(mod).items() if not k.startswith("_")}
        if isinstance(mod, torch.nn.Module):
            space.update({k: v for k, v in mod._buffers.items() if v is not None})
        for k, v in space.items():
            yield (f"{prefix}.{k}" if prefix else k), v, space


def model_structures(model: Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name → (src, dst) item arrays of every dataset-level item-pair structure the model holds."""
    n = int(model.n_items)
    exempt = set(getattr(model, "leak_audit_exempt", ()) or ())
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seen: set[int] = set()
    for name, obj, space in _walk(model):
        leaf = name.rsplit(".", 1)[-1]
        if id(obj) in seen or leaf in exempt or name in exempt:
            continue
        pairs = _pairs_of(obj, n)
        if pairs is None and leaf.endswith("crow") and _CSR_NAME.search(leaf):
            col = space.get(leaf[:-4] + "col")
            crow = _np(obj)
            if col is not None and crow.ndim == 1 and crow.shape[0] == n + 1:
                c = _np(col).astype(np.int64)
                if c.size == 0 or int(c.max()) < n:
                    pairs = (np.repeat(np.arange(n, dtype=np.int64), np.diff(crow.astype(np.int64))), c)
        if pairs is None and _TABLE_NAME.search(leaf):
            arr = _np(obj) if hasattr(obj, "shape") else None
            if (arr is not None and arr.ndim == 2 and arr.shape[0] == n and arr.dtype.kind in "iu" and arr.size
                    and int(arr.min()) >= 0 and int(arr.max()) < n):
                rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], arr.shape)
                pairs = (rows.ravel().copy(), arr.astype(np.int64).ravel())
        if pairs is not None:
            seen.add(id(obj))
            out[name] = pairs
    own = getattr(model, "audit_structures", None)
    if callable(own):
        for name, (src, dst) in (own() or {}).items():
            if name not in exempt:
                out[str(name)] = (np.asarray(src, np.int64), np.asarray(dst, np.int64))
    return out


def check_structures(ds: ProcessedDataset, fit_splits: Sequence[str],
                     structures: dict[str, tuple[np.ndarray, np.ndarray]], *, raise_on_leak: bool = True,
                     what: str = "the model") -> dict[str, Any]:
    """Check named (src, dst) pair structures against the fitted sessions of `fit_splits`.

    Returns {"fit_splits", "structures": [per-structure counts], "pairs", "not_in_fit", "test_only",
    "valid_only", "leak", "seconds"}; raises `LeakError` on a leak when `raise_on_leak`.
    """
    t0 = time.perf_counter()
    results = []
    if structures:
        checker = PairAudit(ds, fit_splits)
        results = [checker.check(name, s, d) for name, (s, d) in structures.items()]
    out = {
        "fit_splits": list(fit_splits),
        "structures": results,
        "pairs": sum(r["pairs"] for r in results),
        "not_in_fit": sum(r["not_in_fit"] for r in results),
        "test_only": sum(r.get("test_only", 0) for r in results),
        "valid_only": sum(r.get("valid_only", 0) for r in results),
        "leak": any(r["leak"] for r in results),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if out["leak"] and raise_on_leak:
        bad = next(r for r in results if r["leak"])
        ex = bad.get("test_only_examples") or bad.get("valid_only_examples")
        raise LeakError(
            f"{what} holds item pairs that only held-out sessions contain: {bad['structure']} has "
            f"{bad.get('test_only', 0)} test-only and {bad.get('valid_only', 0)} validation-only pairs "
            f"(e.g. {ex}); build dataset-level structures from dataset.fit_sessions(fit_splits) only"
        )
    return out


def check_model_structures(model: Model, ds: ProcessedDataset, fit_splits: Sequence[str], *,
                           raise_on_leak: bool = True) -> dict[str, Any]:
    """`check_structures` on everything `model_structures(model)` finds (prepared or fitted model)."""
    return check_structures(ds, fit_splits, model_structures(model), raise_on_leak=raise_on_leak,
                            what=f"{getattr(model, 'name', type(model).__name__)}")


def batch_independence(model: Model, ds: ProcessedDataset, *, split: str = "test", n: int = 32,
                       device: str = "cpu", rtol: float = 1e-3) -> dict[str, Any]:
    """Score the first `n` examples of `split` as one batch, reversed, and one at a time; every
    example's scores must not depend on the batch (up to `rtol` of the score scale).

    Returns {"examples", "max_abs_diff", "scale", "changed_examples", "independent"}.
    """
    import torch

    from sbrbench.evaluate import evaluation_source

    src = evaluation_source(model, ds, split, device)
    m = min(int(n), len(src))
    if m == 0:
        return {"examples": 0, "max_abs_diff": 0.0, "scale": 0.0, "changed_examples": 0, "independent": True}
    was = model.training
    model.eval()
    with torch.no_grad():
        whole = model(src.batch(slice(0, m))).float().cpu()
        rev = np.arange(m - 1, -1, -1, dtype=np.int64)
        idx = torch.as_tensor(rev, device=src.start.device)
        back = model(src.batch(idx, rev)).float().cpu().flip(0)
        single = torch.cat([model(src.batch(slice(i, i + 1))).float().cpu() for i in range(min(m, 8))])
    model.train(was)
    finite = torch.isfinite(whole)
    scale = float(whole[finite].abs().max()) if finite.any() else 0.0

    def diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        both = torch.isfinite(a) & torch.isfinite(b)
        d = torch.where(both, (a - b).abs(), torch.zeros_like(a))
        d = torch.where(torch.isfinite(a) ^ torch.isfinite(b), torch.full_like(a, float("inf")), d)
        return d.amax(dim=1)

    d = torch.maximum(diff(whole, back), torch.cat([diff(whole[: single.shape[0]], single),
                                                     torch.zeros(m - single.shape[0])]))
    tol = rtol * max(scale, 1e-6)
    changed = int((d > tol).sum())
    return {"examples": m, "max_abs_diff": float(d.max()), "scale": scale, "changed_examples": changed,
            "independent": changed == 0}


def audit_model(model: Model, ds: ProcessedDataset, fit_splits: Sequence[str], *, device: str = "cpu",
                name: str | None = None) -> dict[str, Any]:
    """Structures and batch independence of a prepared (neural) or fitted (non-neural) model."""
    label = name or getattr(model, "name", type(model).__name__)
    structures = check_model_structures(model, ds, fit_splits, raise_on_leak=False)
    batch = batch_independence(model, ds, device=device)
    findings = []
    if structures["leak"]:
        findings.append({"check": "structures", "severity": "leak", "message":
                         f"{label}: {structures['test_only']} test-only and {structures['valid_only']} "
                         "validation-only item pairs in its dataset-level structures"})
    elif structures["not_in_fit"]:
        findings.append({"check": "structures", "severity": "warning", "message":
                         f"{label}: {structures['not_in_fit']} item pairs of its structures never co-occur in "
                         "the fitted sessions (none only in held-out sessions)"})
    if not batch["independent"]:
        findings.append({"check": "batch_independence", "severity": "leak", "message":
                         f"{label}: the scores of {batch['changed_examples']} of {batch['examples']} test examples "
                         f"change with the other examples of their batch (max |Δ| {batch['max_abs_diff']:.3g}): "
                         "a batch can read its neighbours' targets"})
    return {"model": label, "fit_splits": list(fit_splits), "structures": structures, "batch": batch,
            "findings": findings}


def library_graphs(ds: ProcessedDataset, fit_splits: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The dataset-level graphs models build (`sbrbench.graphs`): GCE-GNN's ε = 3, top-12 global
    item graph and the session hypergraph of the fitted sessions, as pair structures."""
    from sbrbench.graphs import dataset_graph

    out = {}
    for kind, params in (("global", {"eps": 3, "topk": 12}), ("hyper", {})):
        pairs = _pairs_of(dataset_graph(kind, ds, tuple(fit_splits), None, **params), ds.n_items)
        assert pairs is not None
        out[f"graphs.{kind}"] = pairs
    return out


def _model_for(model_name: str, ds: ProcessedDataset, ds_dir: Path | None, select_on: str, device: str) -> Any:
    from sbrbench.models import MODELS, resolve_config

    cls = MODELS.get(model_name)
    mc = resolve_config(model_name, ds.name, None)
    model = cls(ds.n_items, mc.params)
    fit = ("train",) if select_on == "valid" else FIT_SPLITS
    if model.neural:
        model.prepare(ds, fit, ds_dir / "graphs" if ds_dir is not None else None)
    else:
        model.fit(ds, fit)
    return model.to(device), fit


def audit(
    dataset: str | Path | None = None,
    *,
    protocol: str | None = None,
    data_dir: str | Path | None = None,
    models: Sequence[str] = (),
    run: str | Path | None = None,
    select_on: str = "valid",
    graphs: bool = True,
    device: str = "cpu",
    edges: Sequence[int] = (2, 5),
    thresholds: AuditThresholds | None = None,
) -> dict[str, Any]:
    """`sbrbench audit`: the dataset report, the library graphs' pairs, and each model or run.

    Returns the dataset report of `sbrbench.data.audit.audit_dataset` with `structures` (library
    graphs), `models` (one `audit_model` report each) and every finding in `findings`; `leaks`
    counts the findings of severity `leak` (the CLI then exits non-zero).
    """
    from sbrbench.data.store import load_processed
    from sbrbench.results import RunDir

    t0 = time.perf_counter()
    model_reports = []
    if run is not None:
        rd = RunDir.open(run)
        cfg = rd.read_config()
        model, ds = rd.load_model(device)
        ds_dir = None
        rep = audit_model(model, ds, tuple(cfg.fit_splits), device=device, name=f"{cfg.model} ({rd.path.name})")
        model_reports.append(rep)
    else:
        if dataset is None:
            raise SbrError("audit needs a DATASET (or --run RUN_DIR)")
        ds, ds_dir = load_processed(dataset, protocol, data_dir=data_dir)
    report = audit_dataset(ds, edges=edges, thresholds=thresholds)
    findings = list(report["findings"])
    if graphs:
        fit = ("train",) if select_on == "valid" else FIT_SPLITS
        report["structures"] = check_structures(ds, fit, library_graphs(ds, fit), raise_on_leak=False,
                                                what="the library graphs")
        if report["structures"]["leak"]:
            findings.append({"check": "structures", "severity": "leak",
                             "message": "the library's dataset-level graphs hold test-only item pairs"})
    for name in models:
        model, fit = _model_for(name, ds, ds_dir, select_on, device)
        model_reports.append(audit_model(model, ds, fit, device=device, name=name))
    for rep in model_reports:
        findings += rep["findings"]
    report["models"] = model_reports
    report["findings"] = findings
    report["leaks"] = sum(1 for f in findings if f["severity"] == "leak")
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report
