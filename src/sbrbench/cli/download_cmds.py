"""Registry and download commands: datasets, download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import DataDirOpt, JsonOpt, emit_json, stdout_console


@app.command()
def datasets(
    name: Annotated[str | None, typer.Argument(
        help="A dataset: sources, terms, protocols and per-split statistics.", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the dataset registry with status and statistics once processed; `datasets NAME` for one in full."""
    from sbrbench.cli.catalogue import show_datasets

    show_datasets(name, data_dir, json_out)


SourceOpt = Annotated[str | None, typer.Option(
    "--source", help="Source to fetch (default: the dataset's default source).", show_default=False)]
MirrorOpt = Annotated[str | None, typer.Option(
    "--mirror", show_default=False,
    help="A directory or URL laid out like ../shared/datasets, tried first (default: $SBRBENCH_MIRROR).")]
FromOpt = Annotated[Path | None, typer.Option(
    "--from", show_default=False,
    help="Copy the files from this file or directory instead (for login-walled sources).")]


@app.command()
def download(
    name: Annotated[str, typer.Argument(help="Dataset name (see `sbrbench datasets`).", show_default=False)],
    source: SourceOpt = None,
    mirror: MirrorOpt = None,
    from_path: FromOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when a verified copy exists.")] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download a dataset's files, verify their sha256, and place them atomically in the data dir."""
    from sbrbench.data.download import download as do_download
    from sbrbench.data.registry import get_dataset
    from sbrbench.paths import data_dir as resolve

    spec = get_dataset(name)
    src = spec.source(source)
    err = stdout_console(json_mode=True)
    err.print(f"{spec.name} ({src.name}): terms: {spec.licence}", soft_wrap=True)
    records = do_download(spec.name, source=src.name, data_dir=data_dir, mirror=mirror,
                          from_path=from_path, force=force, progress=not json_out)
    if json_out:
        emit_json({"dataset": spec.name, "source": src.name, "data_dir": str(resolve(data_dir)),
                   "files": records})
        return
    out = stdout_console()
    for r in records:
        note = "" if r["pinned"] else "  (no pinned sha256: recorded this one)"
        out.print(f"{r['status']:>10}  {r['path']}  {r['bytes']} B  sha256 {r['sha256']}{note}",
                  soft_wrap=True)
