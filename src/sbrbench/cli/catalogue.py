"""`sbrbench models [NAME]` and `sbrbench datasets [NAME]`: readable at 80 columns.

The lists print one line per entry; a column that does not fit the terminal wraps onto a
continuation line instead of being cut (nothing is ever replaced by an ellipsis). Widths follow
the terminal (`$COLUMNS` when set).
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
import typing
from typing import Any

from sbrbench.cli.common import emit_json

TRAIN_MEANINGS = {
    "epochs": "most epochs trained (early stopping may end sooner)",
    "batch_size": "training examples per batch",
    "lr": "learning rate",
    "lr_dc": "learning-rate decay factor of the step schedule",
    "lr_dc_step": "epochs between two decays",
    "l2": "L2 penalty (Adam weight decay)",
    "patience": "early stopping: epochs without a gain in the selection metric (0: off)",
    "eval_batch_size": "examples per evaluation batch",
    "lr_schedule": "when the decay steps: epoch-end | epoch-start (code written for PyTorch >= 1.1)",
    "stopping": "metric (selection metric) | official (the SR-GNN family's HR-or-MRR rule)",
}


def width() -> int:
    """The terminal width (`$COLUMNS` first), at least 60."""
    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _layout(header: list[str], rows: list[list[str]], flex: int, total: int) -> list[int]:
    cols = len(header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(cols)]
    fixed = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (cols - 1)
    widths[flex] = max(12, min(widths[flex], total - fixed))
    return widths


def _fmt(cells: list[str], widths: list[int], flex: int, right: frozenset[int], indent: str) -> list[str]:
    wrapped = textwrap.wrap(str(cells[flex]), widths[flex], break_on_hyphens=False) or [""]
    lines = []
    for k, part in enumerate(wrapped):
        out = []
        for i, w in enumerate(widths):
            text = part if i == flex else (str(cells[i]) if k == 0 else "")
            out.append(text.rjust(w) if i in right else text.ljust(w))
        lines.append(indent + "  ".join(out).rstrip())
    return lines


def table(header: list[str], rows: list[list[str]], flex: int, *, total: int | None = None,
          right: frozenset[int] = frozenset(), indent: str = "") -> list[str]:
    """Plain-text columns; column `flex` wraps when the lines would exceed `total` characters."""
    widths = _layout(header, rows, flex, (total or width()) - len(indent))
    lines = _fmt(header, widths, flex, right, indent)
    for r in rows:
        lines += _fmt(r, widths, flex, right, indent)
    return lines


def wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    """`first` + text wrapped to the terminal, continuation lines indented by `indent`."""
    return textwrap.wrap(text, width(), initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False) or [first.rstrip()]


# ---- models --------------------------------------------------------------------------------------
def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


def _value(v: Any) -> str:
    if isinstance(v, str):
        return repr(v) if v == "" or " " in v else v
    return str(v)


def model_detail(name: str) -> dict[str, Any]:
    """A model's full description: hyper-parameters (type, default, per-dataset, meaning), training."""
    from sbrbench.config import TrainOptions
    from sbrbench.models import MODELS, model_info
    from sbrbench.models.meanings import follows, meanings

    cls = MODELS.get(name)
    info = model_info(cls.name)
    hints = typing.get_type_hints(cls.Params)
    mean = meanings(cls)
    per_ds = cls.dataset_defaults or {}
    params = []
    for f in dataclasses.fields(cls.Params):
        params.append({
            "name": f.name, "type": _type_name(hints.get(f.name, f.type)), "default": info["hparams"].get(f.name),
            "per_dataset": {ds: over[f.name] for ds, over in per_ds.items() if f.name in over},
            "meaning": mean.get(f.name, ""),
        })
    train = []
    if cls.neural:
        thints = typing.get_type_hints(TrainOptions)
        for k, v in info["train"].items():
            train.append({"name": k, "type": _type_name(thints.get(k, type(v))), "default": v,
                          "per_dataset": {ds: over[k] for ds, over in per_ds.items() if k in over},
                          "meaning": TRAIN_MEANINGS.get(k, "")})
    return {**info, "follows": follows(cls), "variant_of": cls.variant_of, "params": params, "training": train,
            "paper_compatible": dict(cls.paper_compatible)}


