"""`sbrbench report`: one self-contained HTML page of everything under a results directory.

The page holds, with no network needed to view it (CSS, JavaScript and SVG figures are inline):

* the leaderboard per dataset (`sbrbench.leaderboard`), our figures beside the published ones,
  validation-selected and paper-compatible (test-selected) runs in separate tables, reduced
  budgets marked; every table sorts by any column (a click on its header);
* learning curves from each run's `history.csv` (training loss and the selection metric per
  epoch, one line per seed);
* each ablation study (`ablations/*.json` from `sbrbench ablate`) as a bar chart with
  significance marks (paired Wilcoxon p against the full model) and its table;
* each reproduced table (`reproduce/*.json` from `sbrbench reproduce`, or its Markdown when only
  that exists) with the budget of every row;
* each run's provenance (command, git commit, device, dataset checksum, versions, settings), one
  click away from the leaderboard row that counts it.

Figures are static SVG drawn with matplotlib (text kept as text, ids made unique per figure):
a few kB each, so a page with dozens of runs stays well under a megabyte and renders at once.
The page is written with jinja2 (autoescaped) from `report_assets/`.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
import shlex
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from sbrbench import __version__
from sbrbench.errors import SbrError
from sbrbench.io import atomic_write_text
from sbrbench.leaderboard import build_leaderboard, collect_runs
from sbrbench.metrics import DEFAULT_METRICS
from sbrbench.paths import results_dir
from sbrbench.results import RunDir, git_info

REPRODUCE_NOTE = "reproduce.json"  # the sidecar `sbrbench reproduce` tags its rows with
MARK_TITLES = {  # the leaderboard's significance marks (sbrbench.honesty)
    "*": "best, significantly better than every other row of its table",
    "=": "not significantly different from the best row",
    "?": "not tested (no stored per-example ranks)",
    "~": "its ordering against another row flips across seeds",
}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


# ---- small helpers ---------------------------------------------------------------------------------
def _pct(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.{digits}f}"


def _anchor(prefix: str, *parts: Any) -> str:
    text = "/".join(str(p) for p in parts)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:48]
    return f"{prefix}-{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _cell(text: Any, v: Any = None, cls: str = "", **extra: Any) -> dict[str, Any]:
    return {"text": "" if text is None else str(text), "v": v, "cls": cls, **extra}


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _stars(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "n.s."


def _asset(name: str) -> str:
    return resources.files("sbrbench").joinpath("report_assets", name).read_text(encoding="utf-8")


# ---- figures -----------------------------------------------------------------------------------------
def _svg(fig: Any, key: str) -> str:
    """A matplotlib figure as compact inline SVG: no prolog or metadata, unreferenced ids dropped, the
    referenced ones prefixed so figures never clash, coordinates to 2 decimals, no indentation."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    used = set(re.findall(r"url\(#([^)]+)\)", text)) | set(re.findall(r'href="#([^"]+)"', text))
    prefix = "f" + hashlib.sha1(key.encode()).hexdigest()[:8]
    text = re.sub(r'\sid="([^"]+)"', lambda m: f' id="{prefix}-{m.group(1)}"' if m.group(1) in used else "", text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', text)
    text = re.sub(r'="[^"]*"', lambda m: re.sub(r"(\d+\.\d\d)\d+", r"\1", m.group(0)), text)  # attributes only
    text = re.sub(r"\s*\n\s*", " ", text)
    return re.sub(r">\s+<", "><", text)


def _figure(width: float, height: float, key: str) -> tuple[Any, Any]:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ctx = matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key, "font.size": 9,
                                 "axes.titlesize": 9.5, "legend.fontsize": 8, "axes.spines.top": False,
                                 "axes.spines.right": False})
    ctx.__enter__()
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, ctx


