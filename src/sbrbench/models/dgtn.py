"""DGTN (Zheng et al., ICDMW 2020: Dual-channel Graph Transition Network), after the official code.

Follows `kunwuz/DGTN` at commit 4f3d668 (`main.py`, `train.py`, `model/model.py`,
`model/srgnn.py`, `model/multi_sess.py`, `data/multi_sess_graph.py`,
`neigh_retrieval/knn.py`, `neigh_retrieval/neighborhood_retrieval.py`,
`preprocess/cikm16_org_prepro.py`), read for this implementation; PyTorch Geometric's layers are
restated in plain torch (edge lists, `index_add_`). What `main.py` runs (`--item_fusing` is a
`type=bool` flag, so always true; `--using_represent`, the GAT heads and dropout are unused):

* **neighbour sessions** [`knn.py`, `neighborhood_retrieval.py`]: the candidates of an example are
  the sessions that share at least one item with its prefix, an item of their *longest prefix*
  (the session without its last click); of those, the `samples` = 1000 most recent; similarity
  `|A ∩ B| / (sqrt|A| · sqrt|B|)` over the distinct items of the prefix (B) and of the candidate's
  longest prefix (A), rounded to 4 decimals; kept when ≥ `threshold` = 0.5; the `k` most similar
  (ties: the earlier session first, as Python's stable sort), `k` = 120 (`main.py --id 120` reads
  `neigh_data_120`);
* **intra-session channel** [`model/srgnn.py`: `SGConv(K=2)`]: the prefix's session graph (its
  distinct items; one edge per distinct transition u → v; a one-click prefix gives a self-loop), PyG
  1.x `GCNConv.norm`: self-loops added where missing, weight `1/sqrt(d_u d_v)` with `d` the
  *out*-degree (self-loop included; PyG ≥ 1.6 uses the in-degree), messages u → v, `hops` = 2
  propagations, then a Linear layer; node states gathered back into click order;
* **inter-session channel** [`data/multi_sess_graph.py` `multi_process`, `model/multi_sess.py`]: one
  graph of the prefix and its neighbour sessions — each neighbour taken whole (its longest prefix
  with its label appended), the prefix without its target; nodes are the distinct items of all of
  them, edges the distinct transitions of every one of them; the same SGConv (its own weights) over
  it; the prefix's items' states gathered into click order;
* **fusion and scoring** [`model/model.py` `CNNFusing` (`max_fusing`), `Embedding2Score`]: the
  element-wise max of the two channels' states per click; SR-GNN's readout with biases everywhere
  (`alpha_i = q(σ(W_1 v_n + W_2 v_i))`, `s_g = Σ alpha_i v_i` over the clicks, `h = W_3 [v_n; s_g]`);
  scores `h · e_j` against the item embedding table over the whole catalogue; cross-entropy;
* **training** [`main.py`]: every parameter U(-1/sqrt(d), 1/sqrt(d)), d = 100; Adam lr 1e-3 (both
  parameter groups), weight decay 1e-5, batch 128, 15 epochs, `LambdaLR(0.1 ** (epoch // 3))`
  stepped with the epoch number at the start of each epoch (= sbrbench's `epoch-end` StepLR with
  step 3, γ 0.1); the same settings for Diginetica (`cikm16`) and Yoochoose 1/64.

**The released code's inter-session channel does nothing.** `model/multi_sess.py` line
`hidden - self.sgcn(hidden, edge_index)` subtracts instead of assigning, so the neighbour graph's
propagation is computed and discarded: the "inter" states are the prefix items' raw embeddings and
the neighbour sessions never reach the scores. `dgtn` fixes that one character (`inter="sgc"`: the
paper's dual channel, the evident intent); `dgtn-code` (`inter="released"`) is the code as released
(no neighbours are searched, since nothing reads them). The tests compare both against a
re-statement of the official forward pass (with and without the fix).

Deviations from the official code (with the reason):

* **no leakage through the neighbours.** The official search runs over the train *and* test
  examples in one sequence: a test example's neighbours include earlier *test* sessions with their
  labels (test targets) appended. Here neighbours come from the fitted sessions only
  (`ProcessedDataset.fit_sessions`: training sessions, cut after their last fitted target; with
  validation as well only when the run fits on it; never the test split). A training example
  (`model.train()`) may take only fitted sessions *before* its own session in the dataset's session
  order (`Batch.session`; the official's "earlier index" rule — its own session, which holds its
  target, never); an evaluation example may take every fitted session except its own (all of them
  precede a held-out session in time). Batches without `session` (hand-made) exclude nothing;
* a neighbour session is its fitted part (the official: its longest prefix and label, the same
  clicks); the official appends the label *again* each time a session is reused as a neighbour
  (`neigh.append` on a shared list) — that only adds a self-loop on its last item, which the
  normalisation adds anyway, so it is not reproduced;
* unused official modules (SRGNN's own embedding, GCN layers and readout, `NARM`, `ItemFusing`,
  GAT layers, the other fusions, `Embedding2Score`'s W's; in `dgtn-code` the discarded inter SGConv)
  are not created: they change the draws of the initialisation and receive weight decay only;
* the padding id is not a node and column 0 of the scores is -inf (the official drops item 0 and
  shifts targets by one); sbrbench's epoch selection (the official reports the best test HR@20 and
  MRR@20 over 15 epochs, each at its own epoch, no early stopping: `patience` 15);
* the official preprocessing (`preprocess/cikm16_perprocess.py`) is sbrbench's `dgtn` protocol; the
  model trains on any protocol.

Components (`--drop`): `inter` (the intra channel alone: no fusion), `intra` (the inter channel
alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model, register_variant
from sbrbench.models.layers import catalogue_scores, uniform_init_
from sbrbench.models.search import Choice, FloatRange, IntRange

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

INTER_MODES = ("sgc", "released")


@dataclass
class DGTNParams:
    """DGTN hyper-parameters (defaults: the official `main.py` and `neigh_retrieval/knn.py`)."""

    dim: int = 100
    hops: int = 2  # SGConv K
    k: int = 120  # neighbour sessions kept per example
    threshold: float = 0.5  # minimum cosine similarity of a neighbour
    samples: int = 1000  # most recent candidate sessions scored per example
    inter: str = "sgc"  # sgc: propagate over the neighbour graph; released: raw embeddings (the typo)
    drop: str = ""  # comma-separated components to switch off: inter, intra


@dataclass
class SessionGraph:
    """A batch of graphs as one edge list: nodes are distinct (example, item) pairs, sorted by key
    `example * n_items + item`; `src → dst` the distinct edges plus a self-loop on every node;
    `norm` the PyG-1.x GCN weight `1/sqrt(d_src d_dst)` (out-degrees)."""

    keys: torch.Tensor
    items: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    norm: torch.Tensor

    @classmethod
    def build(cls, example: torch.Tensor, item: torch.Tensor, last: torch.Tensor, n_items: int) -> SessionGraph:
        """From clicks in sequence order: `example` and `item` of each click, `last` whether the click
        ends its sequence (no edge to the next click)."""
        keys = example * n_items + item
        uniq, inv = torch.unique(keys, return_inverse=True)
        n = uniq.shape[0]
        link = ~last[:-1]
        src = torch.cat([inv[:-1][link], torch.arange(n, device=keys.device)])
        dst = torch.cat([inv[1:][link], torch.arange(n, device=keys.device)])
        edge = torch.unique(src * n + dst)
        src, dst = edge // n, edge % n
        deg = torch.bincount(src, minlength=n).to(torch.float64)
        inv_sqrt = deg.rsqrt()
        return cls(uniq, uniq % n_items, src, dst, inv_sqrt[src] * inv_sqrt[dst])

    def node_of(self, example: torch.Tensor, item: torch.Tensor, n_items: int) -> torch.Tensor:
        """The node index of each (example, item) pair (all must be nodes)."""
        return torch.searchsorted(self.keys, example * n_items + item)


class SGC(nn.Module):
    """PyG 1.x `SGConv(K)`: `hops` propagations with the graph's GCN weights, then a Linear layer."""

    def __init__(self, dim: int, hops: int) -> None:
        super().__init__()
        self.hops = hops
        self.lin = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, g: SessionGraph) -> torch.Tensor:
        norm = g.norm.to(h.dtype).unsqueeze(1)
        for _ in range(self.hops):
            h = h.new_zeros(h.shape).index_add_(0, g.dst, h.index_select(0, g.src) * norm)
        return self.lin(h)


