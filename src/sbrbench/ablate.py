"""Ablation and sensitivity studies: a model, its variants, the same data and seeds, paired tests.

`ablate(model, dataset, drops=[...], varies={...}, seeds=N)` builds the variants

* `full`: the model as configured (defaults, dataset defaults, the user's overrides);
* `-C` for every `--drop C` (hyper-parameter `drop` gains C; `C1,C2` drops both in one variant);
* `P=v` for every value of every `--vary P=v1,v2,...` (one parameter at a time, not a grid).
  `P` may be a hyper-parameter or a training option. A variant whose resolved configuration equals
  the full model's (e.g. the default value of `P`) *is* the full model: its runs are reused.

Every variant is trained with every seed through `sbrbench.train.train` on the same processed data;
each run directory gets a sidecar `ablation.json` naming the study and the variant. The full model
is always the reference. For each variant and metric the summary holds the mean ± std over seeds,
the absolute change against the full model (computed per seed, then mean ± std), the relative
change (mean change / the full model's mean, in %), and paired significance tests on the test split's per-example values:

* `p` (the reported one): Wilcoxon signed-rank and paired t-test on the per-example values
  averaged over seeds (one pair per test example: no example is counted more than once, so seeds do
  not inflate the sample size);
* `per_seed`: `sbrbench.evaluate.compare_runs` between the full model and the variant for each
  seed (same seed on both sides).

Seeds: neural models default to 3 seeds (42, 43, 44); non-neural models to one, since their fit is
deterministic. A non-neural model with a `seed` hyper-parameter (the samplers of the KNN family)
gets the run seed there too, unless the user fixed it, so its seeds are real replicates.

Outputs `results/ablations/<model>-<dataset>-<UTC time>.{json,md,png}` (atomic writes).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from sbrbench import paths
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.data.store import load_processed
from sbrbench.device import check_seeds
from sbrbench.errors import SbrError
from sbrbench.evaluate import compare_runs
from sbrbench.guards import annotate_ablation
from sbrbench.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sbrbench.metrics import DEFAULT_METRICS, parse_metric, per_example_from_ranks
from sbrbench.models import MODELS, TrainOptions, resolve_config
from sbrbench.models.base import dropped
from sbrbench.plots import ablation_bar_chart
from sbrbench.registry import unknown_name_message
from sbrbench.results import RANK_SPLITS, RunDir
from sbrbench.significance import paired_tests
from sbrbench.train import TrainingCallback, train

DEFAULT_SEED = 42
REFERENCE = "full"


@dataclasses.dataclass
class Variant:
    """One configuration of an ablation study."""

    name: str
    kind: str  # "full", "drop" or "vary"
    overrides: dict[str, Any]
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    alias_of: str | None = None  # the variant whose runs this one reuses (same resolved config)



# ---- validation ----------------------------------------------------------------------------------
def _metric_names(metrics: Sequence[str]) -> list[str]:
    out: list[str] = []
    for m in metrics:
        fam, k = parse_metric(m, 20)
        if f"{fam}@{k}" not in out:
            out.append(f"{fam}@{k}")
    return out


def seed_list(seeds: int | Sequence[int] | None, neural: bool, first: int = DEFAULT_SEED) -> list[int]:
    """The seeds of a study: a count N → `first, first+1, ...`; a list is kept; None → 3 or 1."""
    if seeds is None:
        seeds = 3 if neural else 1
    if isinstance(seeds, int):
        check_seeds(first, seeds)
        return [first + i for i in range(seeds)]
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise SbrError("the seed list must be non-empty and without repeats")
    for s in out:
        check_seeds(s)
    return out


def _config_key(cfg: Any) -> tuple:
    return (tuple(sorted(dataclasses.asdict(cfg.params).items())), tuple(sorted(dataclasses.asdict(cfg.train).items())))


def build_variants(
    model: str,
    dataset_name: str | None,
    drops: Sequence[str],
    varies: dict[str, list[str]],
    overrides: dict[str, Any] | None = None,
) -> list[Variant]:
    """Validate `drops` and `varies` against the model and list the variants (`full` first).

    Unknown components, unknown parameters or badly typed values raise one-line `SbrError`s.
    """

    cls = MODELS.get(model)
    name = cls.name
    base = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not drops and not varies:
        raise SbrError("ablate needs at least one --drop COMPONENT or --vary PARAM=v1,v2,...")
    full_cfg = resolve_config(name, dataset_name, base)
    variants = [Variant(REFERENCE, "full", dict(base))]
    seen = {_config_key(full_cfg): REFERENCE}

    def add(v: Variant) -> None:
        cfg = resolve_config(name, dataset_name, v.overrides)
        key = _config_key(cfg)
        if key in seen:
            if seen[key] == v.name:
                return
            v.alias_of = seen[key]
        else:
            seen[key] = v.name
        if all(v.name != o.name for o in variants):
            variants.append(v)

    if drops:
        if not cls.components:
            raise SbrError(
                f"{name} declares no components, so --drop cannot be used; vary its hyper-parameters "
                "with --vary PARAM=v1,v2 instead"
            )
        for spec in drops:
            comps = [cls.component_aliases.get(c.strip(), c.strip()) for c in spec.split(",") if c.strip()]
            if not comps:
                raise SbrError("--drop needs a component name")
            for c in comps:
                if c not in cls.components:
                    raise SbrError(unknown_name_message(f"component of {name}", c, sorted(cls.components)))
            off = sorted(dropped(full_cfg.params) | set(comps))
            add(Variant("-" + ",".join(comps), "drop", {**base, "drop": ",".join(off)}, {"drop": comps}))

    ptypes = {f.name for f in dataclasses.fields(cls.Params)}
    ttypes = {f.name for f in dataclasses.fields(TrainOptions)}
    for key, values in varies.items():
        if key not in ptypes and key not in ttypes:
            valid = sorted(ptypes) + (sorted(ttypes) if cls.neural else [])
            raise SbrError(unknown_name_message(f"setting of {name} for --vary", key, valid))
        if key in ttypes and not cls.neural:
            raise SbrError(f"{name} is not trained by gradient descent: the training option {key!r} has no effect on it")
        for value in values:
            add(Variant(f"{key}={value}", "vary", {**base, key: value}, {"param": key, "value": value}))
    return variants


# ---- aggregation --------------------------------------------------------------------------------
def _std(x: np.ndarray) -> float | None:
    return float(np.std(x, ddof=1)) if x.shape[0] > 1 else None


def _per_example(run_dir: str, split: str, metric: str) -> np.ndarray:
    return per_example_from_ranks(RunDir(run_dir).load_ranks(split), metric)


def _paired_p(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    t = paired_tests(a, b)
    return {"wilcoxon": t["wilcoxon"]["pvalue"], "ttest_rel": t["ttest_rel"]["pvalue"], "n_examples": t["n_examples"]}


def summarise(
    variants: list[dict[str, Any]], metrics: Sequence[str], split: str
) -> list[dict[str, Any]]:
    """Add mean ± std, changes against the reference and paired tests to each variant (in place).

    Each variant dict holds `name` and `runs` (a list of {seed, run_dir}); the first is the reference.
    """
    ref = variants[0]
    ref_vals = {m: [_per_example(r["run_dir"], split, m) for r in ref["runs"]] for m in metrics}
    for v in variants:
        v["mean"], v["std"], v["change"], v["tests"] = {}, {}, {}, {}
        for m in metrics:
            vals = [_per_example(r["run_dir"], split, m) for r in v["runs"]]
            per_seed = np.array([float(np.nanmean(x)) for x in vals])
            ref_seed = np.array([float(np.nanmean(x)) for x in ref_vals[m]])
            for r, val in zip(v["runs"], per_seed):
                r.setdefault("metrics", {})[m] = float(val)
            v["mean"][m], v["std"][m] = float(per_seed.mean()), _std(per_seed)
            if v is ref:
                continue
            delta = per_seed - ref_seed
            ref_mean, sd = float(ref_seed.mean()), _std(delta)
            v["change"][m] = {
                "abs": float(delta.mean()), "abs_std": sd,
                "rel_pct": 100.0 * float(delta.mean()) / ref_mean if ref_mean else None,
                "rel_pct_std": 100.0 * sd / ref_mean if ref_mean and sd is not None else None,
            }
            pooled = _paired_p(np.mean(np.stack(ref_vals[m]), axis=0), np.mean(np.stack(vals), axis=0))
            seeds = []
            for ra, rb in zip(ref["runs"], v["runs"]):
                c = compare_runs(ra["run_dir"], rb["run_dir"], split, m)
                seeds.append({"seed": ra["seed"], "diff": c["diff"], "wilcoxon": c["wilcoxon"]["pvalue"],
                              "ttest_rel": c["ttest_rel"]["pvalue"]})
            v["tests"][m] = {**pooled, "per_seed": seeds}
    return variants


# ---- rendering -----------------------------------------------------------------------------------
def _fmt_pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (values in %, changes in points and %)."""
    metrics = result["metrics"]
    header = ["variant"]
    for m in metrics:
        header += [m, f"Δ{m}", "Δ%", "p"]
    rows = []
    for v in result["variants"]:
        name = v["name"] + (f" (= {v['alias_of']})" if v.get("alias_of") else "")
        row = [name]
        for m in metrics:
            stab = (v.get("stability") or {}).get(m)  # `~`: its ordering against another variant flips across seeds
            row.append(_fmt_pct(v["mean"][m], v["std"][m]) + (" ~" if stab is not None and not stab["stable"] else ""))
            ch = v["change"].get(m)
            if ch is None:
                row += ["ref", "", ""]
                continue
            sign = "+" if ch["abs"] >= 0 else ""
            row.append(sign + _fmt_pct(ch["abs"], ch["abs_std"]))
            rel = ch["rel_pct"]
            row.append("–" if rel is None else f"{'+' if rel >= 0 else ''}{rel:.1f}%")
            row.append(_fmt_p(v["tests"][m]["wilcoxon"]))
        rows.append(row)
    return header, rows