def learning_curve_svg(title: str, runs: Sequence[dict[str, Any]], key: str) -> str | None:
    """Training loss and the selection metric per epoch, one line per run; None without history."""
    series = []
    for r in runs:
        hist = r["history"]
        metric_col = next((c for c in (f"{r['select_split']}_{r['metric']}", f"valid_{r['metric']}",
                                       f"test_{r['metric']}") if hist and c in hist[0]), None)
        epochs = [_num(h.get("epoch")) for h in hist]
        loss = [_num(h.get("loss")) for h in hist]
        sel = [_num(h.get(metric_col)) for h in hist] if metric_col else []
        if any(e is not None for e in epochs):
            series.append((r, epochs, loss, sel, metric_col))
    if not series:
        return None
    fig, ctx = _figure(6.4, 2.5, key)
    try:
        ax_loss, ax_metric = fig.subplots(1, 2)
        n_points = max(len(e) for _, e, _, _, _ in series)
        marker = {"marker": "o", "ms": 3} if n_points <= 10 else {}
        for i, (r, epochs, loss, sel, col) in enumerate(series):
            color = COLORS[i % len(COLORS)]
            label = f"seed {r['seed']}"
            pts = [(e, v) for e, v in zip(epochs, loss) if e is not None and v is not None]
            if pts:
                ax_loss.plot(*zip(*pts), lw=1.4, color=color, label=label, **marker)
            pts = [(e, 100 * v) for e, v in zip(epochs, sel) if e is not None and v is not None]
            if pts:
                ax_metric.plot(*zip(*pts), lw=1.4, color=color, label=label, **marker)
                best = r.get("best_epoch")
                hit = [p for p in pts if best is not None and p[0] == best]
                if hit:
                    ax_metric.plot(*hit[0], marker="o", ms=9, mfc="none", mec=color, mew=1.5)
        ax_loss.set_title("training loss")
        ax_loss.set_xlabel("epoch")
        cols = {s[4] for s in series if s[4]}
        ax_metric.set_title((", ".join(sorted(cols)) if cols else "selection metric") + " (%)")
        ax_metric.set_xlabel("epoch")
        for ax in (ax_loss, ax_metric):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        if len(series) > 1:
            ax_metric.legend(frameon=False)
        fig.suptitle(title, fontsize=10)
        return _svg(fig, key)
    finally:
        ctx.__exit__(None, None, None)


