"""Published figures that sbrbench compares against: facts with their sources.

Values are stored as **fractions** in [0, 1], like sbrbench's own metrics (the papers print
percentages; session-rec prints fractions). In the SR-GNN family of papers "P@20" is the share of
test cases whose target is in the top 20, i.e. sbrbench's `P@20` = `HR@20` for one target per
example; for such single-target tables `lookup` treats HR@K, P@K and Recall@K as the same number.

Confidence marks (from the project's reference notes): "paper" = read from the paper text,
"approx" = the widely cited figure, not checked against the PDF (compare with a tolerance).
Dataset and model names are mapped to sbrbench's registry names.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbrbench.metrics import parse_metric


@dataclass(frozen=True)
class PublishedTable:
    """One published results table."""

    key: str
    source: str
    confidence: str
    metrics: tuple[str, ...]
    datasets: tuple[str, ...]
    single_target: bool = True
    note: str = ""


@dataclass(frozen=True)
class PublishedFigure:
    """One published number: `value` (a fraction) of `metric` for `model` on `dataset`."""

    table: str
    dataset: str
    model: str
    metric: str
    value: float
    source: str
    confidence: str
    note: str = ""


MODEL_NAMES: dict[str, str] = {
    "POP": "pop", "S-POP": "spop", "Item-KNN": "itemknn", "BPR-MF": "bpr-mf", "FPMC": "fpmc", "GRU4Rec": "gru4rec",
    "NARM": "narm", "STAMP": "stamp", "SR-GNN": "srgnn", "RepeatNet": "repeatnet", "CSRM": "csrm",
    "GC-SAN": "gcsan", "TAGNN": "tagnn", "LESSR": "lessr", "DGTN": "dgtn", "Transformer": "transformer",
    "TAGNNpp": "tagnnpp", "GCE-GNN": "gcegnn", "V-SKNN": "vsknn", "SKNN": "sknn",
    "SASRec": "sasrec", "DuoRec": "duorec", "MCLSR": "mclsr",
    "POPRec": "pop", "ComiRec-SA": "comirec-sa", "CL4SRec": "cl4srec", "GCSAN": "gcsan", "S3-Rec_MIP": "s3rec-mip",
}
DATASET_NAMES: dict[str, str] = {
    "yoochoose1_64": "yoochoose1_64", "yoochoose1_4": "yoochoose1_4", "diginetica": "diginetica",
    "tmall": "tmall", "nowplaying": "nowplaying", "rsc15_64": "yoochoose1_64",
    "books": "books", "clothing": "clothing", "toys": "toys", "gowalla": "gowalla",
}

PAPER_TABLES: dict[str, PublishedTable] = {
    t.key: t
    for t in (
        PublishedTable(
            "srgnn-table2",
            "Wu et al., Session-based Recommendation with Graph Neural Networks (SR-GNN), AAAI 2019, Table 2",
            "approx", ("P@20", "MRR@20"), ("yoochoose1_64", "yoochoose1_4", "diginetica"),
        ),
        PublishedTable(
            "tagnnpp-table2",
            "Mitharan et al., Improved Representation Learning for Session-based Recommendation (TAGNN++), Table 2",
            "paper", ("HR@20", "MRR@20"), ("yoochoose1_64", "diginetica"),
            note="Diginetica used a DGTN-style split (68,977 test examples), not the SR-GNN split",
        ),
        PublishedTable(
            "tagnnpp-table3",
            "Mitharan et al., Improved Representation Learning for Session-based Recommendation (TAGNN++), Table 3",
            "paper", ("HR@20", "MRR@20"), ("yoochoose1_64", "diginetica"),
            note="ablation of TAGNN++; variants are named tagnnpp-<variant>",
        ),
        PublishedTable(
            "gcegnn",
            "Wang et al., Global Context Enhanced Graph Neural Networks for Session-based Recommendation (GCE-GNN), SIGIR 2020",
            "approx", ("P@10", "MRR@10", "P@20", "MRR@20"), ("diginetica", "tmall", "nowplaying"),
        ),
        PublishedTable(
            "sessionrec-single",
            "Ludewig et al., session-rec evaluation of neural and non-neural session-based recommenders, single split",
            "approx", ("HR@20", "MRR@20"), ("yoochoose1_64", "diginetica"),
            note="session-rec's own preprocessing (rsc15_64 = Yoochoose 1/64), not the SR-GNN split",
        ),
        PublishedTable(
            "macl",
            "Zhang et al., Rethinking Contrastive Learning in Session-based Recommendation (MACL), Pattern "
            "Recognition 2025 (arXiv 2506.05044)",
            "paper", ("P@20", "MRR@20"), ("macl-cellphones", "macl-grocery", "macl-instacart"),
            note="only relative gains over the best baseline are available: +4.14%-11.90% P@20, "
                 "+2.25%-27.34% MRR@20 (sbrbench reproduce macl shows them beside ours)",
        ),
        PublishedTable(
            "mclsr-table2",
            "MCLSR paper, Table 2 (ComiRec-style protocol on user sequences)",
            "paper", ("Recall@20", "NDCG@20", "HR@20", "Recall@50", "NDCG@50", "HR@50"),
            ("books", "clothing", "toys", "gowalla"), single_target=False,
            note="the exact Books/Clothing/Toys/Gowalla files of this paper are not available here",
        ),
        PublishedTable(
            "mclsr-table3",
            "MCLSR paper, Table 3 (depth L_g of the graph encoders, Metrics@50)",
            "paper", ("Recall@50", "NDCG@50", "HR@50"), ("books", "toys", "gowalla"), single_target=False,
            note="the printed Clothing column repeats the Gowalla column (a copy error) and is left out; rows are "
                 "named mclsr-l_g=<depth> (lower case, as every figure), after `sbrbench ablate mclsr --vary L_g=0,1,2,3` names its variants",
        ),
    )
}

# Raw rows exactly as printed (percent, except session-rec in fractions), one list per dataset
# in the table's dataset order, one value per metric in the table's metric order.
_RAW: dict[str, tuple[float, dict[str, list[list[float | None]]]]] = {
    "srgnn-table2": (100.0, {
        "POP": [[6.71, 1.65], [1.33, 0.30], [0.89, 0.20]],
        "S-POP": [[30.44, 18.35], [27.08, 17.75], [21.06, 13.68]],
        "Item-KNN": [[51.60, 21.81], [52.31, 21.70], [35.75, 11.57]],
        "BPR-MF": [[31.31, 12.08], [3.40, 1.57], [5.24, 1.98]],
        "FPMC": [[45.62, 15.01], [None, None], [26.53, 6.95]],  # no Yoochoose 1/4 run in the paper
        "GRU4Rec": [[60.64, 22.89], [59.53, 22.60], [29.45, 8.33]],
        "NARM": [[68.32, 28.63], [69.73, 29.23], [49.70, 16.17]],
        "STAMP": [[68.74, 29.67], [70.44, 30.00], [45.64, 14.32]],
        "SR-GNN": [[70.57, 30.94], [71.36, 31.89], [50.73, 17.59]],
    }),
    "tagnnpp-table2": (100.0, {
        "GRU4Rec": [[60.64, 22.89], [29.45, 8.33]],
        "NARM": [[68.32, 28.63], [49.70, 16.17]],
        "STAMP": [[68.74, 29.67], [45.64, 14.32]],
        "RepeatNet": [[70.71, 31.03], [47.79, 17.66]],
        "CSRM": [[71.45, 30.36], [50.55, 16.38]],
        "SR-GNN": [[70.87, 30.94], [50.73, 17.59]],
        "GC-SAN": [[70.66, 30.04], [51.70, 17.61]],
        "TAGNN": [[71.02, 31.12], [51.31, 18.03]],
        "LESSR": [[70.64, 30.97], [51.71, 18.15]],
        "DGTN": [[71.18, 31.35], [53.05, 18.07]],
        "Transformer": [[72.15, 30.79], [51.31, 17.14]],
        "TAGNNpp": [[70.74, 32.87], [56.25, 19.86]],
    }),
    "tagnnpp-table3": (100.0, {
        "tagnnpp": [[70.74, 32.87], [56.25, 19.86]],
        "tagnnpp-no_agc": [[70.04, 32.53], [55.46, 19.51]],
        "tagnnpp-no_gnn": [[72.15, 30.79], [51.31, 17.14]],
        "tagnnpp-no_posemb": [[70.37, 32.08], [54.82, 19.18]],
        "tagnnpp-no_transformer": [[71.02, 31.12], [51.31, 18.03]],
    }),
    "gcegnn": (100.0, {
        "GCE-GNN": [[41.16, 18.15, 54.22, 19.04], [28.01, 15.08, 33.42, 15.42], [16.94, 8.03, 22.37, 8.40]],
    }),
    "sessionrec-single": (1.0, {
        "V-SKNN": [[0.6961, 0.2879], [0.5203, 0.1841]],
        "SKNN": [[0.6423, 0.2522], [0.4846, 0.1736]],
        "GRU4Rec": [[0.6528, 0.2752], [0.5097, 0.1750]],
        "NARM": [[0.6998, 0.2957], [0.4979, 0.1585]],
        "STAMP": [[0.6841, 0.2995], [0.4690, 0.1499]],
    }),
    "mclsr-table2": (100.0, {
        "POPRec": [[1.368, 0.597, 3.013, 2.400, 0.826, 5.219], [1.200, 0.374, 2.139, 2.715, 0.640, 4.833],
                   [0.928, 0.510, 2.496, 1.844, 0.774, 4.760], [1.206, 1.191, 5.874, 2.084, 1.678, 9.716]],
        "GRU4Rec": [[3.787, 1.923, 8.710, 6.335, 2.600, 13.597], [1.623, 0.559, 2.777, 2.948, 0.778, 5.085],
                    [3.214, 1.641, 6.926, 5.406, 2.216, 11.554], [5.642, 5.536, 22.450, 9.623, 7.784, 34.321]],
        "ComiRec-SA": [[5.489, 2.262, 11.402, 8.467, 3.082, 17.202], [1.678, 0.427, 3.467, 2.774, 0.723, 5.052],
                       [5.315, 2.114, 11.075, 8.962, 2.952, 17.282], [5.559, 3.891, 19.052, 9.891, 5.725, 32.041]],
        "GCSAN": [[5.721, 2.706, 11.730, 8.455, 3.434, 16.865], [2.242, 0.659, 3.684, 3.309, 0.829, 5.812],
                  [6.593, 2.817, 13.153, 10.018, 3.690, 19.400], [7.869, 6.819, 26.315, 12.793, 9.107, 38.613]],
        "S3-Rec_MIP": [[6.336, 2.964, 13.052, 9.684, 3.894, 19.142], [2.704, 0.873, 4.343, 4.522, 1.116, 6.723],
                       [6.670, 3.073, 13.474, 10.730, 4.072, 20.363], [7.823, 7.351, 27.676, 12.710, 9.752, 39.463]],
        "CL4SRec": [[6.544, 3.161, 13.520, 10.240, 4.113, 20.170], [2.863, 0.927, 4.467, 4.651, 1.199, 7.155],
                    [6.983, 3.072, 14.079, 11.300, 4.095, 21.330], [8.804, 7.601, 29.853, 14.372, 10.630, 43.659]],
        "SASRec": [[6.274, 2.825, 12.765, 9.349, 3.627, 18.547], [2.646, 0.854, 4.188, 4.505, 1.151, 6.705],
                   [6.343, 2.912, 12.838, 10.264, 3.899, 19.837], [8.581, 7.546, 28.931, 13.838, 10.510, 42.380]],
        "DuoRec": [[6.838, 3.257, 14.173, 10.826, 4.308, 21.366], [2.940, 1.018, 4.829, 4.956, 1.356, 7.785],
                   [7.841, 3.418, 15.331, 12.463, 4.612, 23.389], [8.973, 7.618, 30.075, 15.195, 10.735, 44.618]],
        "MCLSR": [[7.469, 3.479, 15.542, 11.583, 4.647, 23.042], [3.138, 1.081, 5.138, 5.352, 1.464, 8.503],
                  [8.254, 3.726, 16.661, 13.328, 5.081, 25.462], [9.317, 7.759, 31.832, 15.972, 11.012, 46.217]],
    }),
    "mclsr-table3": (100.0, {
        "mclsr-l_g=0": [[9.881, 3.799, 20.032], [11.052, 3.847, 21.673], [13.265, 8.728, 40.273]],
        "mclsr-l_g=1": [[10.853, 4.166, 21.782], [13.165, 4.744, 25.069], [15.769, 10.743, 45.620]],
        "mclsr-l_g=2": [[11.583, 4.647, 23.042], [13.328, 5.081, 25.462], [15.972, 11.012, 46.217]],
        "mclsr-l_g=3": [[10.085, 3.936, 20.547], [13.720, 5.187, 26.417], [14.948, 10.094, 43.665]],
    }),
}

# Keys used before table keys took the CLI's hyphenated style (`sbrbench reproduce srgnn-table2`);
# files written then (e.g. results/baselines/*.json "table" fields, leaderboard.csv "source"
# columns) still name tables by them.
_RETIRED_KEYS = {
    "srgnn_table2": "srgnn-table2", "tagnnpp_table2": "tagnnpp-table2",
    "tagnnpp_table3_ablation": "tagnnpp-table3", "sessionrec_single": "sessionrec-single",
    "mclsr_table2": "mclsr-table2",
}


def table_key(key: str) -> str:
    """The current key of a paper table given its current or retired key (unknown keys unchanged)."""
    return _RETIRED_KEYS.get(key, key)


# Order in which tables are preferred when a figure exists in several (same split as sbrbench first).
PREFERENCE = ("srgnn-table2", "gcegnn", "tagnnpp-table2", "sessionrec-single", "mclsr-table2",
              "tagnnpp-table3")
_SINGLE_TARGET_SAME = ("HR", "P", "Recall")


def _build() -> list[PublishedFigure]:
    out: list[PublishedFigure] = []
    for key, (scale, rows) in _RAW.items():
        table = PAPER_TABLES[key]
        for raw_model, per_dataset in rows.items():
            model = MODEL_NAMES.get(raw_model, raw_model)
            for ds, values in zip(table.datasets, per_dataset, strict=True):
                for metric, v in zip(table.metrics, values, strict=True):
                    if v is None:  # the paper prints no figure ("–")
                        continue
                    out.append(PublishedFigure(
                        key, DATASET_NAMES[ds], model, metric, round(v / scale, 6),
                        table.source, table.confidence, table.note,
                    ))
    return out


FIGURES: tuple[PublishedFigure, ...] = tuple(_build())


def _canon(metric: str) -> tuple[str, int]:
    return parse_metric(metric)


def find(
    dataset: str, model: str, metric: str, table: str | None = None
) -> PublishedFigure | None:
    """The published figure for (dataset, model, metric), from `table` or the preferred table.

    For single-target tables, HR@K, P@K and Recall@K are one number (see the module docstring).
    """
    fam, k = _canon(metric)
    tables = (table_key(table),) if table else PREFERENCE
    for key in tables:
        t = PAPER_TABLES.get(key)
        if t is None:
            continue
        for f in FIGURES:
            if f.table != key or f.dataset != dataset.lower() or f.model != model.lower():
                continue
            ffam, fk = _canon(f.metric)
            if fk != k:
                continue
            if ffam == fam or (t.single_target and ffam in _SINGLE_TARGET_SAME and fam in _SINGLE_TARGET_SAME):
                return f
    return None


def lookup(table: str, dataset: str, model: str, metric: str) -> float | None:
    """The figure (a fraction in [0, 1]) printed in `table` for (dataset, model, metric), or None.

    `table` is a key of `PAPER_TABLES` (e.g. "srgnn-table2"; a retired snake_case key such as
    "srgnn_table2" still works); names are sbrbench registry names
    ("diginetica", "srgnn"); `metric` like "P@20" or "MRR@20".
    """
    f = find(dataset, model, metric, table=table)
    return f.value if f else None

