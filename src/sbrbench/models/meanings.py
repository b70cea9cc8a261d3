"""One-line meanings of hyper-parameters, for `sbrbench models NAME`.

A field's own trailing comment in its model's `Params` dataclass wins (`dim: int = 100  # ...`);
otherwise the model-specific entry of `BY_MODEL`, then the generic entry of `GENERIC`. A field with
none of these shows no meaning: add a comment to the field.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from typing import Any

GENERIC: dict[str, str] = {
    "dim": "embedding and hidden size d",
    "emb_dim": "item embedding size",
    "hidden": "hidden size",
    "step": "propagation steps of the gated GNN on the session graph",
    "hybrid": "score with the last click's embedding joined to the session preference (SR-GNN's hybrid readout)",
    "heads": "attention heads",
    "layers": "stacked layers",
    "blocks": "self-attention blocks",
    "inner": "inner size of each Transformer block's feed-forward layer",
    "dropout": "dropout probability",
    "attn_dropout": "dropout on the attention probabilities",
    "hidden_dropout": "dropout on the hidden states",
    "init_std": "standard deviation of the normal initialisation",
    "max_len": "longest history read (older clicks are dropped)",
    "max_position": "positional embeddings (longer prefixes share the last one)",
    "k": "neighbour sessions that score the candidates",
    "sample_size": "candidate neighbour sessions considered (most recent, or a random sample)",
    "sampling": "how candidate neighbours are chosen: recent | random",
    "remind": "reminders: re-score items already clicked in the session (session-rec)",
    "seed": "seed of the random neighbour sampling",
    "normalize": "divide each row of scores by its maximum (session-rec's normalize)",
    "tau": "temperature of the contrastive loss",
    "lmd": "weight of the contrastive loss",
    "sim": "similarity in the contrastive loss: dot | cos",
    "item_negatives": "negatives per item in the item-level contrastive loss",
    "neg_ratio": "sampled negatives per training example (shared by the batch)",
    "drop": "comma-separated components to switch off (ablation)",
}

BY_MODEL: dict[str, dict[str, str]] = {
    "sknn": {"pop_boost": "add pop_boost × the item's normalised count among the neighbours (0: off)"},
    "vsknn": {"push_reminders": "multiply the score of items already in the session by 1 + their count",
              "add_reminders": "lift session items to just above the 17th best score (session-rec add_reminders)"},
    "sr": {"steps": "largest distance (in clicks) between a rule's two items"},
    "ar": {"pruning": "0 = keep all rules; >= 1: top-n per antecedent; < 1: fraction dropped"},
    "narm": {"drop_emb": "dropout on the item embeddings", "drop_ctx": "dropout on the session (context) vector"},
    "stamp": {"stddev": "standard deviation of the normal initialisation of the weights",
              "emb_stddev": "standard deviation of the normal initialisation of the item embeddings"},
    "gru4rec": {"dropout_p_embed": "dropout on the input embeddings", "dropout_p_hidden": "dropout on the GRU's hidden states",
                "momentum": "momentum of the Adagrad optimiser", "n_sample": "extra negatives shared by the mini-batch",
                "sample_alpha": "negatives drawn with probability ∝ support^alpha",
                "bpreg": "score regularisation weight of the bpr-max loss",
                "elu_param": "ELU parameter on the scores for bpr-max (0: linear)",
                "logq": "logQ correction of sampled scores (0: off)"},
    "gcegnn": {"dropout_local": "dropout on the session-graph (local) item features (--dropout_local)",
               "dropout_global": "dropout on the global-graph item features (--dropout_global)",
               "dropout_gcn": "dropout inside the global-graph aggregator (--dropout_gcn)",
               "graph_seed": "seed of the neighbour sampling of the global graph"},
    "cmgnn": {"lgcn_layers": "layers of L-GCN (relation attention on the session graph)",
              "ggcn_layers": "layers of G-GCN (session-aware aggregation on the global graph)",
              "hgcn_layers": "layers of H-GCN (hypergraph convolution, sessions as hyperedges)",
              "beta": "weight β of the InfoNCE loss between the two session vectors",
              "temperature": "InfoNCE temperature τ", "eps": "neighbourhood distance ε of the global item graph",
              "topk": "neighbours kept per item in the global graph",
              "dropout_local": "dropout on the session-graph item features",
              "dropout_global": "dropout on the global-graph item features",
              "dropout_gcn": "dropout inside the global-graph aggregator"},
    "tagnnpp": {"agc_clip": "adaptive gradient clipping: largest gradient-to-weight norm ratio, per unit",
                "agc_eps": "adaptive gradient clipping: floor of the weight norm"},
    "cl4srec": {"crop_eta": "crop augmentation: share η of the sequence kept",
                "mask_gamma": "mask augmentation: share γ of the items masked",
                "reorder_beta": "reorder augmentation: share β of the sequence shuffled"},
    "duorec": {"contrast": "contrastive terms: un (dropout view) | su (same-target positive) | us | us_x (released)",
               "lmd_sem": "weight of the supervised (same-target) contrastive term"},
    "comirec-sa": {"interests": "interest vectors per user (K)", "add_pos": "add positional embeddings before self-attention"},
    "bpr-mf": {"reg_u": "L2 weight on the user (session) factors", "reg_i": "L2 weight on the positive item's factors",
               "reg_j": "L2 weight on the negative item's factors", "reg_bias": "L2 weight on the item biases"},
    "fpmc": {"reg": "L2 weight on the user, previous-item and positive-item factors",
             "reg_j": "L2 weight on the negative item's factors"},
    "csrm": {"keep_emb": "keep probability of the embedding dropout (1 - dropout)",
             "keep_out": "keep probability of the dropout on the final session vector"},
    "gcsan": {"weight": "ω: share of the self-attention output in the session vector (the rest: last GNN state)",
              "reg_weight": "weight of the item-embedding norm penalty (RecBole's EmbLoss)",
              "init_range": "standard deviation of the normal initialisation of Linear/Embedding weights"},
    "lessr": {"num_layers": "EOPA / SGAT layers, alternating, outputs densely connected",
              "feat_drop": "dropout on each layer's input features"},
    "macl-code": {"alpha": "item-level contrastive loss weight", "beta": "session-level contrastive loss weight",
                  "views_per_modality": "random embedding tables per modality (the released code's views)",
                  "dropout_first_epoch_only": "dropout in the first epoch only, as the released code does"},
}


def _field_comments(dc: type) -> dict[str, str]:
    """Trailing `# comment` of each field in a dataclass's own source."""
    try:
        src = inspect.getsource(dc)
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    out: dict[str, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type != tokenize.COMMENT:
                continue
            code = lines[tok.start[0] - 1][: tok.start[1]].strip()
            if ":" in code and code.split(":")[0].strip().isidentifier():
                out.setdefault(code.split(":")[0].strip(), tok.string.lstrip("#").strip())
    except (tokenize.TokenError, IndentationError):
        return out
    return out


def meanings(cls: Any) -> dict[str, str]:
    """Field name → one-line meaning ('' when none is known) for a registered model class."""
    comments: dict[str, str] = {}
    for base in cls.Params.__mro__:
        if dataclasses.is_dataclass(base):
            for k, v in _field_comments(base).items():
                comments.setdefault(k, v)
    family = [cls.name] + [c.name for c in cls.__mro__[1:] if getattr(c, "name", "")]
    out = {}
    for f in dataclasses.fields(cls.Params):
        text = comments.get(f.name) or next((BY_MODEL[m][f.name] for m in family if f.name in BY_MODEL.get(m, {})), "")
        out[f.name] = text or GENERIC.get(f.name, "")
    return out


# The paper (or code) each model follows, short enough for one 80-column line of `sbrbench models`.
FOLLOWS: dict[str, str] = {
    "pop": "SR-GNN paper baseline", "spop": "SR-GNN paper baseline", "itemknn": "SR-GNN paper baseline",
    "sknn": "ContextKNN, session-rec", "vsknn": "VMContextKNN, session-rec",
    "stan": "STAN, SIGIR 2019", "vstan": "V-STAN, UMUAI 2021",
    "sr": "SR rules, session-rec", "ar": "AR rules, session-rec",
    "srgnn": "SR-GNN, AAAI 2019 + code", "tagnn": "TAGNN, SIGIR 2020",
    "tagnn-code": "CRIPAC-DIG/TAGNN code", "tagnnpp": "TAGNN++, arXiv 2107.01516",
    "tagnnpp-code": "The-Learning-Machines/SBR", "gcegnn": "GCE-GNN, SIGIR 2020 + code",
    "cmgnn": "CM-GNN, TMM 2023 (no code)", "narm": "NARM, CIKM 2017", "stamp": "STAMP, KDD 2018",
    "gru4rec": "GRU4Rec, official code", "sasrec": "SASRec, ICDM 2018", "cl4srec": "CL4SRec, ICDE 2022",
    "duorec": "DuoRec, WSDM 2022", "comirec-sa": "ComiRec-SA, KDD 2020", "mclsr": "MCLSR, CIKM 2022",
    "mclsr-ctlab": "CTLab-ITMO MCLSR code", "macl": "MACL paper", "macl-code": "Zhang-xiaokun/MACL code",
    "macl-text": "MACL + MiniLM item text", "bpr-mf": "BPR-MF, UAI 2009", "fpmc": "FPMC, WWW 2010",
    "csrm": "CSRM, SIGIR 2019", "gcsan": "GC-SAN, IJCAI 2019", "lessr": "LESSR, KDD 2020",
}


def follows(cls: Any) -> str:
    """The paper or code a model follows: `FOLLOWS`, else its docstring's title (before the colon)."""
    if cls.name in FOLLOWS:
        return FOLLOWS[cls.name]
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0].split(":")[0].strip() if doc else ""
