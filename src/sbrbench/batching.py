"""Vectorised batches and session graphs, built with tensor operations on the training device.

A split's examples are flat arrays (`ProcessedDataset.examples`): example i reads
`items[start[i] : start[i] + length[i]]` and predicts `target[i]`. `ExampleSource` keeps those
arrays and the item array as tensors on the device; `ExampleSource.batch(index)` gathers a padded
prefix matrix and, for graph models, the SR-GNN session graph of every prefix at once:

* nodes: the unique items of each prefix sorted by item id (as `np.unique` in the official code),
* alias: for each position, the index of its item among the nodes,
* adj_in / adj_out: binary transition matrix `M` (repeated edges count once) with
  `adj_in = rownorm(M^T)` (incoming edges normalised by in-degree) and
  `adj_out = rownorm(M)` (outgoing edges normalised by out-degree).

There is no per-example Python loop: rows are sorted, first occurrences marked and compacted with a
cumulative sum, and edges written with one `index_put_` over the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from sbrbench.data.dataset import ProcessedDataset


@dataclass
class Batch:
    """One batch of examples on the device.

    Shapes:
        seq (B, L) long, prefixes left-aligned and 0-padded; lengths (B,); targets (B,);
        mask (B, L) bool; graph fields (only when built): nodes (B, N) long, 0-padded;
        alias (B, L) long node index per position (0 on padding); adj_in, adj_out (B, N, N) float.
        Packed real units, row-major (R,) long pairs, so that models need no host synchronisation
        to find them: pos_rows / pos_cols the real positions (Σ lengths of them), node_rows /
        node_cols the real nodes (graph batches only). None on hand-made batches.
    """

    seq: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    nodes: torch.Tensor | None = None
    alias: torch.Tensor | None = None
    adj_in: torch.Tensor | None = None
    adj_out: torch.Tensor | None = None
    pos_rows: torch.Tensor | None = None
    pos_cols: torch.Tensor | None = None
    node_rows: torch.Tensor | None = None
    node_cols: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @property
    def last_items(self) -> torch.Tensor:
        """The last item of each prefix (B,)."""
        return self.seq.gather(1, (self.lengths - 1).unsqueeze(1)).squeeze(1)


def pad_prefixes(
    items: torch.Tensor, start: torch.Tensor, length: torch.Tensor, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather prefixes `items[start:start+length]` into a 0-padded (B, max length) matrix and mask."""
    if max_len is None:
        max_len = int(length.max()) if length.numel() else 1
    pos = torch.arange(max_len, device=items.device)
    mask = pos.unsqueeze(0) < length.unsqueeze(1)
    idx = (start.unsqueeze(1) + pos.unsqueeze(0)).clamp_(max=max(items.shape[0] - 1, 0))
    seq = items[idx] * mask
    return seq, mask