def render_ablation_markdown(result: dict[str, Any]) -> str:
    """The study as a Markdown document (title, settings, table, notes)."""
    header, rows = table_rows(result)
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"# Ablation: {result['model']} on {result['dataset']} ({result['protocol']})",
        "",
        f"Split `{result['split']}`, model selection on `{result['select_on']}`, seeds {seeds}; "
        f"values in %, mean ± std over seeds; Δ against `{REFERENCE}` (per seed, then averaged); "
        "p: two-sided Wilcoxon signed-rank on per-example values averaged over seeds (Holm-adjusted in the "
        "JSON, `wilcoxon_holm`); `~`: the variant's ordering against another flips across seeds.",
        "",
        tabulate(rows, headers=header, tablefmt="github", disable_numparse=True),
    ]
    if result.get("overrides"):
        lines += ["", "Overrides: " + ", ".join(f"`{k}={v}`" for k, v in result["overrides"].items())]
    return "\n".join(lines) + "\n"


def rich_table(result: dict[str, Any]) -> Any:
    """The summary as a `rich.table.Table`."""
    from rich.table import Table

    header, rows = table_rows(result)
    t = Table(*header, title=f"{result['model']} on {result['dataset']}: ablation ({result['split']}, %, "
                             f"{len(result['seeds'])} seed(s))")
    t.columns[0].no_wrap = True
    for r in rows:
        t.add_row(*r)
    return t


