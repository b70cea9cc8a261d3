"""`sbrbench reproduce TABLE`: run a paper table's models on its datasets, beside the published figures.

Tables are registered in `TABLES` (a `Registry`), so later issues add theirs (TAGNN++, CM-GNN).
A budget decides how much is trained: `full` uses each model's paper settings; `ci` fits the
non-neural baselines in full and trains neural models briefly on the dataset restricted to its
most frequent items (`sbrbench.data.subset.top_items_subset`), which the table labels. The budget actually
used (epochs, training examples, device) is printed in the table and stored in the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbrbench.errors import DataError, SbrError
from sbrbench.registry import Registry


@dataclass(frozen=True)
class Budget:
    """How much a reproduction trains neural models."""

    name: str
    epochs: int | None = None  # None: the model's default
    max_train_examples: int | None = None
    top_items: int | None = None  # train and test neural models on the N most frequent items only


@dataclass(frozen=True)
class TableSpec:
    """A reproducible table: published key, models (sbrbench names), datasets, metrics."""

    key: str
    published_key: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...] = ("P@20", "MRR@20")
    protocol: str | None = "srgnn"
    budgets: dict[str, Budget] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # dataset -> reason when not processed


TABLES: Registry[TableSpec] = Registry("table")

TABLES.register("srgnn-table2")(
    TableSpec(
        key="srgnn-table2",
        published_key="srgnn_table2",
        models=("pop", "spop", "itemknn", "srgnn"),
        datasets=("diginetica", "yoochoose1_64", "yoochoose1_4"),
        budgets={
            "full": Budget("full"),
            "ci": Budget("ci", epochs=1, top_items=3000),
        },
        unavailable={
            "yoochoose1_4": "needs the manual raw file yoochoose-clicks.dat (RecSys Challenge 2015): "
            "run `sbrbench download yoochoose1_4 --from PATH/yoochoose-clicks.dat` then `sbrbench preprocess yoochoose1_4`",
        },
    )
)

TABLES.register("baselines")(
    TableSpec(
        key="baselines",
        published_key="sessionrec_single",
        models=("sknn", "vsknn", "stan", "vstan", "sr", "ar"),
        datasets=("diginetica", "yoochoose1_64", "tmall", "nowplaying"),
        protocol=None,  # each dataset's default protocol (srgnn / gcegnn)
        budgets={"full": Budget("full"), "ci": Budget("ci")},  # non-neural: fitted in full either way
    )
)


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
    progress: bool = False,
) -> dict[str, Any]:
    """Run the table and write `results/reproduce/<table>.{md,json}`; returns the JSON object."""
    from sbrbench import paths
    from sbrbench.io import atomic_write_json, atomic_write_text
    from sbrbench.train import load_processed, train

    spec = TABLES.get(table)
    if budget not in spec.budgets:
        raise SbrError(f"unknown budget {budget!r} for {table}; choose from {', '.join(spec.budgets)}")
    bud = spec.budgets[budget]
    wanted = list(datasets) if datasets else list(spec.datasets)
    for d in wanted:
        if d not in spec.datasets:
            raise SbrError(f"{table} has no dataset {d!r}; it has: {', '.join(spec.datasets)}")
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    for dname in wanted:
        try:
            ds, ds_dir = load_processed(dname, spec.protocol, data_dir=data_dir)
        except DataError as exc:
            unavailable[dname] = spec.unavailable.get(dname, str(exc))
            continue
        for model in spec.models:
            from sbrbench.models import MODELS

            neural = MODELS.get(model).neural
            overrides = {"epochs": bud.epochs} if neural and bud.epochs else {}
            data: Any = ds_dir if ds_dir is not None else ds
            if neural and bud.top_items:
                from sbrbench.data.subset import top_items_subset

                data = top_items_subset(ds, bud.top_items)
            # Non-neural baselines select nothing: they are fitted on the protocol's whole
            # training set, as the papers fit them (recorded as select_on=test in their runs).
            rec = train(
                model, data, results_dir=results_dir, overrides=overrides,
                seed=seed, select_on=select_on if neural else "test", device=device, progress=progress,
                max_train_examples=bud.max_train_examples if neural else None,
            )
            rows.append(_row(spec, dname, model, rec, data if neural and bud.top_items else ds,
                             bud if neural else None, device))
    out = {
        "table": spec.key,
        "budget": budget,
        "device": device,
        "select_on": select_on,
        "rows": rows,
        "unavailable": unavailable,
    }
    out["markdown"] = to_markdown(out, spec)
    root = paths.results_dir(results_dir) / "reproduce"
    atomic_write_text(root / f"{spec.key}.md", out["markdown"])
    atomic_write_json(root / f"{spec.key}.json", {k: v for k, v in out.items() if k != "markdown"})
    return out


def _row(spec: TableSpec, dataset: str, model: str, rec: dict[str, Any], ds: Any,
         bud: Any, device: str) -> dict[str, Any]:
    from sbrbench.published import lookup

    test = rec.get("test") or {}
    ours = {m: test.get(m) for m in spec.metrics}
    subset = bool(bud and bud.top_items)  # published figures are for the full data: no comparison
    paper = {m: None if subset else lookup(spec.published_key, dataset, model, m) for m in spec.metrics}
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
        "run_dir": rec["run_dir"],
    }


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def to_markdown(out: dict[str, Any], spec: TableSpec) -> str:
    """The reproduction as a Markdown table (percentages, ours vs paper)."""
    head = ["dataset", "model"]
    for m in spec.metrics:
        head += [f"{m} ours", f"{m} paper", f"Δ {m}"]
    head += ["data", "epochs", "train examples", "device"]
    lines = [
        f"# {spec.key} (budget {out['budget']}, selected on {out['select_on']}, device {out['device']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in out["rows"]:
        cells = [r["dataset"], r["model"]]
        for m in spec.metrics:
            d = r["delta"][m]
            cells += [_pct(r["ours"][m]), _pct(r["paper"][m]), "—" if d is None else f"{100 * d:+.2f}"]
        cells += [r["data"], str(r["epochs"]) if r["epochs"] is not None else "fit",
                  str(r["train_examples"]), r["device"]]
        lines.append("| " + " | ".join(cells) + " |")
    for d, why in out["unavailable"].items():
        lines.append(f"\n{d}: unavailable — {why}")
    return "\n".join(lines) + "\n"