def session_graphs(
    seq: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SR-GNN session graphs of a padded batch: (nodes, alias, adj_in, adj_out).

    Nodes are each row's unique items sorted by id; adjacency is binary then normalised by
    in-degree (adj_in, over M^T) and out-degree (adj_out, over M), degree 0 counted as 1.
    """
    return session_graphs_packed(seq, lengths, mask)[:4]


def session_graphs_packed(
    seq: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """`session_graphs` plus the (row, node) pairs of the real nodes, row-major: (..., node_rows, node_cols)."""
    bsz, seqlen = seq.shape
    device = seq.device
    big = torch.iinfo(seq.dtype).max
    keyed = torch.where(mask, seq, torch.full_like(seq, big))
    sorted_vals, order = torch.sort(keyed, dim=1, stable=True)
    valid_sorted = sorted_vals != big
    is_new = torch.ones_like(valid_sorted)
    if seqlen > 1:
        is_new[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    is_new &= valid_sorted
    node_of_sorted = torch.cumsum(is_new, dim=1) - 1  # node index of each sorted position
    n_nodes = int(node_of_sorted[:, -1].max()) + 1 if bsz else 1
    nodes = torch.zeros(bsz, n_nodes, dtype=seq.dtype, device=device)
    rows = torch.arange(bsz, device=device).unsqueeze(1).expand(bsz, seqlen)
    node_rows, node_cols = rows[is_new], node_of_sorted[is_new]
    nodes[node_rows, node_cols] = sorted_vals[is_new]
    alias = torch.empty_like(order)
    alias.scatter_(1, order, node_of_sorted.clamp(min=0))
    alias = alias * mask

    adj = torch.zeros(bsz, n_nodes, n_nodes, device=device)
    if seqlen > 1:
        edge = mask[:, 1:]
        b = rows[:, 1:][edge]
        adj.index_put_((b, alias[:, :-1][edge], alias[:, 1:][edge]), torch.ones((), device=device))
    out_deg = adj.sum(2, keepdim=True).clamp_(min=1.0)
    adj_t = adj.transpose(1, 2)
    in_deg = adj_t.sum(2, keepdim=True).clamp_(min=1.0)
    return nodes, alias, adj_t / in_deg, adj / out_deg, node_rows, node_cols


class ExampleSource:
    """A split's examples as device tensors, batched without Python loops over examples."""

    def __init__(
        self,
        items: torch.Tensor,
        start: np.ndarray,
        length: np.ndarray,
        target: np.ndarray,
        *,
        graphs: bool = False,
    ) -> None:
        device = items.device
        self.items = items
        self.start = torch.as_tensor(start, dtype=torch.long).to(device)
        self.length = torch.as_tensor(length, dtype=torch.long).to(device)
        self.target = torch.as_tensor(target, dtype=torch.long).to(device)
        self.graphs = graphs

    @classmethod
    def from_dataset(
        cls,
        dataset: ProcessedDataset,
        split: str,
        device: torch.device | str = "cpu",
        *,
        graphs: bool = False,
        items: torch.Tensor | None = None,
        limit: int | None = None,
    ) -> ExampleSource:
        """The examples of `split` (the first `limit` of them if given) on `device`."""
        ex = dataset.examples(split)
        if items is None:
            items = item_tensor(dataset, device)
        sl = slice(0, limit)
        return cls(items, ex.start[sl], ex.length[sl], ex.target[sl], graphs=graphs)

    @classmethod
    def concat(cls, parts: Sequence[ExampleSource]) -> ExampleSource:
        """Several sources over the same item tensor as one."""
        first = parts[0]
        out = cls.__new__(cls)
        out.items = first.items
        out.start = torch.cat([p.start for p in parts])
        out.length = torch.cat([p.length for p in parts])
        out.target = torch.cat([p.target for p in parts])
        out.graphs = first.graphs
        return out

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def batch(self, index: torch.Tensor | slice) -> Batch:
        """The batch of the examples at `index` (a slice or a long tensor on the device)."""
        start, length, target = self.start[index], self.length[index], self.target[index]
        # one host synchronisation for both shapes: the longest prefix and the number of clicks
        max_len, total = torch.stack([length.max(), length.sum()]).tolist() if length.numel() else (1, 0)
        seq, mask = pad_prefixes(self.items, start, length, int(max_len))
        b = Batch(seq=seq, lengths=length, targets=target, mask=mask)
        b.pos_rows = torch.repeat_interleave(
            torch.arange(length.shape[0], device=length.device), length, output_size=int(total)
        )
        first = torch.cumsum(length, 0) - length
        b.pos_cols = torch.arange(int(total), device=length.device) - first.index_select(0, b.pos_rows)
        if self.graphs:
            b.nodes, b.alias, b.adj_in, b.adj_out, b.node_rows, b.node_cols = session_graphs_packed(seq, length, mask)
        return b

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, skip: int = 0
    ) -> Iterator[Batch]:
        """Batches in order, or in a random order drawn from `generator` (on CPU)."""
        n = len(self)
        if generator is not None:
            perm = torch.randperm(n, generator=generator).to(self.start.device)
            for i in range(skip * batch_size, n, batch_size):
                yield self.batch(perm[i : i + batch_size])
        else:
            for i in range(skip * batch_size, n, batch_size):
                yield self.batch(slice(i, i + batch_size))

    def n_batches(self, batch_size: int) -> int:
        """Number of batches of `batch_size` (the last may be smaller)."""
        return -(-len(self) // batch_size)


def item_tensor(dataset: ProcessedDataset, device: torch.device | str = "cpu") -> torch.Tensor:
    """The dataset's flat item array as a long tensor on `device`."""
    return torch.from_numpy(dataset.items.astype(np.int64)).to(device)


def fit_sequences(dataset: ProcessedDataset, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """CSR (items, offsets) of the sessions that `splits` read, each up to its last used target.

    Non-neural baselines are fitted on these; for `("train",)` this equals
    `dataset.train_sequences()`, for `("train", "valid")` the protocol's full training set.
    """
    sess = np.concatenate([dataset.split(s).session for s in splits]).astype(np.int64)
    pos = np.concatenate([dataset.split(s).pos for s in splits]).astype(np.int64)
    if sess.size == 0:
        return np.zeros(0, np.int32), np.zeros(1, np.int64)
    n_sess = dataset.n_sessions
    maxpos = np.full(n_sess, -1, dtype=np.int64)
    np.maximum.at(maxpos, sess, pos)
    sessions = np.flatnonzero(maxpos >= 0)
    lens = maxpos[sessions] + 1
    starts = dataset.offsets[sessions]
    out_off = np.zeros(sessions.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=out_off[1:])
    idx = np.repeat(starts - out_off[:-1], lens) + np.arange(out_off[-1])
    return dataset.items[idx], out_off
