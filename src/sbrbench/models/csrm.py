"""CSRM (Wang et al., SIGIR 2019: Collaborative Session-based Recommendation Machine), faithful
to the official TensorFlow code where that is compatible with a clean evaluation.

Follows `wmeirui/CSRM_SIGIR2019` at commit 7799e205c301066e57de4d531fa3c368452207ff (`csrm.py`,
`ome.py`, `main.py`, `data_process.py`), read for this implementation.

* Inner memory encoder (NARM's, with TF `GRUCell`s): embeddings with dropout (keep 0.75), a
  global GRU whose last state is `c_g`, a local GRU whose states feed the attention
  `α_j = v^T σ(h_j A_1 + h_t A_2)` (sigmoid, no bias, softmax over the clicks), `c_l = Σ α_j h_j`.
  TF's `GRUCell`: `[r, u] = σ(W_g [x; h] + b_g)` (gate bias initialised to 1), `c = tanh(W_c [x;
  r ⊙ h] + b_c)`, `h' = u ⊙ h + (1 − u) ⊙ c`; kernels Glorot-uniform.
* Outer memory encoder (`OME`): a FIFO memory of the last `memory_window` (10,000) attentive
  session representations `c_l` of earlier mini-batches; a session reads its `memory_size` (512)
  most cosine-similar memory rows (cosine + 1e-8 in the denominator), weighted by the softmax of
  those similarities. At the start of an epoch the memory is empty: the first batch reads itself
  and becomes the memory (`direct_assign`).
* Fusion: `c_l`, `c_g` and the memory read `m` are each standardised over their features
  (mean 0, variance + 1e-10), gate `g = σ(c_l w_i + m w_o + c_g w_s)` (scalar per session),
  `c = g [c_l; c_g] + (1 − g) [m; m]`, dropout (keep 0.5), bilinear decoder `c · (B^T e_i)`
  (+1e-10), softmax cross-entropy.
* Initialisation N(0, 2/rows) for every non-GRU matrix (`init_weights`); Adam lr 5e-4, batch 512,
  50 epochs, patience 10 (`main.py`); training batches in the data's stored order, never shuffled
  (`get_minibatches_idx(shuffle=False)`), the memory carried from batch to batch.
* Sizes: `main.py`'s defaults are the Last.fm ones (150 / 150); its comments give the initial
  50 / 100, NARM's sizes, used here for the SR-GNN datasets ([assume]).

Deviations: the official keeps writing into the memory while it evaluates (validation, then
test, batch after batch), so a test prediction reads representations of earlier *test* prefixes —
and, with the longest-prefix-first test layout, prefixes that contain its own target. sbrbench
freezes the memory at evaluation: the memory after the last training batch of the epoch, saved
with the weights (a persistent buffer), is read and never written. With fewer than `memory_size`
rows in the memory all of them are read (the official fails). sbrbench's epoch selection (the
official selects on validation Recall@20).

Components (the paper's ablation CSRM_inner): `outer` — drop it for the inner encoder alone
(`c = [c_l; c_g]`, no memory, no gate).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.batching import Batch, ExampleSource
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, dropped, register_model

if TYPE_CHECKING:
    from sbrbench.data.dataset import ProcessedDataset


class TFGRUCell(nn.Module):
    """TensorFlow 1.x `GRUCell` (reset before the candidate's matrix product, gate bias 1)."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_kernel = nn.Parameter(torch.empty(in_dim + hidden, 2 * hidden))
        self.gate_bias = nn.Parameter(torch.empty(2 * hidden))
        self.cand_kernel = nn.Parameter(torch.empty(in_dim + hidden, hidden))
        self.cand_bias = nn.Parameter(torch.empty(hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform kernels, gate bias 1, candidate bias 0 (TF 1.x defaults)."""
        with torch.no_grad():
            for k in (self.gate_kernel, self.cand_kernel):
                bound = (6.0 / (k.shape[0] + k.shape[1])) ** 0.5
                k.uniform_(-bound, bound)
            self.gate_bias.fill_(1.0)
            self.cand_bias.zero_()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, L, H) (zero after a sequence's end, as `dynamic_rnn`) and last states (B, H)."""
        h = x.new_zeros(x.shape[0], self.hidden)
        outs = []
        for t in range(x.shape[1]):
            xt = x[:, t]
            r, u = torch.sigmoid(torch.cat([xt, h], 1) @ self.gate_kernel + self.gate_bias).chunk(2, 1)
            c = torch.tanh(torch.cat([xt, r * h], 1) @ self.cand_kernel + self.cand_bias)
            new = u * h + (1 - u) * c
            m = mask[:, t : t + 1].to(x.dtype)
            h = m * new + (1 - m) * h
            outs.append(new * m)
        return torch.stack(outs, 1), h


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """`tf.nn.moments` over the features: (x − mean) / sqrt(var + 1e-10)."""
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-10)


@dataclass
class EpochBatch(Batch):
    """A training batch that knows whether it starts an epoch (the memory restarts there)."""

    starting: bool = False


class OrderedSource:
    """The protocol's prefix examples in their stored order every epoch (the official never
    shuffles), the first batch of each epoch marked `starting`."""

    def __init__(self, source: ExampleSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def n_batches(self, batch_size: int) -> int:
        return self.source.n_batches(batch_size)

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[EpochBatch]:
        for i, b in enumerate(self.source.batches(batch_size)):
            yield EpochBatch(**{f: getattr(b, f) for f in b.__dataclass_fields__}, starting=i == 0)


@dataclass
class CSRMParams:
    """CSRM hyper-parameters (defaults: see the module docstring)."""

    emb_dim: int = 50
    hidden: int = 100
    memory_size: int = 512  # neighbours read
    memory_window: int = 10_000  # representations kept
    keep_emb: float = 0.75
    keep_out: float = 0.5
    drop: str = ""  # comma-separated components to switch off: outer


@register_model("csrm")
class CSRM(Model):
    """CSRM: NARM's inner encoder plus an outer memory of recent sessions, fused by a gate."""

    Params: ClassVar[type] = CSRMParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 50, "batch_size": 512, "lr": 5e-4, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }
    components: ClassVar[frozenset[str]] = frozenset({"outer"})

    def __init__(self, n_items: int, params: CSRMParams | None = None) -> None:
        super().__init__(n_items, params)
        p: CSRMParams = self.params
        if min(p.emb_dim, p.hidden, p.memory_size, p.memory_window) < 1 or not (0 < p.keep_emb <= 1 and 0 < p.keep_out <= 1):
            raise SbrError("csrm needs sizes >= 1 and keep probabilities in (0, 1]")
        h = p.hidden
        self.outer = "outer" not in dropped(p)
        self.Wemb = nn.Parameter(torch.empty(n_items, p.emb_dim))
        self.global_gru = TFGRUCell(p.emb_dim, h)
        self.local_gru = TFGRUCell(p.emb_dim, h)
        self.W_encoder = nn.Parameter(torch.empty(h, h))
        self.W_decoder = nn.Parameter(torch.empty(h, h))
        self.bl_vector = nn.Parameter(torch.empty(1, h))
        self.bili = nn.Parameter(torch.empty(p.emb_dim, 2 * h))
        self.inner_encoder = nn.Parameter(torch.empty(h, 1)) if self.outer else None
        self.outer_encoder = nn.Parameter(torch.empty(h, 1)) if self.outer else None
        self.state_encoder = nn.Parameter(torch.empty(h, 1)) if self.outer else None
        # The outer memory: trained state, saved with the weights, read-only in evaluation.
        self.register_buffer("memory", torch.zeros(p.memory_window if self.outer else 0, h))
        self.register_buffer("memory_len", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`init_weights`: N(0, 2/rows) for every non-GRU matrix; TF's GRU initialisation."""
        with torch.no_grad():
            for w in (self.Wemb, self.W_encoder, self.W_decoder, self.bl_vector, self.bili,
                      self.inner_encoder, self.outer_encoder, self.state_encoder):
                if w is not None:
                    w.normal_(0.0, (2.0 / w.shape[0]) ** 0.5)
        self.global_gru.reset_parameters()
        self.local_gru.reset_parameters()

    def example_source(self, dataset: ProcessedDataset, splits: tuple[str, ...], items: torch.Tensor,
                       limit: int | None) -> OrderedSource | None:
        """The protocol's prefix examples, unshuffled, epoch starts marked."""
        if str(dataset.info.get("train_examples", "prefix")) != "prefix":
            return None
        parts = [ExampleSource.from_dataset(dataset, s, items.device, items=items) for s in splits if s in dataset.splits]
        src = ExampleSource.concat(parts) if len(parts) > 1 else parts[0]
        return OrderedSource(src.head(limit) if limit is not None and limit < len(src) else src)

    def _read(self, rep: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The `memory_size` most cosine-similar memory rows, softmax-weighted by similarity."""
        sim = (rep @ memory.t()) / (rep.norm(dim=1, keepdim=True) * memory.norm(dim=1).unsqueeze(0) + 1e-8)
        top, idx = sim.topk(min(self.params.memory_size, memory.shape[0]), dim=1)
        return (torch.softmax(top, 1).unsqueeze(2) * memory[idx]).sum(1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items); column 0 is -inf. Training batches read and write the memory."""
        p: CSRMParams = self.params
        mask = batch.mask
        emb = F.dropout(F.embedding(batch.seq, self.Wemb), 1 - p.keep_emb, self.training)
        _, c_g = self.global_gru(emb, mask)
        outs, last = self.local_gru(emb, mask)
        sim = (torch.sigmoid(outs @ self.W_encoder + (last @ self.W_decoder).unsqueeze(1)) @ self.bl_vector.t()).squeeze(2)
        att = torch.softmax(sim.masked_fill(~mask, float("-inf")), dim=1)
        c_l = (att.unsqueeze(2) * outs).sum(1)
        narm = torch.cat([_standardise(c_l), _standardise(c_g)], 1)
        if self.outer:
            assert self.inner_encoder is not None and self.outer_encoder is not None and self.state_encoder is not None
            n = int(self.memory_len)
            starting = bool(getattr(batch, "starting", False))
            if n == 0 or (self.training and starting):
                read = c_l  # direct_assign: the batch reads itself
                n = 0
            else:
                read = self._read(c_l, self.memory[:n].clone())  # the write below must not alter what backward reads
            if self.training and isinstance(batch, EpochBatch):
                self._write(c_l.detach(), n)
            m = _standardise(read)
            gate = torch.sigmoid(_standardise(c_l) @ self.inner_encoder + m @ self.outer_encoder
                                 + _standardise(c_g) @ self.state_encoder)
            final = gate * narm + (1 - gate) * torch.cat([m, m], 1)
        else:
            final = narm
        final = F.dropout(final, 1 - p.keep_out, self.training)
        scores = (final @ self.bili.t()) @ self.Wemb.t() + 1e-10
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def _write(self, reps: torch.Tensor, n: int) -> None:
        """Append `reps` to the first `n` memory rows, keeping the last `memory_window`."""
        window = self.memory.shape[0]
        kept = torch.cat([self.memory[:n], reps])[-window:]
        self.memory[: kept.shape[0]] = kept
        self.memory_len.fill_(kept.shape[0])