def _setting_rows(items: list[dict[str, Any]]) -> list[str]:
    """One line per setting (meaning wrapped), its per-dataset defaults on a line of their own."""
    header = ["name", "type", "default", "meaning"]
    rows = [[s["name"], s["type"], _value(s["default"]), s["meaning"] or "–"] for s in items]
    indent = "  "
    widths = _layout(header, rows, 3, width() - len(indent))
    pad = indent + " " * (sum(widths[:3]) + 6)
    out = _fmt(header, widths, 3, frozenset(), indent)
    for s, row in zip(items, rows):
        out += _fmt(row, widths, 3, frozenset(), indent)
        if s["per_dataset"]:
            text = "per dataset: " + ", ".join(f"{ds} {_value(v)}" for ds, v in s["per_dataset"].items())
            out += wrap(text, indent=pad + "  ", first=pad)
    return out


def show_models(name: str | None, json_out: bool) -> None:
    """Print the model list (or one model's full description)."""
    from sbrbench.models import MODELS, model_info
    from sbrbench.models.meanings import follows

    if name is not None:
        d = model_detail(name)
        if json_out:
            emit_json(d)
            return
        lines = wrap(f"{d['name']} — {d['description']}" if d["description"] else d["name"], indent="  ")
        lines += wrap(f"follows: {d['follows']}" + (f" (variant of {d['variant_of']})" if d["variant_of"] else ""),
                      indent="  ")
        lines += wrap(f"kind: {'neural (trained by gradient descent)' if d['neural'] else 'non-neural (fitted)'}; "
                      f"components for `ablate --drop`: {', '.join(d['components']) or 'none'}", indent="  ")
        lines += ["", "hyper-parameters (--set KEY=VALUE):"]
        lines += _setting_rows(d["params"]) if d["params"] else ["  none"]
        if d["training"]:
            lines += [""] + wrap("training defaults (--epochs, --batch-size, --lr, --l2, --patience or --set KEY=VALUE):",
                                 indent="  ")
            lines += _setting_rows(d["training"])
        if d["paper_compatible"]:
            lines += [""] + wrap("paper-compatible runs (--select-on test) also set: "
                                 + ", ".join(f"{k}={_value(v)}" for k, v in d["paper_compatible"].items()), indent="  ")
        print("\n".join(lines))
        return
    infos = [model_info(n) for n in MODELS.names()]
    if json_out:
        for i in infos:
            i["follows"] = follows(MODELS.get(i["name"]))
        emit_json({"models": infos})
        return
    rows = [[i["name"], "neural" if i["neural"] else "non-neural", ",".join(i["components"]) or "–",
             follows(MODELS.get(i["name"]))] for i in infos]
    lines = table(["model", "kind", "components", "follows"], rows, 3)
    lines += [""] + wrap("`sbrbench models NAME`: every hyper-parameter with its type, default, per-dataset "
                         "defaults and meaning. Components are what `sbrbench ablate --drop` switches off.")
    print("\n".join(lines))


# ---- datasets -----------------------------------------------------------------------------------
def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "–"


