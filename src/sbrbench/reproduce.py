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
`reproduce_status` (`sbrbench reproduce TABLE --status`) says where each row stands. A row that
trains exactly what a finished row of another table trained (same model, settings, dataset and
protocol, seed, selection and data limits) reuses that record instead of training again. Put long
runs' results outside the checkout (`--results-dir` / `$SBRBENCH_RESULTS_DIR`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sbrbench import paths
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.data.store import load_processed
from sbrbench.data.subset import top_items_subset
from sbrbench.device import check_seeds
from sbrbench.errors import DataError, SbrError
from sbrbench.guards import annotate_reproduction
from sbrbench.honesty import COST_COLUMNS, MARK_LEGEND, cost_cells
from sbrbench.io import atomic_write_json, atomic_write_text
from sbrbench.metrics import DEFAULT_METRICS
from sbrbench.models import MODELS
from sbrbench.multiseed import aggregate_seeds, paired_test
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
    seeds: int = 1  # neural rows run with seeds seed, seed+1, ...: mean ± std and paired tests (`multiseed`)


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
    budget_notes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # budget -> notes of that budget only
    claims: dict[str, float] = field(default_factory=dict)
    claims_model: str | None = None
    claims_models: tuple[str, ...] = ()  # several rows against the same baselines (instead of claims_model)
    claim_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> claimed min, max gain
    optional_models: tuple[str, ...] = ()  # rows included once another issue has registered them
    # per-metric claims (dataset -> metric -> claimed gain) and the paper dataset they come from
    claims_by_metric: dict[str, dict[str, float]] = field(default_factory=dict)
    claims_source: dict[str, str] = field(default_factory=dict)
    # sanity checks: (model, baseline, metric, minimum ratio) — e.g. MCLSR must clearly beat POP
    checks: tuple[tuple[str, str, str, float], ...] = ()
    # fit the non-neural rows on a budget's subset too (so that a check compares the same data)
    baselines_on_subset: bool = False
    # budget -> row label -> overrides of that row under that budget (CI-sized settings of a costly
    # row); the key `max_train_examples` sets that row's limit of training examples
    budget_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def entries(self) -> tuple[Entry, ...]:
        """Every row: the plain models (and the optional ones that are registered), then the variants."""
        present = tuple(m for m in self.optional_models if m in MODELS)
        return tuple(Entry(m, m) for m in self.models + present) + self.variants