def ablation_svg(result: dict[str, Any], key: str) -> str:
    """Grouped bars (mean over seeds, ± std) per metric and variant, with significance marks."""
    import numpy as np

    metrics: list[str] = list(result.get("metrics") or [])
    variants: list[dict[str, Any]] = list(result.get("variants") or [])
    n_v = max(len(variants), 1)
    width = 0.8 / n_v
    x = np.arange(len(metrics), dtype=float)
    fig, ctx = _figure(max(4.2, 1.4 + len(metrics) * (0.6 + 0.5 * n_v)), 3.0, key)
    try:
        ax = fig.add_subplot()
        top = 0.0
        for i, v in enumerate(variants):
            means = [100 * float((v.get("mean") or {}).get(m) or 0.0) for m in metrics]
            stds = [100 * float((v.get("std") or {}).get(m) or 0.0) for m in metrics]
            pos = x + (i - (n_v - 1) / 2) * width
            ax.bar(pos, means, width, yerr=stds if any(stds) else None, capsize=2.5,
                   color=COLORS[i % len(COLORS)], label=v.get("name", "?"),
                   edgecolor="black" if i == 0 else "none", linewidth=0.8)
            for j, m in enumerate(metrics):
                test = (v.get("tests") or {}).get(m) or {}
                mark = _stars(_num(test.get("wilcoxon")))
                top = max(top, means[j] + stds[j])
                if mark:
                    ax.text(pos[j], means[j] + stds[j], mark, ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
        ax.set_xticks(x, metrics)
        ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(frameon=False, ncols=min(n_v, 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
        return _svg(fig, key)
    finally:
        ctx.__exit__(None, None, None)


# ---- runs ----------------------------------------------------------------------------------------
_DEFAULT_EPOCHS: dict[tuple[str, str], int | None] = {}


def _default_epochs(model: str, dataset: str) -> int | None:
    """The model's default number of epochs on `dataset` (None when the model is unknown here)."""
    key = (model, dataset)
    if key not in _DEFAULT_EPOCHS:
        try:
            from sbrbench.models import resolve_config

            _DEFAULT_EPOCHS[key] = int(resolve_config(model, dataset).train.epochs)
        except Exception:  # an old record of a model that no longer exists, or a broken install
            _DEFAULT_EPOCHS[key] = None
    return _DEFAULT_EPOCHS[key]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """What the page shows of one run: identity, budget, history and provenance."""
    run = RunDir(run_dir)
    rec = run.read_metrics()
    try:
        cfg = run.read_config().to_dict()
    except SbrError:
        cfg = {}
    env = _read_json(run.env_path)
    history = run.read_history()
    note = run.read_sidecar(REPRODUCE_NOTE) or {}
    model, dataset = str(rec.get("model")), str(rec.get("dataset"))
    train = cfg.get("train") or {}
    epochs_run = rec.get("epochs_run") or 0
    neural = bool(history) or bool(epochs_run)
    max_ex = cfg.get("max_train_examples")
    reduced = False
    if neural:
        planned = train.get("epochs")
        budget = f"{epochs_run} epoch{'s' if epochs_run != 1 else ''}"
        if planned and planned != epochs_run:
            budget += f" (of {planned})"
        if max_ex:
            budget += f", first {int(max_ex):,} training examples"
        default = _default_epochs(model, dataset)
        reduced = bool(max_ex) or (default is not None and planned is not None and int(planned) < default)
        if reduced and default:
            budget += f" (default {default} epochs)"
    else:
        budget = "fitted on " + " ∪ ".join(cfg.get("fit_splits") or ["train"])
    if note.get("budget"):
        budget = f"reproduce budget {note['budget']}: {budget}"
        reduced = reduced or note["budget"] not in ("full",)
    return {
        "run": run, "run_dir": str(run.path), "name": run.path.name, "model": model, "dataset": dataset,
        "protocol": str(rec.get("protocol")), "seed": rec.get("seed"), "select_on": str(rec.get("select_on") or "valid"),
        "select_split": (rec.get("selection") or {}).get("split") or ("test" if rec.get("select_on") == "test" else "valid"),
        "metric": (rec.get("selection") or {}).get("metric") or cfg.get("metric") or "MRR@20",
        "best_epoch": _num(rec.get("best_epoch")), "neural": neural, "budget": budget, "reduced": reduced,
        "history": history, "rec": rec, "cfg": cfg, "env": env,
        "anchor": _anchor("run", run.path.parent.parent.name, run.path.parent.name, run.path.name),
    }


def _provenance(r: dict[str, Any]) -> list[tuple[str, str]]:
    rec, cfg, env = r["rec"], r["cfg"], r["env"]
    git = env.get("git") or {}
    versions = env.get("versions") or {}
    cmd = env.get("command")
    items = [
        ("run directory", r["run_dir"]),
        ("command", shlex.join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd or "–")),
        ("git commit", (git.get("commit") or "unknown") + (" (with uncommitted changes)" if git.get("dirty") else "")),
        ("device", " · ".join(str(x) for x in (env.get("device") or rec.get("device"), env.get("device_name")) if x) or "–"),
        ("threads / precision", f"{rec.get('threads', cfg.get('threads', '–'))} / {rec.get('precision', cfg.get('precision', '–'))}"),
        ("dataset checksum", str(rec.get("dataset_checksum") or env.get("dataset_checksum") or "–")),
        ("data", str((cfg.get("data") or {}).get("path") or "–")),
        ("selection", f"{r['select_split']} split, {r['metric']}"
         + (" (paper-compatible: epoch selected on the test set)" if r["select_on"] == "test" else "")),
        ("budget", r["budget"]),
        ("best epoch / epochs run", f"{rec.get('best_epoch') if rec.get('best_epoch') is not None else '–'} / {rec.get('epochs_run', '–')}"),
        ("fit splits", ", ".join(cfg.get("fit_splits") or []) or "–"),
        ("hyper-parameters", ", ".join(f"{k}={v}" for k, v in (cfg.get("hparams") or rec.get("hparams") or {}).items()) or "–"),
        ("training options", ", ".join(f"{k}={v}" for k, v in (cfg.get("train") or {}).items()) if r["neural"] else "– (fitted)"),
        ("time", f"train {rec.get('train_seconds', '–')} s, evaluation {rec.get('eval_seconds', '–')} s; "
                 f"{env.get('start_time', '?')} → {env.get('end_time', '?')}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "–"),
        ("host", " · ".join(str(x) for x in (env.get("hostname"), env.get("platform")) if x) or "–"),
    ]
    for i, again in enumerate(env.get("resumes") or (), start=1):
        commit = (again.get("git") or {}).get("commit") or "unknown"
        items.append((f"resumed ({i})", f"{again.get('time', '?')} on {again.get('hostname', '?')}, "
                      f"{again.get('device', '?')}, git {commit[:12]}"
                      + (" (another commit than the start)" if commit != (git.get("commit") or "unknown") else "")))
    return items


# ---- sections -------------------------------------------------------------------------------------
def _paper_compatible(row: dict[str, Any]) -> bool:
    """A row selected on the test set. Fitted (non-neural) models select nothing: fitted on train ∪ valid
    (`--select-on test`, as the papers fit their baselines) they are honest and stay with the others."""
    if row["select_on"] != "test":
        return False
    return not row["_runs"] or any(r["neural"] for r in row["_runs"])


def _leaderboard_sections(lb: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_ds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in lb.rows:
        by_ds.setdefault((row["dataset"], row["protocol"]), []).append(row)
    for (ds, proto), rows in by_ds.items():
        sections = []
        for kind, label, title, sel in (
            ("honest", "validation-selected", "runs that chose their epoch on the validation split", False),
            ("paper", "paper-compatible", "epoch selected on the TEST set (optimistic; not comparable with the table above)", True),
        ):
            part = [r for r in rows if _paper_compatible(r) == sel]
            if not part:
                continue
            columns = [{"label": "model", "cls": "l"}, {"label": "runs", "cls": "l", "title": "click a run for its provenance"},
                       {"label": "n"}, {"label": "budget", "cls": "l wrap"}]
            for m in lb.metrics:
                columns += [{"label": f"{m}"}, {"label": f"{m} paper", "title": "published figure"},
                            {"label": f"Δ {m}", "title": "ours − paper, in points"}]
            body = []
            for row in part:
                runs = row["_runs"]
                budgets = sorted({r["budget"] for r in runs})
                tuning = row.get("budget")
                if tuning and tuning != "untuned":
                    budgets = [f"{tuning}: {b}" for b in budgets]
                reduced = any(r["reduced"] for r in runs)
                cells = [
                    _cell(row["model"], cls="l"),
                    _cell("", v=len(runs), cls="l", links=[{"anchor": r["anchor"], "text": f"s{r['seed']}"} for r in runs]),
                    _cell(row["n"], v=row["n"]),
                    _cell("; ".join(budgets), cls="l wrap", badge={"cls": "reduced", "text": "reduced"} if reduced else None),
                ]
                for m in lb.metrics:
                    mean, std, pub = row.get(m), row.get(f"{m} std"), row.get(f"{m} published")
                    mark = (row.get("marks") or {}).get(m, "")
                    cells.append(_cell(_pct(mean) + (f" {mark}" if mark else ""),
                                       v=None if mean is None else round(100 * mean, 4),
                                       std=_pct(std) if std is not None else None,
                                       title=MARK_TITLES.get(mark)))
                    cells.append(_cell(_pct(pub), v=None if pub is None else round(100 * pub, 4),
                                       cls="pub" if pub is not None else "missing",
                                       title=f"published: {row.get(f'{m} source')}" if pub is not None else "no published figure"))
                    delta = None if mean is None or pub is None else 100 * (mean - pub)
                    cells.append(_cell("–" if delta is None else f"{delta:+.2f}", v=None if delta is None else round(delta, 4),
                                       cls="missing" if delta is None else ("pos" if delta >= 0 else "neg")))
                body.append(cells)
            sections.append({"kind": kind, "label": label, "title": title,
                             "table": {"cls": kind, "columns": columns, "rows": body,
                                       "id": _anchor("lb", ds, proto, kind)}})
        out.append({"dataset": ds, "protocol": proto, "anchor": _anchor("ds", ds, proto), "sections": sections})
    return out


def _curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        with_history = [r for r in row["_runs"] if r["history"]]
        if not with_history:
            continue
        ds, proto, model, sel = row["dataset"], row["protocol"], row["model"], row["select_on"]
        mode = "paper-compatible" if sel == "test" else "validation-selected"
        tuning = row.get("budget")
        key = "curve/" + "/".join(str(x) for x in (ds, proto, model, sel, tuning))
        title = f"{model} on {ds} ({mode}" + (f", {tuning})" if tuning and tuning != "untuned" else ")")
        svg = learning_curve_svg(title, with_history, key)
        if svg is None:
            continue
        budgets = "; ".join(sorted({r["budget"] for r in with_history}))
        out.setdefault((ds, proto), []).append({
            "svg": _markup(svg),
            "caption": f"{model}, {len(with_history)} run(s), {budgets}; selection on the "
                       f"{with_history[0]['select_split']} split by {with_history[0]['metric']}"})
    return [{"dataset": ds, "protocol": proto, "figures": figs} for (ds, proto), figs in out.items()]


def _ablations(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((root / "ablations").glob("*.json")):
        res = _read_json(path)
        if not res.get("variants") or not res.get("metrics"):
            continue
        metrics = list(res["metrics"])
        columns = [{"label": "variant", "cls": "l"}, {"label": "kind", "cls": "l"}, {"label": "seeds"}]
        for m in metrics:
            columns += [{"label": m}, {"label": f"Δ {m}", "title": "change against the full model, points"},
                        {"label": f"Δ% {m}"}, {"label": f"p {m}", "title": "paired Wilcoxon signed-rank"}]
        rows = []
        for v in res["variants"]:
            cells = [_cell(v.get("name", "?") + (f" (= {v['alias_of']})" if v.get("alias_of") else ""), cls="l"),
                     _cell(v.get("kind", ""), cls="l"), _cell(len(v.get("runs") or []), v=len(v.get("runs") or []))]
            for m in metrics:
                mean = _num((v.get("mean") or {}).get(m))
                std = _num((v.get("std") or {}).get(m))
                cells.append(_cell(_pct(mean), v=None if mean is None else round(100 * mean, 4),
                                   std=_pct(std) if std is not None else None))
                ch = (v.get("change") or {}).get(m)
                if not ch:
                    cells += [_cell("ref", cls="l"), _cell(""), _cell("")]
                    continue
                d, rel = _num(ch.get("abs")), _num(ch.get("rel_pct"))
                cells.append(_cell("–" if d is None else f"{100 * d:+.2f}", v=None if d is None else round(100 * d, 4),
                                   cls="" if d is None else ("pos" if d >= 0 else "neg")))
                cells.append(_cell("–" if rel is None else f"{rel:+.1f}%", v=rel))
                p = _num(((v.get("tests") or {}).get(m) or {}).get("wilcoxon"))
                cells.append(_cell("–" if p is None else f"{p:.2g} {_stars(p)}", v=p))
            rows.append(cells)
        key = f"ablation/{path.name}"
        out.append({
            "anchor": _anchor("ablation", path.stem),
            "title": f"{res.get('model')} on {res.get('dataset')} ({res.get('protocol', '?')}) — {path.stem}",
            "note": (f"split {res.get('split', 'test')}, selection on {res.get('select_on', 'valid')}, seeds "
                     f"{', '.join(str(s) for s in res.get('seeds') or [])}; mean ± std over seeds"
                     + (f"; overrides {res['overrides']}" if res.get("overrides") else "")),
            "svg": _markup(ablation_svg(res, key)),
            "table": {"cls": "", "columns": columns, "rows": rows, "id": _anchor("abt", path.stem)},
        })
    return out


def _reproduction_table(res: dict[str, Any]) -> dict[str, Any]:
    rows_in = res.get("rows") or []
    metrics = list((rows_in[0].get("ours") or {}).keys()) if rows_in else []
    columns = [{"label": "dataset", "cls": "l"}, {"label": "model", "cls": "l"}]
    for m in metrics:
        columns += [{"label": f"{m} ours"}, {"label": f"{m} paper"}, {"label": f"Δ {m}"}]
    columns += [{"label": "data", "cls": "l"}, {"label": "epochs"}, {"label": "train examples"},
                {"label": "device", "cls": "l"}, {"label": "selected on", "cls": "l"}]
    rows = []
    for r in rows_in:
        cells = [_cell(r.get("dataset"), cls="l"), _cell(r.get("model"), cls="l")]
        for m in metrics:
            ours, paper, d = (_num((r.get(k) or {}).get(m)) for k in ("ours", "paper", "delta"))
            cells += [_cell(_pct(ours), v=None if ours is None else round(100 * ours, 4)),
                      _cell(_pct(paper), v=None if paper is None else round(100 * paper, 4),
                            cls="pub" if paper is not None else "missing"),
                      _cell("–" if d is None else f"{100 * d:+.2f}", v=None if d is None else round(100 * d, 4),
                            cls="missing" if d is None else ("pos" if d >= 0 else "neg"))]
        ep = r.get("epochs")
        cells += [_cell(r.get("data", "full"), cls="l"), _cell("fit" if ep is None else ep, v=ep),
                  _cell(f"{r['train_examples']:,}" if isinstance(r.get("train_examples"), int) else r.get("train_examples"),
                        v=r.get("train_examples")),
                  _cell(r.get("device"), cls="l"),
                  _cell("test (paper-compatible)" if r.get("select_on") == "test" else r.get("select_on"), cls="l")]
        rows.append(cells)
    return {"cls": "", "columns": columns, "rows": rows}


def _reproductions(root: Path) -> list[dict[str, Any]]:
    out = []
    folder = root / "reproduce"
    for path in sorted(folder.glob("*.json")):
        res = _read_json(path)
        if "rows" not in res:
            continue
        unavailable = [f"{d}: unavailable — {why}" for d, why in (res.get("unavailable") or {}).items()]
        table = _reproduction_table(res)
        table["id"] = _anchor("rep", path.stem)
        out.append({"anchor": _anchor("reproduce", path.stem),
                    "title": f"{res.get('table', path.stem)} — budget {res.get('budget', '?')}, selected on "
                             f"{res.get('select_on', '?')}, device {res.get('device', '?')}",
                    "note": "", "table": table, "html": None, "notes": unavailable})
    have = {p.stem for p in folder.glob("*.json")}
    for path in sorted(folder.glob("*.md")):
        if path.stem in have:
            continue
        title, body = _markdown(path.read_text(encoding="utf-8"), path.stem)
        out.append({"anchor": _anchor("reproduce", path.stem), "title": title or path.stem,
                    "note": f"from {path.name} (no JSON record beside it)", "table": None,
                    "html": _markup(body), "notes": []})
    return out


def _inline_md(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _markdown(text: str, key: str) -> tuple[str | None, str]:
    """A small Markdown subset (headings, pipe tables, paragraphs) → (first heading, HTML)."""
    title: str | None = None
    parts: list[str] = []
    lines = text.splitlines()
    i = 0
    n_tab = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("#"):
            head = line.lstrip("#").strip()
            if title is None:
                title = head
            else:
                parts.append(f"<h4>{_inline_md(head)}</h4>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1]):
            header = [c.strip() for c in line.strip("|").split("|")]
            i += 2
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].rstrip().strip("|").split("|")])
                i += 1
            n_tab += 1
            tid = _anchor("md", key, n_tab)
            head_html = "".join(f'<th class="{"l" if _num(c) is None else ""}">{_inline_md(c)}</th>' for c in header)
            body = []
            for r in rows:
                tds = []
                for c in r:
                    v = _num(c.replace("%", "").replace(",", "").split(" ")[0])
                    attr = f' data-v="{v}"' if v is not None else ""
                    tds.append(f'<td class="{"" if v is not None else "l"}"{attr}>{_inline_md(c)}</td>')
                body.append("<tr>" + "".join(tds) + "</tr>")
            parts.append(f'<div class="tablewrap"><table class="sortable" id="{tid}"><thead><tr>{head_html}</tr></thead>'
                         f"<tbody>{''.join(body)}</tbody></table></div>")
        elif line.strip():
            para = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(lines[i].strip())
                i += 1
            parts.append(f'<p class="note">{_inline_md(" ".join(para))}</p>')
        else:
            i += 1
    return title, "\n".join(parts)


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)


# ---- the page --------------------------------------------------------------------------------------
def build_report(results_root: str | Path | None = None, *, datasets: Sequence[str] | None = None,
                 metrics: Sequence[str] | None = None, split: str = "test") -> dict[str, Any]:
    """Everything the page shows, gathered from the results directory (see the module docstring)."""
    root = results_dir(results_root)
    mets = list(metrics or DEFAULT_METRICS)
    wanted = set(datasets or [])
    lb = build_leaderboard(root, None, mets, split)
    if wanted:
        lb.rows = [r for r in lb.rows if r["dataset"] in wanted]
    cache: dict[str, dict[str, Any]] = {}

    def info(run_dir: str) -> dict[str, Any]:
        if run_dir not in cache:
            cache[run_dir] = load_run(run_dir)
        return cache[run_dir]

    if all("runs" in r for r in lb.rows):  # the leaderboard names the runs each row counts
        for row in lb.rows:
            row["_runs"] = sorted((info(x["run_dir"]) for x in row["runs"]), key=lambda x: str(x["seed"]))
    else:  # older leaderboards: the same rule, the latest run of each seed
        runs_raw, _ = collect_runs(root, None, split, lb.metrics)
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in runs_raw:
            key = (r["dataset"], r["protocol"], r["model"], r["select_on"],
                   r["seed"] if r["seed"] is not None else r["run_dir"])
            if key not in latest or r["mtime"] > latest[key]["mtime"]:
                latest[key] = r
        for row in lb.rows:
            ident = (row["dataset"], row["protocol"], row["model"], row["select_on"])
            row["_runs"] = sorted((info(r["run_dir"]) for k, r in latest.items() if k[:4] == ident),
                                  key=lambda x: str(x["seed"]))
    runs = sorted(cache.values(), key=lambda r: (r["dataset"], r["model"], r["select_on"], str(r["seed"]), r["name"]))
    git = git_info()
    commit = (git.get("commit") or "")[:12]
    return {
        "title": "sbrbench report",
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "version": __version__,
        "git": (f"git {commit}" + (" with uncommitted changes" if git.get("dirty") else "")) if commit else "",
        "results_dir": str(root),
        "split": split,
        "metrics": lb.metrics,
        "leaderboards": _leaderboard_sections(lb),
        "curves": _curves(lb.rows),
        "ablations": _ablations(root),
        "reproductions": _reproductions(root),
        "runs": [{**{k: r[k] for k in ("anchor", "model", "dataset", "seed", "select_on", "reduced", "budget", "name",
                                       "neural")}, "paper": r["select_on"] == "test" and r["neural"],
                  "prov": _provenance(r)} for r in runs],
        "skipped": lb.skipped,
        "counts": {"runs": len(runs), "skipped": len(lb.skipped)},
    }


def render_report(data: dict[str, Any]) -> str:
    """The page as one HTML string (CSS and JavaScript inline)."""
    import jinja2

    env = jinja2.Environment(autoescape=True)
    template = env.from_string(_asset("report.html.j2"))
    counts = {**data["counts"], "ablations": len(data["ablations"]), "reproductions": len(data["reproductions"])}
    return template.render(**{**data, "counts": counts}, css=_markup(_asset("report.css")),
                           js=_markup(_asset("report.js")))


def write_report(results_root: str | Path | None = None, out: str | Path | None = None, *,
                 datasets: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Build and write the page (default `<results>/report.html`, atomically); a summary dict."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        raise SbrError("sbrbench report needs jinja2: pip install 'sbrbench[report]'") from None
    t0 = time.perf_counter()
    data = build_report(results_root, datasets=datasets, metrics=metrics)
    page = render_report(data)
    path = Path(out) if out is not None else results_dir(results_root) / "report.html"
    atomic_write_text(path, page)
    return {
        "path": str(path), "bytes": len(page.encode("utf-8")), "seconds": round(time.perf_counter() - t0, 2),
        "runs": data["counts"]["runs"], "skipped": data["counts"]["skipped"],
        "datasets": [f"{lb['dataset']} ({lb['protocol']})" for lb in data["leaderboards"]],
        "figures": sum(len(g["figures"]) for g in data["curves"]) + len(data["ablations"]),
        "ablations": len(data["ablations"]), "reproductions": len(data["reproductions"]),
    }
