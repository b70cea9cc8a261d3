"""`sbrbench reproduce TABLE`: run a paper table's models on its datasets, beside the published figures.

Tables are registered in `TABLES` (a `Registry`), so later issues add theirs (TAGNN++, CM-GNN).
A budget decides how much is trained: `full` uses each model's paper settings; `reduced` trains
every neural row of a table for the same 3 epochs on the full data (full catalogue, training and
test sets: a labelled budget whose rows are comparable with each other, below the papers'); `small`
trains one epoch on the dataset restricted to its 1,000 most frequent items (a CPU budget for the
TAGNN family, whose full-catalogue target attention costs hours per epoch on a CPU); `ci` fits the non-neural
baselines in full and trains neural models briefly on the dataset restricted to its most frequent
items (`sbrbench.data.subset.top_items_subset`), which the table labels. The budget actually
used (epochs, training examples, device) is printed in the table and stored in the JSON.

Long tables survive interruptions: every row is a run record tagged with its row key, so running
the same command again reuses finished rows, resumes interrupted ones and runs the rest;
`reproduce_status` (`sbrbench reproduce TABLE --status`) says where each row stands. Put long runs'
results outside the checkout (`--results-dir` / `$SBRBENCH_RESULTS_DIR`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sbrbench import paths
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.data.store import load_processed
from sbrbench.data.subset import top_items_subset
from sbrbench.errors import DataError, SbrError
from sbrbench.io import atomic_write_json, atomic_write_text
from sbrbench.metrics import DEFAULT_METRICS
from sbrbench.models import MODELS
from sbrbench.paper_figures import lookup
from sbrbench.registry import Registry
from sbrbench.results import RunDir
from sbrbench.train import TrainingCallback, train


@dataclass(frozen=True)
class Budget:
    """How much a reproduction trains neural models."""

    name: str
    epochs: int | None = None  # None: the model's default
    max_train_examples: int | None = None
    top_items: int | None = None  # train and test neural models on the N most frequent items only


@dataclass(frozen=True)
class Entry:
    """One row of a table: a label (the published row's sbrbench name), a model and its overrides."""

    label: str
    model: str
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """A reproducible table: its paper table (a key of `paper_figures.PAPER_TABLES`), models
    (sbrbench names) or variants, datasets, metrics.

    `models` are plain rows; `variants` are extra rows of a model with overrides (an ablation's
    `drop=agc` row, labelled as the published row is named). `claims` are a paper's relative gains
    over its best baseline per dataset (CM-GNN publishes only those): the table then shows the gain
    of `claims_model` over the best of the other rows next to the claimed one.
    """

    key: str
    paper_table: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    protocol: str | None = "srgnn"
    budgets: dict[str, Budget] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # dataset -> reason when not processed
    variants: tuple[Entry, ...] = ()
    notes: tuple[str, ...] = ()
    claims: dict[str, float] = field(default_factory=dict)
    claims_model: str | None = None

    def entries(self) -> tuple[Entry, ...]:
        """Every row: the plain models, then the variants."""
        return tuple(Entry(m, m) for m in self.models) + self.variants


NEURAL_BUDGETS = {
    "full": Budget("full"),
    "reduced": Budget("reduced", epochs=3),  # full data, the same 3 epochs for every neural row
    "small": Budget("small", epochs=1, top_items=1000),
    "ci": Budget("ci", epochs=1, top_items=3000),
}
# Tables with many neural rows: CI checks the wiring on a smaller slice.
SMALL_CI_BUDGETS = {**NEURAL_BUDGETS, "ci": Budget("ci", epochs=1, top_items=1000, max_train_examples=10_000)}


TABLES: Registry[TableSpec] = Registry("table")

TABLES.register("srgnn-table2")(
    TableSpec(
        key="srgnn-table2",
        paper_table="srgnn-table2",
        models=("pop", "spop", "itemknn", "srgnn"),
        datasets=("diginetica", "yoochoose1_64", "yoochoose1_4"),
        budgets=NEURAL_BUDGETS,
        unavailable={
            "yoochoose1_4": "needs the manual raw file yoochoose-clicks.dat (RecSys Challenge 2015): "
            "run `sbrbench download yoochoose1_4 --from PATH/yoochoose-clicks.dat` then `sbrbench preprocess yoochoose1_4`",
        },
    )
)

TABLES.register("baselines")(
    TableSpec(
        key="baselines",
        paper_table="sessionrec-single",
        models=("sknn", "vsknn", "stan", "vstan", "sr", "ar"),
        datasets=("diginetica", "yoochoose1_64", "tmall", "nowplaying"),
        protocol=None,  # each dataset's default protocol (srgnn / gcegnn)
        budgets={"full": Budget("full"), "ci": Budget("ci")},  # non-neural: fitted in full either way
    )
)


_TAGNNPP_NOTE = (
    "TAGNN++ evaluated Diginetica on a DGTN-style split (68,977 test examples); sbrbench uses the "
    "SR-GNN split (60,858), so Diginetica rows compare close but not identical protocols."
)
TABLES.register("tagnnpp-table2")(
    TableSpec(
        key="tagnnpp-table2",
        paper_table="tagnnpp-table2",
        models=("srgnn", "tagnn", "tagnnpp", "tagnnpp-code"),
        datasets=("yoochoose1_64", "diginetica"),
        metrics=("HR@20", "MRR@20"),
        budgets=SMALL_CI_BUDGETS,
        notes=(_TAGNNPP_NOTE, "tagnnpp-code is the released code's behaviour; the paper has no such row."),
    )
)

TABLES.register("tagnnpp-table3")(
    TableSpec(
        key="tagnnpp-table3",
        paper_table="tagnnpp-table3",
        models=("tagnnpp",),
        datasets=("yoochoose1_64", "diginetica"),
        metrics=("HR@20", "MRR@20"),
        budgets=SMALL_CI_BUDGETS,
        variants=tuple(
            Entry(f"tagnnpp-no_{c}", "tagnnpp", (("drop", c),)) for c in ("agc", "gnn", "posemb", "transformer")
        ) + (Entry("tagnnpp-agc_all", "tagnnpp", (("agc_scope", "all"),)),),
        notes=(_TAGNNPP_NOTE, "tagnnpp-agc_all clips the item embedding (the classifier) too; the paper has "
               "no such row: our AGC leaves the classifier unclipped, as NFNets does."),
    )
)

TABLES.register("cmgnn")(
    TableSpec(
        key="cmgnn",
        paper_table="gcegnn",
        models=("srgnn", "gcegnn", "cmgnn"),
        datasets=("tmall", "diginetica", "nowplaying"),
        metrics=("P@10", "P@20", "MRR@10", "MRR@20"),
        protocol=None,  # each dataset's default protocol (srgnn / gcegnn)
        budgets=SMALL_CI_BUDGETS,
        claims={"tmall": 0.037, "diginetica": 0.008, "nowplaying": 0.033},
        claims_model="cmgnn",
        notes=(
            "CM-GNN publishes no absolute figures, only its gains over the best baseline in P@K and MRR@K; "
            "the paper figures shown are GCE-GNN's (SIGIR 2020), the strongest baseline CM-GNN compares with.",
        ),
    )
)


ROW_NOTE = "reproduce.json"


@dataclass(frozen=True)
class Row:
    """One row of a table to run: what it trains, on which data, and its identity across invocations."""

    dataset: str
    entry: Entry
    neural: bool
    overrides: dict[str, Any]
    select_on: str
    max_train_examples: int | None
    key: str


def _plan(spec: TableSpec, bud: Budget, dataset: str, select_on: str, seed: int) -> list[Row]:
    rows = []
    for entry in spec.entries():
        neural = MODELS.get(entry.model).neural
        overrides: dict[str, Any] = dict(entry.overrides)
        if neural and bud.epochs:
            overrides["epochs"] = bud.epochs
        # Non-neural baselines select nothing: they are fitted on the protocol's whole training
        # set, as the papers fit them (recorded as select_on=test in their runs).
        sel = select_on if neural else "test"
        limit = bud.max_train_examples if neural else None
        ident = {"table": spec.key, "budget": bud.name, "dataset": dataset, "label": entry.label,
                 "model": MODELS.canonical(entry.model), "overrides": sorted(overrides.items()), "seed": seed,
                 "select_on": sel, "max_train_examples": limit, "top_items": bud.top_items if neural else None}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        rows.append(Row(dataset, entry, neural, overrides, sel, limit, key))
    return rows


def _find_run(root: Path, row: Row) -> RunDir | None:
    """The latest run directory of `row` under `root/runs` (matched by its row key), or None."""
    found = []
    for note in (root / "runs").glob(f"*/*/*/{ROW_NOTE}"):
        run = RunDir(note.parent)
        meta = run.read_sidecar(ROW_NOTE)
        if meta and meta.get("row_key") == row.key:
            found.append(run)
    return max(found, key=lambda r: r.path.name) if found else None


def _row_status(run: RunDir | None) -> str:
    """done / running / interrupted (resumable) / missing (not started, or nothing to resume)."""
    if run is None:
        return "missing"
    status = run.status()
    return {"complete": "done", "running": "running", "resumable": "interrupted"}.get(status, "missing")


def _datasets(spec: TableSpec, datasets: list[str] | None) -> list[str]:
    wanted = list(datasets) if datasets else list(spec.datasets)
    for d in wanted:
        if d not in spec.datasets:
            raise SbrError(f"{spec.key} has no dataset {d!r}; it has: {', '.join(spec.datasets)}")
    return wanted


def _budget(spec: TableSpec, budget: str) -> Budget:
    if budget not in spec.budgets:
        raise SbrError(f"unknown budget {budget!r} for {spec.key}; choose from {', '.join(spec.budgets)}")
    return spec.budgets[budget]


def reproduce(
    table: str,
    *,
    budget: str = "full",
    datasets: list[str] | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    select_on: str = "valid",
    seed: int = 42,
    threads: int | None = None,
    callback: TrainingCallback | None = None,
) -> dict[str, Any]:
    """Run the table and write `results/reproduce/<table>.{md,json}`; returns the JSON object.

    Every row is an ordinary run record tagged with its row key (`reproduce.json`), so a second
    invocation reuses finished rows, resumes interrupted ones from their last checkpoint and runs
    the rest; Ctrl-C or SIGTERM leaves the row being trained resumable.
    """
    spec = TABLES.get(table)
    bud = _budget(spec, budget)
    wanted = _datasets(spec, datasets)
    root = paths.results_dir(results_dir)
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    for dname in wanted:
        try:
            ds, ds_dir = load_processed(dname, spec.protocol, data_dir=data_dir)
        except DataError as exc:
            unavailable[dname] = spec.unavailable.get(dname, str(exc))
            continue
        subset = top_items_subset(ds, bud.top_items) if bud.top_items else None
        for row in _plan(spec, bud, dname, select_on, seed):
            data: Any = subset if (row.neural and subset is not None) else (ds_dir if ds_dir is not None else ds)
            run = _find_run(root, row)
            status = _row_status(run)
            if status == "running":
                raise SbrError(f"row {row.entry.label} on {dname} is being trained by another process ({run}); "
                               "wait for it or stop it first")
            if callback is not None:
                callback.on_message(f"{spec.key} {dname} {row.entry.label}: "
                                    + {"done": "done, reused", "interrupted": f"resuming {run}"}.get(status, "training"))
            if status == "done":
                assert run is not None
                rec = {**run.read_metrics(), "run_dir": str(run)}
            elif status == "interrupted":
                assert run is not None
                rec = train(resume=run.path, dataset=data if isinstance(data, ProcessedDataset) else None,
                            device=device, threads=threads, callback=callback)
            else:
                note = {"row_key": row.key, "table": spec.key, "budget": bud.name, "dataset": dname,
                        "label": row.entry.label, "seed": seed}
                rec = train(
                    row.entry.model, data, results_dir=results_dir, overrides=row.overrides, seed=seed,
                    select_on=row.select_on, device=device, threads=threads, callback=callback,
                    max_train_examples=row.max_train_examples, sidecars={ROW_NOTE: note},
                )
            rows.append(_row(spec, dname, row.entry.label, rec, subset if (row.neural and subset is not None) else ds,
                             bud if row.neural else None, device))
    out = {
        "table": spec.key,
        "budget": budget,
        "device": device,
        "select_on": select_on,
        "rows": rows,
        "unavailable": unavailable,
        "claims": _claims(spec, rows),
    }
    out["markdown"] = render_reproduction_markdown(out, spec)
    atomic_write_text(root / "reproduce" / f"{spec.key}.md", out["markdown"])
    atomic_write_json(root / "reproduce" / f"{spec.key}.json", {k: v for k, v in out.items() if k != "markdown"})
    return out


def reproduce_status(
    table: str,
    *,
    budget: str = "full",
    datasets: list[str] | None = None,
    results_dir: str | Path | None = None,
    select_on: str = "valid",
    seed: int = 42,
) -> list[dict[str, Any]]:
    """Where each row of a table run stands: done / running / interrupted / missing, epochs and ETA.

    Reads run records only (no dataset, no model). The ETA of an unfinished neural row is its mean
    epoch time (training + selection) times the epochs left (None before its first epoch).
    """
    spec = TABLES.get(table)
    bud = _budget(spec, budget)
    root = paths.results_dir(results_dir)
    out = []
    for dname in _datasets(spec, datasets):
        for row in _plan(spec, bud, dname, select_on, seed):
            run = _find_run(root, row)
            status = _row_status(run)
            done, total, eta = 0, None, None
            if run is not None:
                history = run.read_history()
                done = len(history)
                try:
                    total = int(run.read_config().train.epochs) if row.neural else None
                except SbrError:
                    total = None
                if status != "done" and history and total:
                    per_epoch = sum(float(r.get("seconds", 0)) for r in history) / len(history)
                    eta = per_epoch * max(total - done, 0)
            out.append({"dataset": dname, "row": row.entry.label, "model": row.entry.model, "status": status,
                        "epochs_done": done, "epochs": total, "eta_seconds": eta,
                        "run_dir": str(run) if run is not None else None})
    return out


def _row(spec: TableSpec, dataset: str, model: str, rec: dict[str, Any], ds: Any,
         bud: Any, device: str) -> dict[str, Any]:
    test = rec.get("test") or {}
    ours = {m: test.get(m) for m in spec.metrics}
    best = rec.get("paper_best") or {}  # paper-compatible runs: each metric's best epoch
    subset = bool(bud and bud.top_items)  # published figures are for the full data: no comparison
    paper = {m: None if subset else lookup(spec.paper_table, dataset, model, m) for m in spec.metrics}
    n_fit = len(ds.splits["train"]) + (len(ds.splits["valid"]) if rec["select_on"] == "test" and "valid" in ds.splits else 0)
    examples = min(n_fit, bud.max_train_examples) if bud and bud.max_train_examples else n_fit
    return {
        "dataset": dataset,
        "model": model,
        "ours": ours,
        "paper": paper,
        "delta": {m: (ours[m] - paper[m]) if ours[m] is not None and paper[m] is not None else None
                  for m in spec.metrics},
        "epochs": rec.get("epochs_run") if bud else None,
        "train_examples": examples,
        "data": f"top {bud.top_items} items" if bud and bud.top_items else "full",
        "device": device,
        "select_on": rec["select_on"],
        "stopping": (rec.get("train") or {}).get("stopping"),
        "best_of": {m: best[m]["value"] for m in spec.metrics if m in best} or None,
        "run_dir": rec["run_dir"],
    }


def _claims(spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our relative gain of `claims_model` over the best other row, next to the paper's claim."""
    if not spec.claims_model:
        return []
    out = []
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        mine = next((r for r in rows if r["dataset"] == dname and r["model"] == spec.claims_model), None)
        others = [r for r in rows if r["dataset"] == dname and r["model"] != spec.claims_model]
        if mine is None or not others:
            continue
        gains: dict[str, Any] = {}
        for m in spec.metrics:
            vals = [(r["ours"][m], r["model"]) for r in others if r["ours"][m] is not None]
            if not vals or mine["ours"][m] is None:
                continue
            best, who = max(vals)
            gains[m] = {"best_baseline": who, "gain": (mine["ours"][m] - best) / best if best > 0 else None}
        out.append({"dataset": dname, "model": spec.claims_model, "claimed_gain": spec.claims.get(dname),
                    "ours": gains})
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def render_reproduction_markdown(out: dict[str, Any], spec: TableSpec) -> str:
    """The reproduction as a Markdown document: ours vs the paper's figures in percent, claims, notes."""
    head = ["dataset", "model"]
    for m in spec.metrics:
        head += [f"{m} ours", f"{m} paper", f"Δ {m}"]
    best_of = any(r.get("best_of") for r in out["rows"])
    if best_of:  # what papers that select on the test set print: each metric at its best epoch
        head += [f"{m} best epoch" for m in spec.metrics] + ["stopping"]
    head += ["data", "epochs", "train examples", "device"]
    rows = []
    for r in out["rows"]:
        cells = [r["dataset"], r["model"]]
        for m in spec.metrics:
            d = r["delta"][m]
            cells += [_pct(r["ours"][m]), _pct(r["paper"][m]), "—" if d is None else f"{100 * d:+.2f}"]
        if best_of:
            cells += [_pct((r.get("best_of") or {}).get(m)) for m in spec.metrics] + [r.get("stopping") or "—"]
        cells += [r["data"], str(r["epochs"]) if r["epochs"] is not None else "fit",
                  str(r["train_examples"]), r["device"]]
        rows.append(cells)
    lines = [
        f"# {spec.key} (budget {out['budget']}, selected on {out['select_on']}, device {out['device']})",
        "",
        tabulate(rows, headers=head, tablefmt="github", disable_numparse=True),
    ]
    for d, why in out["unavailable"].items():
        lines.append(f"\n{d}: unavailable — {why}")
    if out.get("claims"):
        lines += ["", f"Relative gain of {spec.claims_model} over the best other row (ours) vs the paper's claim:", ""]
        claims = []
        for c in out["claims"]:
            cells = [c["dataset"], "—" if c["claimed_gain"] is None else f"+{100 * c['claimed_gain']:.1f}%"]
            for m in spec.metrics:
                g = c["ours"].get(m)
                cells.append("—" if not g or g["gain"] is None else f"{100 * g['gain']:+.1f}% vs {g['best_baseline']}")
            claims.append(cells)
        lines.append(tabulate(claims, headers=["dataset", "claimed", *spec.metrics], tablefmt="github",
                              disable_numparse=True))
    if best_of:
        lines += ["", "Note: paper-compatible run (epoch selected on the test set); the best-epoch columns give "
                  "each metric at its own best epoch, as the papers report, and `official` stopping is the "
                  "official code's HR-or-MRR rule. Optimistic by construction."]
    for note in spec.notes:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"