NEURAL_BUDGETS = {
    "full": Budget("full"),
    "reduced": Budget("reduced", epochs=3),  # full data, the same 3 epochs for every neural row
    # full data, 10 epochs: the SR-GNN family's step decay (x0.1 every 3 epochs) leaves lr = 1e-6 after
    # epoch 9, so the paper runs' remaining epochs barely move the figures; fits one session on a CPU
    "long": Budget("long", epochs=10),
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
        models=("pop", "spop", "itemknn", "bpr-mf", "fpmc", "gru4rec", "narm", "stamp", "srgnn"),
        datasets=("diginetica", "yoochoose1_64", "yoochoose1_4"),
        budgets=NEURAL_BUDGETS,
        unavailable={
            "yoochoose1_4": "needs the manual raw file yoochoose-clicks.dat (RecSys Challenge 2015): "
            "run `sbrbench download yoochoose1_4 --from PATH/yoochoose-clicks.dat` then `sbrbench preprocess yoochoose1_4`",
        },
        notes=(
            ("BPR-MF and FPMC run on sessions as the paper's baselines did: every training session is a user; a new "
             "session is the mean of its items' factors (BPR-MF) or has no user term (FPMC). BPR-MF follows the GRU4Rec "
             "authors' baseline code, whose NARM-reported figures the paper copies (item biases never learnt, lr "
             "0.01, no regularisation): its factors barely move from their random start, so it ranks the session's "
             "own items first, much as S-POP does. FPMC's settings are not published (MyMediaLite's defaults, "
             "`sbrbench models`); the FPMC figures are the widely cited ones (no Yoochoose 1/4 run in the paper)."),
            ("GRU4Rec is the official PyTorch implementation's algorithm with its tuned parameter files (Diginetica: "
             "BPR-max, 512 units; Yoochoose: the RSC15 file); the paper's GRU4Rec figures are older runs."),
        ),
        budget_notes={"ci": ("CI time: GRU4Rec with 100 units and 512 negatives, NARM and STAMP at lr 0.01, each "
                             "on its first 60,000 training examples of the slice.",)},
        budget_overrides={"ci": {
            "gru4rec": {"layers": "100", "n_sample": 512, "max_train_examples": 60_000},
            "narm": {"lr": 0.01, "max_train_examples": 60_000},
            "stamp": {"lr": 0.01, "max_train_examples": 60_000},
        }},
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
        models=("gru4rec", "narm", "stamp", "repeatnet", "csrm", "srgnn", "gcsan", "tagnn", "lessr", "dgtn",
                "tagnnpp", "tagnnpp-code"),
        datasets=("yoochoose1_64", "diginetica"),
        metrics=("HR@20", "MRR@20"),
        budgets=SMALL_CI_BUDGETS,
        notes=(_TAGNNPP_NOTE, "tagnnpp-code is the released code's behaviour; the paper has no such row.",
               ("DGTN follows kunwuz/DGTN (4f3d668) restated in plain torch, with its inter-session channel "
                "fixed (the released `hidden - self.sgcn(...)` discards it: `dgtn-code`) and neighbour sessions "
                "taken from the fitted training sessions only. The paper's Transformer row is TAGNN++ without "
                "its GNN: `reproduce tagnnpp-table3` (tagnnpp-no_gnn)."),
               "GC-SAN has no official code: RecBole's implementation and defaults (d = 64, one block, one head)."),
        budget_notes={"ci": ("CI time, 10,000 training examples: NARM and STAMP at lr 0.01, CSRM at lr 0.005, "
                             "each in batches of 128; DGTN at lr 0.003.",)},
        budget_overrides={"ci": {
            "narm": {"lr": 0.01, "batch_size": 128},
            "stamp": {"lr": 0.01, "batch_size": 128},
            "csrm": {"lr": 0.005, "batch_size": 128},
            "dgtn": {"lr": 0.003},
        }},
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


# MACL (Pattern Recognition 2025): its datasets as released (ID-only pickles), 5 seeds; the paper gives
# only relative gains over its best baseline (+4.14 % … +11.90 % P@20, +2.25 % … +27.34 % MRR@20).
MACL_BUDGETS = {
    "full": Budget("full", seeds=5),
    "reduced": Budget("reduced", epochs=3, seeds=5),
    "small": Budget("small", epochs=1, top_items=1000, seeds=5),
    "ci": Budget("ci", epochs=1, top_items=500, max_train_examples=1000, seeds=2),
}
TABLES.register("macl")(
    TableSpec(
        key="macl",
        paper_table="macl",
        models=("spop", "stan", "vstan", "srgnn", "gcegnn", "macl-code"),
        optional_models=("gru4rec", "narm", "stamp", "sasrec"),  # the session models of the neural-baselines issue
        datasets=("macl-cellphones", "macl-grocery", "macl-instacart"),
        metrics=("P@10", "P@20", "MRR@10", "MRR@20"),
        protocol="macl",
        budgets=MACL_BUDGETS,
        variants=(Entry("macl (text-only, no features)", "macl"),),
        claims_models=("macl-code", "macl (text-only, no features)"),
        claim_ranges={"P@20": (0.0414, 0.1190), "MRR@20": (0.0225, 0.2734)},
        notes=(
            "MACL's image and text feature files were never published. `macl-code` is the released code, which "
            "overwrites the features it loads with random trainable tables (models-next.md §2.8-1), so it needs none. "
            "The `macl (text-only, no features)` row is the paper reading (proper train/eval, InfoNCE with the "
            "positive in the denominator, adaptive weights over the whole signal set) in the release's text-only "
            "structure, its three text views random trainable tables: no features exist for these datasets.",
            "About half of the inputs are a single item and each test set has ≈ 4.6k-5.3k sessions: seed variance is "
            "large. Non-neural rows (S-POP, STAN, V-STAN) are deterministic and fitted once.",
            "Items of the session are not masked when ranking: 25.8 % of Grocery's test targets repeat one.",
        ),
    )
)


# MCLSR (CIKM 2022) Table 2 under ComiRec's protocol (`comirec`: 80/10/10 users, 80/20 history/targets).
_MCLSR_METRICS = ("Recall@20", "NDCG@20", "HR@20", "Recall@50", "NDCG@50", "HR@50")
_MCLSR_GAINS = {  # the paper's "Improv." column (MCLSR over its best baseline, DuoRec), per metric
    "toys": (0.103, 0.090, 0.087, 0.069, 0.102, 0.089),
    "clothing": (0.067, 0.062, 0.064, 0.079, 0.080, 0.092),
}
TABLES.register("mclsr-table2")(
    TableSpec(
        key="mclsr-table2",
        paper_table="mclsr-table2",
        models=("pop", "sasrec", "comirec-sa", "cl4srec", "duorec", "mclsr"),
        datasets=("amazon-toys", "amazon-beauty", "amazon-sports"),
        metrics=_MCLSR_METRICS + ("NDCG_comirec@20", "NDCG_comirec@50"),
        protocol="comirec",
        budgets={
            "full": Budget("full"),  # each model's paper settings, early stopping on valid Recall@50
            "reduced": Budget("reduced", epochs=20),  # full data, the same 20 epochs for every neural row
            "small": Budget("small", epochs=10, top_items=3000),
            "ci": Budget("ci", epochs=2, top_items=1000),
        },
        # β = 0.1: sbrbench's sensitivity row (β = 1 is the value the paper's reproducers quote; on Toys'
        # validation split β = 0.1 learned faster and further, see the note)
        variants=(Entry("mclsr-beta0.1", "mclsr", (("beta", 0.1),)),),
        claims_models=("mclsr", "mclsr-beta0.1"),
        claims_by_metric={
            "amazon-toys": dict(zip(_MCLSR_METRICS, _MCLSR_GAINS["toys"])),
            "amazon-beauty": dict(zip(_MCLSR_METRICS, _MCLSR_GAINS["clothing"])),
            "amazon-sports": dict(zip(_MCLSR_METRICS, _MCLSR_GAINS["clothing"])),
        },
        claims_source={"amazon-toys": "paper Toys (another dataset)",
                       "amazon-beauty": "paper Clothing (same family)", "amazon-sports": "paper Clothing (same family)"},
        checks=(("mclsr-beta0.1", "pop", "Recall@50", 1.5), ("mclsr", "pop", "Recall@50", 1.1)),
        baselines_on_subset=True,
        notes=(
            ("Datasets: the paper's Toys (75,258 users, 64,444 items) is a different, larger Amazon Toys than ours "
             "(the 2014 5-core, 19,412 users, 11,924 items); its Clothing is the 2014 5-core of the same family as our "
             "Beauty, Sports and Toys, which the paper does not use. Absolute values are therefore not comparable "
             "(the paper columns stay empty); the paper's relative gains of MCLSR over its best baseline (DuoRec) are shown beside "
             "ours: Toys' for amazon-toys, Clothing's for amazon-beauty and amazon-sports."),
            ("The paper prints a +10.3% Recall@20 gain on Toys, but its own Table 2 gives 8.254 / 7.841 = +5.3%; the "
             "printed figure is shown."),
            ("Metrics (ComiRec): targets = every item after the first 80% of a held-out user's sequence (repeats "
             "kept); Recall@K = distinct targets in the top K / number of targets with repeats; NDCG@K is the "
             "standard one (ideal DCG over min(K, distinct targets)); NDCG_comirec@K is ComiRec's hit-normalised "
             "NDCG, shown for comparison only. Model selection: valid Recall@50."),
            ("MCLSR has no official code: sbrbench's is a reference implementation of the paper; every choice the "
             "paper leaves open is a documented hyper-parameter (`sbrbench models`)."),
            ("mclsr uses β = 1 (the interest-level CL weight the paper's reproducers quote). With it the cosine "
             "InfoNCE dominates the first epochs (its gradient does not shrink with the small initial embeddings, "
             "the prediction loss barely moves), so short budgets under-train it; mclsr-beta0.1 is the same model "
             "with β = 0.1, which on amazon-toys' validation split (top 1,000 items, 30 epochs) reached Recall@50 "
             "34.2 against 27.0 for β = 1. Both rows are checked to beat POP on Recall@50 (β = 0.1 by at least "
             "half again, β = 1 by at least a tenth, at the CI budget)."),
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
    seed: int
    # what the row trains, without the table and label: equal for identical rows of two tables
    content: str


def _protocol(spec: TableSpec, dataset: str) -> str | None:
    """The protocol a table's row on `dataset` trains under (the table's, else the dataset's default)."""
    if spec.protocol is not None:
        return spec.protocol
    from sbrbench.data.registry import load_registry

    spec_of = load_registry().get(dataset)
    return spec_of.default_protocol if spec_of is not None else None


def _hash(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan(spec: TableSpec, bud: Budget, dataset: str, select_on: str, seed: int) -> list[Row]:
    rows = []
    for entry in spec.entries():
        neural = MODELS.get(entry.model).neural
        overrides: dict[str, Any] = dict(entry.overrides)
        if neural and bud.epochs:
            overrides["epochs"] = bud.epochs
        extra = dict(spec.budget_overrides.get(bud.name, {}).get(entry.label, {})) if neural else {}
        row_limit = extra.pop("max_train_examples", None)
        overrides.update(extra)
        # Non-neural baselines select nothing: they are fitted on the protocol's whole training
        # set, as the papers fit them (recorded as select_on=test in their runs).
        sel = select_on if neural else "test"
        limit = (row_limit or bud.max_train_examples) if neural else None
        trains = {"dataset": dataset, "model": MODELS.canonical(entry.model), "overrides": sorted(overrides.items()),
                  "seed": seed, "select_on": sel, "max_train_examples": limit,
                  "top_items": bud.top_items if (neural or spec.baselines_on_subset) else None}
        key = _hash({**trains, "table": spec.key, "budget": bud.name, "label": entry.label})
        content = _hash({**trains, "protocol": _protocol(spec, dataset)})
        rows.append(Row(dataset, entry, neural, overrides, sel, limit, key, seed, content))
    return rows


def _same_rows(row: Row) -> set[str]:
    """Row keys of the other tables' rows that train exactly what `row` trains (`Row.content`)."""
    keys: set[str] = set()
    for name in TABLES:
        spec = TABLES.get(name)
        if row.dataset not in spec.datasets:
            continue
        for bud in spec.budgets.values():
            keys.update(r.key for r in _plan(spec, bud, row.dataset, row.select_on, row.seed)
                        if r.content == row.content)
    keys.discard(row.key)
    return keys


def _seeded_plan(spec: TableSpec, bud: Budget, dataset: str, select_on: str, seed: int) -> list[tuple[int, Row]]:
    """(seed, row) for every seed of the budget; non-neural rows are deterministic: the first seed only."""
    return [(s, row) for s in range(seed, seed + bud.seeds) for row in _plan(spec, bud, dataset, select_on, s)
            if row.neural or s == seed]


def _tagged_runs(root: Path) -> Iterator[tuple[RunDir, dict[str, Any]]]:
    """Every run under `root/runs` tagged as a table row, with its tag (`reproduce.json`)."""
    for note in (root / "runs").glob(f"*/*/*/{ROW_NOTE}"):
        run = RunDir(note.parent)
        meta = run.read_sidecar(ROW_NOTE)
        if meta:
            yield run, meta


def _find_run(root: Path, row: Row) -> RunDir | None:
    """The latest run directory of `row` under `root/runs`, or None.

    Matched by its row key; failing that, a finished run of another table's row that trains exactly
    the same (model, settings, dataset and protocol, seed, selection, data limits: `_same_rows`) is
    reused, so a baseline shared by two tables is trained once.
    """
    tagged = list(_tagged_runs(root))
    found = [run for run, meta in tagged if meta.get("row_key") == row.key]
    if not found:
        same = _same_rows(row)
        found = [run for run, meta in tagged if meta.get("row_key") in same and run.status() == "complete"]
    return max(found, key=lambda r: r.path.name) if found else None


def _mean_epoch_seconds(history: list[dict[str, Any]]) -> float:
    return sum(float(h.get("seconds", 0)) for h in history) / len(history)


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


def _check_rows(spec: TableSpec, only_rows: list[str] | None) -> None:
    labels = [e.label for e in spec.entries()]
    for r in only_rows or ():
        if r not in labels:
            raise SbrError(f"{spec.key} has no row {r!r}; it has: {', '.join(labels)}")


def _with_seeds(bud: Budget, seeds: int | None, first: int) -> Budget:
    """The budget with `--seeds N` seeds instead of its own number (seeds `first, first+1, …`)."""
    out = bud if seeds is None else replace(bud, seeds=int(seeds))
    check_seeds(first, out.seeds)
    return out


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
    seeds: int | None = None,
    only_rows: list[str] | None = None,
    train_missing: bool = True,
) -> dict[str, Any]:
    """Run the table and write `results/reproduce/<table>.{md,json}`; returns the JSON object.

    `seeds=N` (`--seeds N`) overrides the budget's number of seeds. Every table marks each row
    against the best row of its dataset (paired tests, Holm–Bonferroni; `sbrbench.guards`), marks
    rows whose ordering flips across seeds, and carries cost columns read from the run records.

    Every row is an ordinary run record tagged with its row key (`reproduce.json`), so a second
    invocation reuses finished rows, resumes interrupted ones from their last checkpoint and runs
    the rest; Ctrl-C or SIGTERM leaves the row being trained resumable.

    `only_rows` (`--rows`) trains only those rows (labels); the other rows appear in the table when
    their records are finished and are listed under `not_run` otherwise. `train_missing=False`
    (`--no-train`) trains nothing: the table of the finished rows, the others under `not_run` (a row
    being trained by another process included), e.g. to look at a table while its rows run.
    """
    spec = TABLES.get(table)
    bud = _with_seeds(_budget(spec, budget), seeds, seed)
    wanted = _datasets(spec, datasets)
    _check_rows(spec, only_rows)
    not_run: dict[str, int] = {}  # 'dataset label' -> seeds not run
    root = paths.results_dir(results_dir)
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    unfitted = _UnfittedTargets(_metric_k(spec))
    for dname in wanted:
        try:
            ds, ds_dir = load_processed(dname, spec.protocol, data_dir=data_dir)
        except DataError as exc:
            unavailable[dname] = spec.unavailable.get(dname, str(exc))
            continue
        subset = top_items_subset(ds, bud.top_items) if bud.top_items else None
        for row_seed, row in _seeded_plan(spec, bud, dname, select_on, seed):
            on_subset = (row.neural or spec.baselines_on_subset) and subset is not None
            data: Any = subset if on_subset else (ds_dir if ds_dir is not None else ds)
            run = _find_run(root, row)
            status = _row_status(run)
            if status != "done" and (not train_missing or (only_rows and row.entry.label not in only_rows)):
                not_run[f"{dname} {row.entry.label}"] = not_run.get(f"{dname} {row.entry.label}", 0) + 1
                continue
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
                        "label": row.entry.label, "seed": row_seed}
                rec = train(
                    row.entry.model, data, results_dir=results_dir, overrides=row.overrides, seed=row_seed,
                    select_on=row.select_on, device=device, threads=threads, callback=callback,
                    max_train_examples=row.max_train_examples, sidecars={ROW_NOTE: note},
                )
            rows.append(_row(spec, dname, row.entry.label, rec, subset if on_subset else ds,
                             replace(bud, max_train_examples=row.max_train_examples) if row.neural else None, device))
            if on_subset and not row.neural:
                rows[-1]["data"] = f"top {bud.top_items} items"
            rows[-1]["seed"] = row_seed
            unfitted.add(dname, row.entry.label, rec, subset if on_subset else ds, rows[-1]["data"])
    if unavailable and not rows:
        raise SbrError("nothing to reproduce: " + "; ".join(f"{name}: {why}" for name, why in unavailable.items()))
    if bud.seeds > 1:
        rows = aggregate_seeds(rows, spec.metrics)
    out = {
        "table": spec.key,
        "budget": budget,
        "device": device,
        "select_on": select_on,
        "seeds": list(range(seed, seed + bud.seeds)),
        "rows": rows,
        "unavailable": unavailable,
        "not_run": [k + (f" ({n} seeds)" if n > 1 else "") for k, n in not_run.items()],
        "claims": _claims(spec, rows),
        "checks": _checks(spec, rows),
        "unfitted_targets": unfitted.summary(),
    }
    out["honesty"] = annotate_reproduction(out["rows"], spec.metrics)  # marks, seed stability, cost
    out["markdown"] = render_reproduction_markdown(out, spec)
    atomic_write_text(root / "reproduce" / f"{spec.key}.md", out["markdown"])
    atomic_write_json(root / "reproduce" / f"{spec.key}.json", {k: v for k, v in out.items() if k != "markdown"})
    return out


def _metric_k(spec: TableSpec) -> int:
    """The cut-off of the table's hit-rate metric (P@K / HR@K / Recall@K), else its largest K."""
    ks = [int(m.split("@")[1]) for m in spec.metrics if "@" in m]
    hit = [int(m.split("@")[1]) for m in spec.metrics if m.split("@")[0] in ("P", "HR", "Recall")]
    return max(hit or ks or [20])


class _UnfittedTargets:
    """Per dataset and fit: the share of test examples whose target no fitted session contains
    (`ProcessedDataset.unfitted_examples`) and each row's hit rate at K on them, from its stored ranks."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._index: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._groups: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}

    def add(self, dataset: str, label: str, rec: dict[str, Any], ds: ProcessedDataset, data: str = "full") -> None:
        import numpy as np

        run = RunDir(rec["run_dir"])
        try:
            fit = tuple(run.read_config().fit_splits)
            ranks = run.load_ranks("test")
        except SbrError:
            return  # a record without its config or ranks: nothing to say about it
        if ranks.ndim != 1 or ranks.shape[0] != len(ds.split("test")):
            return
        key = (id(ds), fit)
        if key not in self._index:
            self._index[key] = ds.unfitted_examples("test", fit)
        index = self._index[key]
        if not index.size:
            return
        hit = float(np.mean((ranks[index] >= 1) & (ranks[index] <= self.k)))
        group = self._groups.get((dataset, data, fit))
        if group is None:
            group = self._groups[(dataset, data, fit)] = {
                "dataset": dataset, "data": data, "fit_splits": list(fit), "examples": int(ranks.shape[0]),
                "unfitted_examples": int(index.size), "k": self.k, "hit_rate": {}}
            if "valid" not in fit and "valid" in ds.splits:  # how many only the held-out sessions hold
                group["validation_only_examples"] = int(index.size - ds.unfitted_examples("test", (*fit, "valid")).size)
        group["hit_rate"][label] = max(hit, group["hit_rate"].get(label, 0.0))

    def summary(self) -> list[dict[str, Any]]:
        return list(self._groups.values())


def _how_many(part: int, whole: int) -> str:
    return "all" if part == whole else f"{part:,}"


def _unfitted_notes(out: dict[str, Any]) -> list[str]:
    notes = []
    for g in out.get("unfitted_targets") or ():
        share = 100 * g["unfitted_examples"] / max(g["examples"], 1)
        held_out = bool(g.get("validation_only_examples"))
        rates = g["hit_rate"]
        if all(v == 0 for v in rates.values()):
            seen = f"every row's hit rate @{g['k']} on them is 0 ({', '.join(rates)}), a ceiling they share"
        else:
            seen = (f"hit rate @{g['k']} on them: " + ", ".join(f"{m} {100 * v:.2f}%" for m, v in rates.items())
                    + " (a row can still recommend an item clicked earlier in the same session)")
        notes.append(
            f"{share:.2f}% of the {g['dataset']} test examples"
            + ("" if g.get("data", "full") == "full" else f" ({g['data']})")
            + f" ({g['unfitted_examples']:,}) have a target that no "
            f"session fitted on {' and '.join(g['fit_splits'])} contains"
            + (f" ({_how_many(g['validation_only_examples'], g['unfitted_examples'])} of them: items that only the "
               "validation sessions, held out for selection, hold)" if held_out else "")
            + f"; no row saw these targets in training: {seen}"
            + ("; they are part of a Δ from figures fitted on the whole training set." if held_out else "."))
    return notes


def reproduce_status(
    table: str,
    *,
    budget: str = "full",
    datasets: list[str] | None = None,
    results_dir: str | Path | None = None,
    select_on: str = "valid",
    seed: int = 42,
    seeds: int | None = None,
    only_rows: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Where each row of a table run stands: done / running / interrupted / missing, epochs and ETA.

    Reads run records only (no dataset, no model). The ETA of an unfinished neural row is its mean
    epoch training time times the epochs left (a running row's part of its current epoch from its
    heartbeat, an interrupted row's from where it stopped); a row without a finished epoch of its
    own projects its epoch time from the part of its first epoch done, else takes the mean epoch
    time of the same row (table, budget, dataset, label) under other seeds (`eta_estimated`: True
    for both; `eta_from` says which), else None.
    """
    spec = TABLES.get(table)
    bud = _with_seeds(_budget(spec, budget), seeds, seed)
    _check_rows(spec, only_rows)
    root = paths.results_dir(results_dir)
    out: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], tuple[str, str]]] = []  # unfinished rows without an epoch of their own
    for dname in _datasets(spec, datasets):
        for row_seed, row in _seeded_plan(spec, bud, dname, select_on, seed):
            if only_rows and row.entry.label not in only_rows:
                continue
            run = _find_run(root, row)
            status = _row_status(run)
            done, total, history, part = 0, bud.epochs if row.neural else None, [], 0.0
            part_seconds: float | None = None
            if run is not None:
                history = run.read_history()
                done = len(history)
                part, part_seconds = _part_of_epoch_done(run, status, history)
                try:
                    total = int(run.read_config().train.epochs) if row.neural else None
                except SbrError:
                    pass
            label = f"{row.entry.label} (seed {row_seed})" if bud.seeds > 1 and row.neural else row.entry.label
            r = {"dataset": dname, "row": label, "model": row.entry.model, "status": status,
                 "epochs_done": done, "epoch_part_done": part, "epochs": total, "eta_seconds": None,
                 "eta_estimated": False, "eta_from": None, "seed": row_seed,
                 "run_dir": str(run) if run is not None else None}
            if status != "done" and total:
                per_epoch = (_mean_epoch_seconds(history) if history
                             else part_seconds / part if part > 0 and part_seconds else None)
                if per_epoch is not None:
                    r["eta_seconds"] = per_epoch * max(total - done - part, 0)
                    r["eta_estimated"] = not history
                    r["eta_from"] = "its epochs" if history else "part of its first epoch"
                else:
                    pending.append((r, (dname, row.entry.label)))
            out.append(r)
    if pending:  # the same row (table, budget, dataset, label) under other seeds
        wanted = {k for _, k in pending}
        times: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for run, meta in _tagged_runs(root):
            key = (str(meta.get("dataset")), str(meta.get("label")))
            if meta.get("table") == spec.key and meta.get("budget") == bud.name and key in wanted:
                times.setdefault(key, []).extend(run.read_history())
        for r, key in pending:
            if times.get(key):
                r["eta_seconds"] = _mean_epoch_seconds(times[key]) * max(
                    r["epochs"] - r["epochs_done"] - r["epoch_part_done"], 0)
                r["eta_estimated"] = True
                r["eta_from"] = "other seeds"
    return out