# ---- the study ------------------------------------------------------------------------------------
def _output_stem(root: Path, model: str, dataset: str) -> Path:
    out = root / "ablations"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1000):
        stem = out / (f"{model}-{dataset}-{stamp}" + (f"-{n}" if n else ""))
        if not any(stem.with_suffix(s).exists() for s in (".json", ".md", ".png")):
            return stem
    raise SbrError(f"could not find a free file name under {out}")


def ablate(
    model: str,
    dataset: str | Path | ProcessedDataset,
    *,
    drops: Sequence[str] = (),
    varies: dict[str, list[str]] | None = None,
    seeds: int | Sequence[int] | None = None,
    first_seed: int = DEFAULT_SEED,
    overrides: dict[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    select_on: str = "valid",
    select_metric: str | None = None,
    protocol: str | None = None,
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_train_examples: int | None = None,
    callback: TrainingCallback | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Train the full model and every variant with every seed; summarise and write the report.

    Returns the study as a dict: settings, `variants` (each with `runs`, `mean`, `std`, `change`,
    `tests`), `markdown` and `files` ({json, md, png}). See the module docstring for the statistics.
    `metrics` default to the protocol's (`dataset.info["report_metrics"]`, else P@20 and MRR@20),
    `select_metric` to the protocol's selection metric (else MRR@20).
    """
    cls = MODELS.get(model)
    name = cls.name
    varies = dict(varies or {})
    if split not in RANK_SPLITS:
        raise SbrError(unknown_name_message("split", split, list(RANK_SPLITS)))
    mnames = _metric_names(metrics or DEFAULT_METRICS)  # fail fast on a bad name
    ds_hint = dataset.name if isinstance(dataset, ProcessedDataset) else str(dataset)
    build_variants(name, ds_hint, drops, varies, overrides)  # fail fast, before loading data
    seed_values = seed_list(seeds, cls.neural, first_seed)
    if isinstance(dataset, ProcessedDataset):
        ds, ds_dir = dataset, None
    else:
        ds, ds_dir = load_processed(dataset, protocol, data_dir=data_dir)
    if metrics is None:
        mnames = _metric_names(ds.info.get("report_metrics") or DEFAULT_METRICS)
    select_metric = select_metric or str(ds.info.get("selection_metric") or "MRR@20")
    variants = build_variants(name, ds.name, drops, varies, overrides)
    user_keys = set((overrides or {}).keys()) | set(varies)
    seed_param = (not cls.neural and "seed" in {f.name for f in dataclasses.fields(cls.Params)}
                  and "seed" not in user_keys)
    root = paths.results_dir(results_dir)
    stem = _output_stem(root, name, ds.name)
    study = stem.name
    source: Any = ds_dir if ds_dir is not None else ds

    to_train = [v for v in variants if v.alias_of is None]
    total, done = len(to_train) * len(seed_values), 0
    runs: dict[str, list[dict[str, Any]]] = {}
    for v in to_train:
        runs[v.name] = []
        for seed in seed_values:
            done += 1
            if callback is not None:
                callback.on_message(f"[{done}/{total}] {name} {v.name} seed {seed}")
            ov = {**v.overrides, **({"seed": seed} if seed_param else {})}
            rec = train(
                name, source, protocol=protocol, data_dir=data_dir, results_dir=results_dir, overrides=ov,
                seed=seed, select_on=select_on, metric=select_metric, device=device, threads=threads,
                max_train_examples=max_train_examples, callback=callback,
            )
            RunDir(rec["run_dir"]).write_sidecar("ablation.json", {
                "study": study, "model": name, "dataset": ds.name, "variant": v.name, "kind": v.kind,
                **v.detail, "reference": v.name == REFERENCE, "seed": seed, "overrides": ov,
            })
            runs[v.name].append({"seed": seed, "run_dir": rec["run_dir"], "best_epoch": rec.get("best_epoch")})

    rows = [{"name": v.name, "kind": v.kind, **v.detail, "overrides": v.overrides, "alias_of": v.alias_of,
             "runs": [dict(r) for r in runs[v.alias_of or v.name]]} for v in variants]
    summarise(rows, mnames, split)
    annotate_ablation(rows, mnames)  # seed stability, Holm-adjusted p-values, cost per variant
    result: dict[str, Any] = {
        "study": study, "model": name, "dataset": ds.name, "protocol": ds.protocol, "split": split,
        "select_on": select_on, "selection_metric": select_metric, "seeds": seed_values,
        "metrics": mnames, "overrides": {k: v for k, v in (overrides or {}).items() if v is not None},
        "drops": list(drops), "varies": varies, "device": device, "max_train_examples": max_train_examples,
        "reference": REFERENCE,
        "p_value": "two-sided Wilcoxon signed-rank (and paired t-test) on per-example values averaged over "
                   "seeds; per_seed: the same tests run by compare_runs for each seed",
        "variants": rows,
    }
    result["markdown"] = render_ablation_markdown(result)
    files = {"json": str(stem.with_suffix(".json")), "md": str(stem.with_suffix(".md"))}
    if plot:
        buf = io.BytesIO()
        ablation_bar_chart(result, buf)
        atomic_write_bytes(stem.with_suffix(".png"), buf.getvalue())
        files["png"] = str(stem.with_suffix(".png"))
    result["files"] = files
    atomic_write_text(files["md"], result["markdown"])
    atomic_write_json(files["json"], result)
    return result
