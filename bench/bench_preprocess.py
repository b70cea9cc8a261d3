"""Benchmark preprocessing: published Diginetica end to end, loading, and synthetic raw logs.

    python bench/bench_preprocess.py [--shared ../shared/datasets] [--yoochoose-clicks 33000000]
                                     [--workdir DIR] [--out results/bench/preprocess.json]

Measures (a) `preprocess diginetica` from the published GCE-GNN pickles incl. save (files
already in the data dir, i.e. after a download), (b) loading the processed dataset, (c) the
`srgnn` recipe on a synthetic Diginetica-like raw CSV (~1.2M clicks) incl. parsing, and (d) the
`srgnn` recipe (1/4 fraction) on a synthetic Yoochoose-sized raw `.dat` (~33M clicks) incl.
parsing. The synthetic files are generated with numpy first (not timed). The raw Diginetica
CSV is login-walled and not available here, so (c) stands in for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synth_sessions(n_clicks: int, n_items: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Session ids, item ids (Zipf-like popularity), click offsets within session, session start (s)."""
    rng = np.random.default_rng(seed)
    lens = np.minimum(1 + rng.geometric(0.35, size=n_clicks // 2), 200)
    cum = np.cumsum(lens)
    n_sess = int(np.searchsorted(cum, n_clicks)) + 1
    lens = lens[:n_sess]
    lens[-1] -= int(cum[n_sess - 1] - n_clicks)
    lens = lens[lens > 0]
    sess = np.repeat(np.arange(1, lens.shape[0] + 1, dtype=np.int64), lens)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    item = rng.choice(n_items, size=sess.shape[0], p=pop / pop.sum()).astype(np.int64) + 1
    start = np.sort(rng.integers(0, days * 86400, size=lens.shape[0]))
    within = np.concatenate([[0], rng.integers(5, 300, size=sess.shape[0] - 1)])
    first = np.r_[0, np.cumsum(lens)[:-1]]
    within[first] = 0
    off = np.cumsum(within)
    off -= np.repeat(off[first], lens)
    return sess, item, off, np.repeat(start, lens)


def write_yoochoose(path: Path, n_clicks: int) -> None:
    """A raw yoochoose-clicks.dat look-alike: session,ISO-time,item,category (no header)."""
    import pandas as pd

    sess, item, off, start = synth_sessions(n_clicks, 52000, 183, seed=1)
    t0 = np.datetime64("2014-04-01T00:00:00", "ms").astype(np.int64)
    ms = t0 + (start + off) * 1000 + (sess * 7919 % 1000)
    item = item + 214500000
    chunk = 2_000_000
    with open(path, "w", encoding="ascii") as fh:
        for a in range(0, sess.shape[0], chunk):
            b = min(a + chunk, sess.shape[0])
            ts = np.datetime_as_string(ms[a:b].astype("datetime64[ms]"), unit="ms")
            df = pd.DataFrame({"s": sess[a:b], "t": np.char.add(ts.astype(str), "Z"), "i": item[a:b], "c": 0})
            df.to_csv(fh, header=False, index=False)


def write_diginetica(path: Path, n_clicks: int) -> None:
    """A raw train-item-views.csv look-alike (camelCase header, `;`, day dates, timeframes)."""
    import pandas as pd

    sess, item, off, start = synth_sessions(n_clicks, 120000, 153, seed=2)
    day = (np.datetime64("2016-01-01") + (start // 86400).astype("timedelta64[D]")).astype(str)
    rng = np.random.default_rng(3)
    perm = rng.permutation(sess.shape[0])  # timeframe order differs from file order within a session
    order = np.lexsort((perm, sess))
    df = pd.DataFrame({"sessionId": sess[order], "userId": "NA", "itemId": item[order],
                       "timeframe": (off * 1000)[order], "eventdate": day[order]})
    df.to_csv(path, sep=";", index=False)


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    """Run the benchmark, print a table and write the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--yoochoose-clicks", type=int, default=33_000_000)
    ap.add_argument("--diginetica-clicks", type=int, default=1_230_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "preprocess.json")
    args = ap.parse_args()

    from sbrbench.data.preprocess import preprocess, preprocess_files
    from sbrbench.data.store import load_dataset
    from sbrbench.io import atomic_write_json

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sbrbench-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    rows = []

    preprocess("diginetica", data_dir=data_dir, mirror=str(args.shared))  # copy + verify once
    t, (ds, _) = timed(preprocess, "diginetica", data_dir=data_dir)
    rows.append(("diginetica (published pickles) preprocess + save", t, len(ds.splits["train"]) + len(ds.splits["valid"])))
    t, ds = timed(load_dataset, "diginetica", data_dir=data_dir)
    rows.append(("diginetica load", t, int(ds.items.shape[0])))

    dpath = work / "synthetic-train-item-views.csv"
    if not dpath.exists():
        write_diginetica(dpath, args.diginetica_clicks)
    t, (ds, _) = timed(preprocess_files, dpath, "diginetica", "synthetic-diginetica", data_dir=data_dir)
    rows.append((f"synthetic Diginetica raw ({args.diginetica_clicks:,} clicks) srgnn", t, ds.counts()["train_examples"]))

    ypath = work / f"synthetic-yoochoose-{args.yoochoose_clicks}.dat"
    if not ypath.exists():
        t_gen, _ = timed(write_yoochoose, ypath, args.yoochoose_clicks)
        print(f"generated {ypath} ({ypath.stat().st_size / 1e9:.2f} GB) in {t_gen:.0f} s")
    t, (ds, _) = timed(preprocess_files, ypath, "yoochoose", "synthetic-yoochoose1_4", data_dir=data_dir,
                       options={"fraction": 4})
    rows.append((f"synthetic Yoochoose raw ({args.yoochoose_clicks:,} clicks) srgnn 1/4", t, ds.counts()["train_examples"]))

    print(f"{'task':<62} {'seconds':>8} {'size':>12}")
    for task, secs, size in rows:
        print(f"{task:<62} {secs:>8.2f} {size:>12,}")
    record = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "results": [{"task": task, "seconds": round(secs, 3), "size": size} for task, secs, size in rows],
        "note": "raw full Diginetica is login-walled and not available here; the synthetic log stands in",
    }
    atomic_write_json(args.out, record)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