def _part_of_epoch_done(run: RunDir, status: str, history: list[dict[str, Any]]) -> tuple[float, float | None]:
    """How far into its current epoch a run is, and the training seconds that part took.

    A running row reports it in the heartbeat of its `running.json`; an interrupted one in its
    record's `stopped_in_epoch` (records written before that carried `seconds`: the training seconds
    not accounted for by finished epochs). (0, None) when unknown or between epochs.
    """
    try:
        if status == "running":
            at = (run.running_mark() or {}).get("progress") or {}
            if int(at["epoch"]) != len(history) + 1:
                return 0.0, None
            seconds = float(at["seconds"])
        elif status == "interrupted":
            rec = run.read_metrics()
            at = rec.get("stopped_in_epoch") or {}
            seconds = float(at.get("seconds", float(rec.get("train_seconds", 0.0))
                                    - sum(float(h.get("seconds", 0.0)) for h in history)))
        else:
            return 0.0, None
        part = min(max(float(at["batch"]) / float(at["batches"]), 0.0), 1.0)
    except (SbrError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0, None
    return part, seconds if seconds > 0 else None


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


def _claims_models(spec: TableSpec) -> tuple[str, ...]:
    return spec.claims_models or ((spec.claims_model,) if spec.claims_model else ())


def _claims(spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our relative gain of each claims row over the best other row, next to the paper's claim;
    with run directories, a paired test of the two rows on the test examples (`multiseed`)."""
    models = _claims_models(spec)
    out = []
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        for model in models:
            mine = next((r for r in rows if r["dataset"] == dname and r["model"] == model), None)
            # baselines on the same data only (a budget may train neural rows on a subset)
            others = [r for r in rows if r["dataset"] == dname and r["model"] not in models
                      and r.get("data") == (mine or {}).get("data")]
            if mine is None or not others:
                continue
            gains: dict[str, Any] = {}
            for m in spec.metrics:
                vals = [(r["ours"][m], r["model"]) for r in others if r["ours"][m] is not None]
                if not vals or mine["ours"][m] is None:
                    continue
                best, who = max(vals)
                gains[m] = {"best_baseline": who, "gain": (mine["ours"][m] - best) / best if best > 0 else None}
                base = next(r for r in others if r["model"] == who)
                if mine.get("run_dir") and base.get("run_dir"):
                    gains[m]["test"] = paired_test(base.get("run_dirs", [base["run_dir"]]),
                                                   mine.get("run_dirs", [mine["run_dir"]]), m)
            out.append({"dataset": dname, "model": model, "claimed_gain": spec.claims.get(dname),
                        "claimed_range": {m: list(r) for m, r in spec.claim_ranges.items()} or None, "ours": gains,
                        "claimed_by_metric": spec.claims_by_metric.get(dname),
                        "claimed_source": spec.claims_source.get(dname)})
    return out


def _checks(spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's sanity checks per dataset: `model` / `baseline` on `metric` >= the ratio."""
    out = []
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        for model, base, metric, ratio in spec.checks:
            ra = next((r for r in rows if r["dataset"] == dname and r["model"] == model), None)
            rb = next((r for r in rows if r["dataset"] == dname and r["model"] == base), None)
            if ra is None or rb is None or ra.get("data") != rb.get("data"):  # the same data only
                continue
            a, b = ra["ours"].get(metric), rb["ours"].get(metric)
            if a is None or b is None:
                continue
            got = a / b if b > 0 else float("inf")
            out.append({"dataset": dname, "model": model, "baseline": base, "metric": metric, "ratio": got,
                        "min_ratio": ratio, "ok": bool(got >= ratio)})
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _delta_notes(out: dict[str, Any], spec: TableSpec) -> list[str]:
    """What a Δ from a published figure can and cannot mean in this table (seeds, budget, selection)."""
    if not any(d is not None for r in out["rows"] for d in r["delta"].values()):
        return []
    notes = []
    if len(out.get("seeds") or ()) <= 1:
        notes.append("one seed per row: the seed spread is not measured, so no Δ is judged against it "
                     "(`--seeds N` runs N seeds and prints mean ± std).")
    bud = spec.budgets.get(out["budget"])
    if bud is not None and bud.epochs is not None and out["select_on"] == "valid":
        notes.append(f"every neural row trains {bud.epochs} epoch{'s' * (bud.epochs != 1)} and is selected on "
                     "validation; the published figures come from the papers' own budgets, most with the epoch "
                     "picked on the test set, so a Δ mixes budget, selection and model.")
    return notes


def render_reproduction_markdown(out: dict[str, Any], spec: TableSpec) -> str:
    """The reproduction as a Markdown document: ours vs the paper's figures in percent, claims, notes."""
    head = ["dataset", "model"]
    for m in spec.metrics:
        head += [f"{m} ours", f"{m} paper", f"Δ {m}"]
    best_of = any(r.get("best_of") for r in out["rows"])
    if best_of:  # what papers that select on the test set print: each metric at its best epoch
        head += [f"{m} best epoch" for m in spec.metrics] + ["stopping"]
    head += ["data", "epochs", "train examples", "device"]
    head += [h for h, _ in COST_COLUMNS if h != "device"]  # read from the run records
    rows = []
    for r in out["rows"]:
        cells = [r["dataset"], r["model"]]
        for m in spec.metrics:
            d = r["delta"][m]
            sd = (r.get("std") or {}).get(m)
            mark = (r.get("marks") or {}).get(m, "")  # against the dataset's best row; ~ seed-unstable
            cells += [_pct(r["ours"][m]) + ("" if sd is None else f" ± {100 * sd:.2f}") + (f" {mark}" if mark else ""),
                      _pct(r["paper"][m]), "—" if d is None else f"{100 * d:+.2f}"]
        if best_of:
            cells += [_pct((r.get("best_of") or {}).get(m)) for m in spec.metrics] + [r.get("stopping") or "—"]
        cells += [r["data"], str(r["epochs"]) if r["epochs"] is not None else "fit",
                  str(r["train_examples"]), r["device"]]
        cells += [c for (h, _), c in zip(COST_COLUMNS, cost_cells(r.get("cost"))) if h != "device"]
        rows.append(cells)
    lines = [
        f"# {spec.key} (budget {out['budget']}, selected on {out['select_on']}, device {out['device']}"
        + (f", seeds {', '.join(map(str, out['seeds']))}: mean ± std" if len(out.get("seeds") or ()) > 1 else "") + ")",
        "",
        tabulate(rows, headers=head, tablefmt="github", disable_numparse=True),
    ]
    for d, why in out["unavailable"].items():
        lines.append(f"\n{d}: unavailable — {why}")
    if out.get("not_run"):
        lines.append(f"\nNot in the table (not finished at this budget; `--rows` or `--no-train` left them out): "
                     f"{', '.join(out['not_run'])}")
    if out.get("claims"):
        models = _claims_models(spec)
        lines += ["", f"Relative gain of {', '.join(models)} over the best other row (ours) vs the paper's claim:", ""]
        if spec.claim_ranges:
            lines += ["Claimed (paper, over its best baseline; which dataset has which gain is not stated): "
                      + ", ".join(f"{m} +{100 * lo:.2f}% … +{100 * hi:.2f}%" for m, (lo, hi) in spec.claim_ranges.items())
                      + ". p: two-sided Wilcoxon signed-rank test on the per-example values (seed-averaged).", ""]
        claims = []
        for c in out["claims"]:
            cells = [c["dataset"]] + ([c["model"]] if len(models) > 1 else [])
            cells.append(c.get("claimed_source") or ("—" if c["claimed_gain"] is None else f"+{100 * c['claimed_gain']:.1f}%"))
            for m in spec.metrics:
                g = c["ours"].get(m)
                cell = "—" if not g or g["gain"] is None else f"{100 * g['gain']:+.1f}% vs {g['best_baseline']}"
                claimed = (c.get("claimed_by_metric") or {}).get(m)
                if claimed is not None:
                    cell += f"; paper {100 * claimed:+.1f}%"
                if g and g.get("test"):
                    cell += f" (p={g['test']['wilcoxon']:.2g})"
                cells.append(cell)
            claims.append(cells)
        lines.append(tabulate(claims, headers=["dataset", *(["model"] if len(models) > 1 else []), "claimed",
                                               *spec.metrics], tablefmt="github", disable_numparse=True))
    for c in out.get("checks") or ():
        lines += ["", f"Check ({c['dataset']}): {c['model']} / {c['baseline']} on {c['metric']} = {c['ratio']:.2f} "
                  f"(needs >= {c['min_ratio']:.2f}): {'ok' if c['ok'] else 'FAILED'}"]
    if best_of:
        lines += ["", "Note: paper-compatible run (epoch selected on the test set); the best-epoch columns give "
                  "each metric at its own best epoch, as the papers report, and `official` stopping is the "
                  "official code's HR-or-MRR rule. Optimistic by construction."]
    if any(r.get("marks") for r in out["rows"]):
        lines += ["", f"Marks: {MARK_LEGEND}. Cost columns are read from the run records (mean over seeds)."]
    lines += [f"\nNote: {n}" for n in (*_delta_notes(out, spec), *_unfitted_notes(out))]
    for note in (*spec.notes, *spec.budget_notes.get(out["budget"], ())):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"