class Readout(nn.Module):
    """`get_final_s`: `alpha_i = q(σ(W_1 v_n + W_2 v_i))`, `h = W_3 [v_n; Σ alpha_i v_i]` (all with biases)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, dim)
        self.w_2 = nn.Linear(dim, dim)
        self.q = nn.Linear(dim, 1)
        self.w_3 = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, rows: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        v_n = h.index_select(0, last)
        alpha = self.q(torch.sigmoid(self.w_1(v_n).index_select(0, rows) + self.w_2(h)))
        s_g = v_n.new_zeros(v_n.shape).index_add_(0, rows, alpha * h)
        return self.w_3(torch.cat([v_n, s_g], 1))


@register_model("dgtn")
class DGTN(Model):
    """DGTN, ICDMW 2020 + code: SGC on the session graph and on it with its neighbour sessions, max fusion."""

    Params: ClassVar[type] = DGTNParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 15, "batch_size": 128, "lr": 1e-3, "lr_dc": 0.1, "lr_dc_step": 3, "l2": 1e-5,
        "patience": 15,
    }
    # main.py uses the same settings for both of its datasets (only n_node differs)
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {"dim": 100, "k": 120, "epochs": 15, "batch_size": 128, "lr": 1e-3, "l2": 1e-5},
        "yoochoose": {"dim": 100, "k": 120, "epochs": 15, "batch_size": 128, "lr": 1e-3, "l2": 1e-5},
    }
    components: ClassVar[frozenset[str]] = frozenset({"inter", "intra"})
    needs_graph: ClassVar[bool] = False
    # l2 is Adam's weight decay on every parameter, the item table (the output layer) included: at
    # 3e-4 and above SR-GNN learned nothing in 3 epochs on Diginetica (valid HR@20 < 3 %)
    search_space: ClassVar[dict[str, Any]] = {
        "lr": FloatRange(1e-4, 1e-2, log=True), "l2": FloatRange(1e-7, 1e-4, log=True),
        "dim": Choice(50, 100, 150), "k": IntRange(20, 200, step=20),
    }

    def __init__(self, n_items: int, params: DGTNParams | None = None) -> None:
        super().__init__(n_items, params)
        p: DGTNParams = self.params
        if p.inter not in INTER_MODES:
            raise SbrError(f"dgtn hyper-parameter 'inter' must be one of {', '.join(INTER_MODES)}, got {p.inter!r}")
        if p.hops < 1 or p.k < 1 or p.samples < 1 or not 0.0 <= p.threshold <= 1.0:
            raise SbrError("dgtn needs hops >= 1, k >= 1, samples >= 1 and 0 <= threshold <= 1")
        off = dropped(p)
        if {"inter", "intra"} <= off:
            raise SbrError("dgtn: drop 'inter' or 'intra', not both")
        self.use_intra = "intra" not in off
        self.use_inter = "inter" not in off
        self.embedding = nn.Embedding(n_items, p.dim)
        self.intra = SGC(p.dim, p.hops) if self.use_intra else None
        self.inter = SGC(p.dim, p.hops) if self.use_inter and p.inter == "sgc" else None
        self.readout = Readout(p.dim)
        self.needs_neighbours = self.inter is not None
        self.prepared = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), as the official `reset_parameters`."""
        uniform_init_(self, self.params.dim)

    # ---- neighbour sessions -------------------------------------------------------------------
    def prepare(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None
    ) -> None:
        """Index the fitted sessions (the only neighbour candidates); refuses the test split."""
        fit = dataset.fit_sessions(tuple(splits))
        if not self.needs_neighbours:
            return
        if dataset.n_items != self.n_items:
            raise SbrError(f"dgtn was built for {self.n_items} item ids, the dataset has {dataset.n_items}")
        lens = fit.lengths
        self.fit_items = fit.items.astype(np.int64)
        self.fit_offsets = fit.offsets.astype(np.int64)
        self.fit_session = fit.session.astype(np.int64)
        # distinct items of each fitted session's longest prefix (the session without its last click)
        keep = np.ones(self.fit_items.shape[0], dtype=bool)
        keep[self.fit_offsets[1:][lens > 0] - 1] = False
        rows = np.repeat(np.arange(len(fit)), lens)[keep]
        m = sp.csr_matrix((np.ones(rows.shape[0]), (rows, self.fit_items[keep])), shape=(len(fit), self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        self.key_sizes = np.diff(m.indptr).astype(np.float64)
        self.item_sessions = m.T.tocsr()  # (n_items, sessions)
        self.prepared = True

    def neighbours(self, seq: np.ndarray, lengths: np.ndarray, own: np.ndarray | None,
                   earlier_only: bool) -> tuple[np.ndarray, np.ndarray]:
        """The neighbour sessions of each prefix: (example, fitted-session index) pairs, each
        example's in order of decreasing similarity (see the module docstring).

        `own`: each example's dataset session (None: no exclusion); `earlier_only`: candidates must
        precede it in the dataset's session order (training), else they must only differ from it.
        """
        p: DGTNParams = self.params
        b = seq.shape[0]
        mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]
        r, c = np.nonzero(mask)
        pm = sp.csr_matrix((np.ones(r.shape[0]), (r, seq[r, c])), shape=(b, self.n_items))
        pm.sum_duplicates()
        pm.data[:] = 1.0
        prefix_sizes = np.diff(pm.indptr).astype(np.float64)
        overlap = (pm @ self.item_sessions).tocoo()
        rows, cand, inter = overlap.row.astype(np.int64), overlap.col.astype(np.int64), overlap.data
        if own is not None:
            cs = self.fit_session[cand]
            ok = cs < own[rows] if earlier_only else cs != own[rows]
            rows, cand, inter = rows[ok], cand[ok], inter[ok]
        order = np.lexsort((-cand, rows))  # per example, the most recent candidates first
        rows, cand, inter = rows[order], cand[order], inter[order]
        first = np.searchsorted(rows, np.arange(b))
        rank = np.arange(rows.shape[0]) - first[rows]
        ok = rank < p.samples
        rows, cand, inter = rows[ok], cand[ok], inter[ok]
        sim = np.around(inter / (np.sqrt(self.key_sizes[cand]) * np.sqrt(prefix_sizes[rows])), 4)
        ok = sim >= p.threshold
        rows, cand, sim = rows[ok], cand[ok], sim[ok]
        order = np.lexsort((cand, -sim, rows))
        rows, cand = rows[order], cand[order]
        first = np.searchsorted(rows, np.arange(b))
        ok = (np.arange(rows.shape[0]) - first[rows]) < p.k
        return rows[ok], cand[ok]

    def _neighbour_clicks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clicks of every example's neighbour sessions: example, item, ends-its-session."""
        if not self.prepared:
            raise SbrError("dgtn needs prepare(dataset, splits) before use: it indexes the fitted sessions")
        own = None if batch.session is None else batch.session.detach().cpu().numpy().astype(np.int64)
        ex, cand = self.neighbours(batch.seq.detach().cpu().numpy(), batch.lengths.detach().cpu().numpy(),
                                   own, earlier_only=self.training)
        starts, ends = self.fit_offsets[cand], self.fit_offsets[cand + 1]
        lens = ends - starts
        total = int(lens.sum())
        pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        idx = np.repeat(starts, lens) + pos
        last = pos == np.repeat(lens, lens) - 1
        dev = batch.seq.device
        return (torch.from_numpy(np.repeat(ex, lens)).to(dev), torch.from_numpy(self.fit_items[idx]).to(dev),
                torch.from_numpy(last).to(dev))

    # ---- forward ----------------------------------------------------------------------------
    def session_embedding(self, batch: Batch) -> torch.Tensor:
        """The session representation h (B, d)."""
        seq, lengths = batch.seq, batch.lengths
        if batch.pos_rows is not None and batch.pos_cols is not None:
            rows, cols = batch.pos_rows, batch.pos_cols
        else:
            rows, cols = batch.mask.nonzero(as_tuple=True)
        items = seq[rows, cols]
        ends = cols == lengths.index_select(0, rows) - 1
        last = torch.cumsum(lengths, 0) - 1
        emb = self.embedding.weight
        views: list[torch.Tensor] = []
        if self.intra is not None:
            g = SessionGraph.build(rows, items, ends, self.n_items)
            h = self.intra(emb.index_select(0, g.items), g)
            views.append(h.index_select(0, g.node_of(rows, items, self.n_items)))
        if self.use_inter:
            if self.inter is None:  # the released code: the discarded propagation leaves the embeddings
                views.append(emb.index_select(0, items))
            else:
                n_ex, n_it, n_last = self._neighbour_clicks(batch)
                g = SessionGraph.build(torch.cat([n_ex, rows]), torch.cat([n_it, items]),
                                       torch.cat([n_last, ends]), self.n_items)
                h = self.inter(emb.index_select(0, g.items), g)
                views.append(h.index_select(0, g.node_of(rows, items, self.n_items)))
        fused = views[0] if len(views) == 1 else torch.maximum(views[0], views[1])
        return self.readout(fused, rows, last)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) against the item embedding table; column 0 is -inf."""
        return catalogue_scores(self.session_embedding(batch), self.embedding.weight)


DgtnCode = register_variant(
    "dgtn-code", "dgtn", inter="released",
    doc="kunwuz/DGTN code: as released (4f3d668), the inter-session channel's propagation is discarded "
        "(`hidden - self.sgcn(...)`), so it is the raw item embeddings and no neighbours are used.",
)