def show_datasets(name: str | None, data_dir: Any, json_out: bool) -> None:
    """Print the registry with status and statistics (or one dataset's full description)."""
    from sbrbench.data.download import dataset_status, list_datasets
    from sbrbench.data.registry import get_dataset
    from sbrbench.paths import data_dir as resolve

    root = resolve(data_dir)
    if name is not None:
        spec = get_dataset(name)
        st = dataset_status(spec, root)
        if json_out:
            emit_json({"data_dir": str(root), "dataset": st, "citation": spec.citation, "licence": spec.licence,
                       "homepage": spec.homepage, "reference": spec.reference,
                       "sources": {k: {"format": s.format, "manual": s.manual,
                                       "files": [dataclasses.asdict(f) for f in s.files]} for k, s in spec.sources.items()}})
            return
        lines = wrap(f"{spec.name} — {spec.description}", indent="  ")
        lines += wrap(f"citation: {spec.citation}", indent="  ")
        lines += wrap(f"terms: {spec.licence}", indent="  ")
        if spec.homepage:
            lines += [f"homepage: {spec.homepage}"]
        lines += [f"status: {st['status']}", f"data dir: {root}", "",
                  f"protocols: {', '.join(spec.protocols)} (default {spec.default_protocol})", "sources:"]
        for sname, src in spec.sources.items():
            tag = " (default)" if sname == spec.default_source else ""
            lines += wrap(f"{sname}{tag}: format {src.format}, "
                          + ("manual: " + src.manual if src.manual else f"{len(src.files)} file(s), sha256-pinned"),
                          indent="      ", first="  ")
            for f in src.files:
                lines += [f"    {f.path}  {_size(f.size)}" + (f"  sha256 {f.sha256[:12]}" if f.sha256 else "")]
        for proto, stats in (st.get("stats") or {}).items():
            lines += ["", f"processed ({proto}): {_n(stats.get('items'))} items"]
            rows = [[split, _n(s.get("sessions")), _n(s.get("examples")), _n(s.get("clicks")),
                     f"{s['avg_length']:.2f}" if isinstance(s.get("avg_length"), (int, float)) else "–"]
                    for split, s in stats["splits"].items()]
            lines += table(["split", "sessions", "examples", "clicks", "avg length"], rows, 0,
                           right=frozenset({1, 2, 3, 4}), indent="  ")
        if spec.reference:
            lines += ["", "reference statistics (registry):"]
            for proto, ref in spec.reference.items():
                lines += wrap(f"{proto}: " + ", ".join(f"{k} {_n(v) if isinstance(v, int) else v}" for k, v in ref.items()),
                              indent="    ", first="  ")
        print("\n".join(lines))
        return
    rows_in = list_datasets(data_dir)
    if json_out:
        emit_json({"data_dir": str(root), "datasets": rows_in})
        return
    rows = []
    for r in rows_in:
        stats = (r.get("stats") or {}).get(r["default_protocol"]) or next(iter((r.get("stats") or {}).values()), None)
        status = _short_status(r)
        rows.append([r["name"], r["size"], status,
                     _n(stats.get("train_examples")) if stats else "–",
                     _n(stats.get("test_examples")) if stats else "–",
                     _n(stats.get("items")) if stats else "–"])
    lines = [f"data dir: {root}"]
    lines += table(["dataset", "download", "status", "train ex.", "test ex.", "items"], rows, 2,
                   right=frozenset({1, 3, 4, 5}))
    lines += [""] + wrap("Statistics are the processed default protocol's (train ex.: the protocol's whole "
                         "training set, validation included). manual: login-walled, fetch the file yourself, then "
                         "`sbrbench download NAME --from PATH`. `sbrbench datasets NAME` for sources, terms and "
                         "per-split statistics.")
    print("\n".join(lines))


def _short_status(r: dict[str, Any]) -> str:
    """missing / manual / partial / downloaded / processed (+ other protocols), short for 80 columns."""
    if r["processed"]:
        default = r["default_protocol"]
        others = [p for p in r["processed"] if p != default]
        head = "processed" if default in r["processed"] else f"processed {others.pop(0)}"
        return head + "".join(f" +{p}" for p in others)
    if r["status"] == "missing" and r["manual"]:
        return "manual"
    return r["status"].split(" (")[0]


def _size(n: int | None) -> str:
    from sbrbench.data.download import _human_size

    return _human_size(n)
