"""Data commands: preprocess, export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import DataDirOpt, JsonOpt, emit_json, stdout_console
from sbrbench.errors import SbrError
from sbrbench.options import parse_key_values


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _print_report(summary: dict[str, Any], json_mode: bool) -> None:
    from rich.table import Table

    console = stdout_console(json_mode)
    stats = summary.get("stats", {})
    table = Table(title=f"{summary['dataset']} ({summary['protocol']})")
    for col in ("split", "sessions", "examples", "clicks", "avg length"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name in ("train", "valid", "test"):
        st = stats.get(name)
        if st:
            table.add_row(name, f"{st['sessions']:,}", f"{st['examples']:,}", f"{st['clicks']:,}", f"{st['avg_length']:.2f}")
    allst = stats.get("all", {})
    if allst:
        table.add_row("all", f"{allst['sessions']:,}", "", f"{allst['clicks']:,}", f"{allst['avg_length']:.2f}")
    console.print(table)
    console.print(f"items: {summary['items']:,} (seen in training: {summary.get('items_seen_in_train', 0):,})"
                  + (f", users: {summary['users']:,}" if "users" in summary else ""))
    audit = summary.get("audit") or {}
    for f in audit.get("findings", []):
        console.print(f"audit {f}")
    console.print(f"saved to {summary['path']}" + (f" (full audit: sbrbench audit {summary['dataset']})" if audit else ""))


@app.command()
def preprocess(
    name: Annotated[str | None, typer.Argument(help="Registered dataset (see `sbrbench datasets`).", show_default=False)] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="Protocol (default: the dataset's).", show_default=False)] = None,
    valid_fraction: Annotated[float, typer.Option("--valid-fraction", help="Most recent fraction of training sessions held out for validation.")] = 0.1,
    source: Annotated[str | None, typer.Option("--source", help="Source of the dataset (default: its default source).", show_default=False)] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", help="Mirror directory or URL to fetch missing files from.", show_default=False)] = None,
    from_path: Annotated[Path | None, typer.Option("--from", help="Preprocess your own file or folder instead.", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Format of --from: diginetica, yoochoose, csv, srgnn, sequences, recbole.", show_default=False)] = None,
    as_name: Annotated[str | None, typer.Option("--name", help="Name to store --from data under.", show_default=False)] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="csv: session=COL,item=COL,time=COL[,order=COL].", show_default=False)] = None,
    sep: Annotated[str | None, typer.Option("--sep", help="csv: field separator (default ',').", show_default=False)] = None,
    time_format: Annotated[str | None, typer.Option("--time-format", help="csv: strptime format, 'unix' or 'unix_ms'.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Protocol option KEY=VALUE (test_days, fraction, min_item_support, ...); repeatable.", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn raw or published data into a processed dataset (splits, statistics, manifest)."""
    import logging

    from sbrbench.data.preprocess import preprocess as run_preprocess
    from sbrbench.data.preprocess import preprocess_files, summary

    logging.getLogger("sbrbench.data").addHandler(logging.NullHandler())  # warnings printed below
    opts: dict[str, Any] = {}
    opts.update({k: _parse_value(v) for k, v in parse_key_values(option, "--option", "pairs").items()})
    if columns:
        opts["columns"] = parse_key_values(columns, "--columns", "pairs")
    if sep is not None:
        opts["sep"] = "\t" if sep in ("\\t", "tab") else sep
    if time_format:
        opts["time_format"] = time_format
    if from_path is not None:
        target = as_name or name
        if not target:
            raise SbrError("--from needs a dataset name: pass --name NAME")
        _, manifest = preprocess_files(from_path, fmt, target, protocol, data_dir=data_dir,
                                       valid_fraction=valid_fraction, options=opts, source=source)
    else:
        if not name:
            raise SbrError("give a dataset NAME (see `sbrbench datasets`) or --from PATH --format F --name N")
        if fmt or as_name:
            raise SbrError("--format and --name go with --from PATH")
        _, manifest = run_preprocess(name, protocol, data_dir=data_dir, valid_fraction=valid_fraction,
                                     mirror=mirror, source=source, options=opts or None)
    out = summary(manifest)
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    _print_report(out, json_out)
    if json_out:
        emit_json(out)


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Processed dataset name (or a processed directory).")],
    fmt: Annotated[str, typer.Option("--format", help="Output layout: srgnn (train.txt, test.txt, all_train_seq.txt).")] = "srgnn",
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")] = Path("."),
    protocol: Annotated[str | None, typer.Option("--protocol", help="Protocol (default: the dataset's).", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a processed dataset in another codebase's layout."""
    from sbrbench.data.preprocess import export_dataset

    result = export_dataset(name, fmt, out, protocol, data_dir=data_dir)
    if json_out:
        emit_json(result)
    else:
        console = stdout_console(False)
        for fname, path in result["files"].items():
            console.print(f"wrote {path}")
        console.print(f"{result['train_examples']:,} training and {result['test_examples']:,} test examples; "
                      f"n_node = {result['n_node']}")
