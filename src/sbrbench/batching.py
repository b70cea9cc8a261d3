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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from sbrbench.errors import SbrError
from sbrbench.registry import unknown_name_message

if TYPE_CHECKING:
    from sbrbench.data.dataset import FitSessions, ProcessedDataset


@dataclass
class Batch:
    """One batch of examples on the device.

    Shapes:
        seq (B, L) long, prefixes left-aligned and 0-padded; lengths (B,); targets (B,);
        mask (B, L) bool; graph fields (only when built): nodes (B, N) long, 0-padded;
        alias (B, L) long node index per position (0 on padding); adj_in, adj_out (B, N, N) float;
        reset (B,) bool (session-parallel sources only): lanes whose session starts at this batch.
        session (B,) long: the dataset index of each example's session (the user, for user
        sequences), from `ExampleSource` and `RandomCutSource`; None on hand-made batches. Models
        that learn per-user structures (MCLSR) read it in training.
        targets may be (B, T), 0-padded, for sources with several targets per example.
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
    reset: torch.Tensor | None = None
    pos_rows: torch.Tensor | None = None
    pos_cols: torch.Tensor | None = None
    node_rows: torch.Tensor | None = None
    node_cols: torch.Tensor | None = None
    session: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @property
    def last_items(self) -> torch.Tensor:
        """The last item of each prefix (B,)."""
        return self.seq.gather(1, (self.lengths - 1).unsqueeze(1)).squeeze(1)


def pad_prefixes(
    items: torch.Tensor, start: torch.Tensor, length: torch.Tensor, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather prefixes `items[start:start+length]` into a 0-padded (B, max_len) matrix and mask.

    `max_len` (the longest length, known on the host) avoids reading it back from the device.
    """
    if max_len is None:
        max_len = int(length.max()) if length.numel() else 1
    max_len = max(int(max_len), 1)
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


def make_batch(seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *,
               graphs: bool = False, total: int | None = None) -> Batch:
    """A `Batch` with its packed real positions, and the SR-GNN session graph of every prefix when
    `graphs` is set. `total` (the number of real clicks, known on the host) avoids a device read."""
    b = Batch(seq=seq, lengths=lengths, targets=targets, mask=mask)
    if total is None:
        total = int(lengths.sum()) if lengths.numel() else 0
    b.pos_rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths,
                                         output_size=int(total))
    first = torch.cumsum(lengths, 0) - lengths
    b.pos_cols = torch.arange(int(total), device=lengths.device) - first.index_select(0, b.pos_rows)
    if graphs:
        b.nodes, b.alias, b.adj_in, b.adj_out, b.node_rows, b.node_cols = session_graphs_packed(seq, lengths, mask)
    return b


class BatchSource(Protocol):
    """Anything the Trainer can draw training batches from (one pass = one epoch)."""

    def __len__(self) -> int:
        """Examples (targets) per epoch."""

    def n_batches(self, batch_size: int) -> int:
        """Batches per epoch (an estimate where the source cannot know in advance)."""

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches, in an order drawn from `generator` when given."""


class ExampleSource:
    """A split's (prefix, target) examples as device tensors, batched without Python loops.

    `targets="next"`: one target per example, (B,); `"remaining"`: every item of the session from
    the example's position on, (B, T) padded with 0 (the ComiRec / remaining-items protocol).
    Prefix lengths are kept on the host too, so a batch's width needs no device synchronisation.
    `session` (optional) is each example's session index, passed on as `Batch.session`.
    `rank_options` are the protocol's options for ranking these targets (`RankCollector`).
    """

    def __init__(
        self,
        items: torch.Tensor,
        start: np.ndarray,
        length: np.ndarray,
        target: np.ndarray,
        *,
        graphs: bool = False,
        session_end: np.ndarray | None = None,
        targets: str = "next",
        session: np.ndarray | None = None,
    ) -> None:
        if targets not in ("next", "remaining"):
            raise ValueError(f"targets must be 'next' or 'remaining', got {targets!r}")
        if targets == "remaining" and session_end is None:
            raise ValueError("targets='remaining' needs session_end")
        device = items.device
        self.items = items
        self.graphs = graphs
        self.targets = targets
        self._length_host = np.asarray(length, dtype=np.int64)
        self._remaining_host = (None if session_end is None else
                                np.asarray(session_end, np.int64) - np.asarray(start, np.int64) - self._length_host)
        self.start = torch.as_tensor(np.asarray(start, np.int64)).to(device)
        self.length = torch.as_tensor(self._length_host).to(device)
        self.target = torch.as_tensor(np.asarray(target, np.int64)).to(device)
        self.session = None if session is None else torch.as_tensor(np.asarray(session, np.int64)).to(device)
        self.rank_options: dict[str, Any] = {}

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
        targets: str = "next",
        history: int | None = None,
    ) -> ExampleSource:
        """The examples of `split` (the first `limit` of them if given) on `device`; with
        `history`, each prefix is cut to its last `history` items (the ComiRec protocol's L)."""
        ex = dataset.examples(split)
        if items is None:
            items = item_tensor(dataset, device)
        sl = slice(0, limit)
        start, length = ex.start[sl], ex.length[sl]
        if history is not None:
            cut = np.maximum(length - int(history), 0)
            start, length = start + cut, length - cut
        return cls(items, start, length, ex.target[sl], graphs=graphs,
                   session_end=ex.session_end[sl], targets=targets,
                   session=dataset.split(split).session[sl].astype(np.int64))

    @classmethod
    def concat(cls, parts: Sequence[ExampleSource]) -> ExampleSource:
        """Several sources over the same item tensor as one."""
        first = parts[0]
        out = cls.__new__(cls)
        out.items, out.graphs, out.targets = first.items, first.graphs, first.targets
        out.start = torch.cat([p.start for p in parts])
        out.length = torch.cat([p.length for p in parts])
        out.target = torch.cat([p.target for p in parts])
        sess = [p.session for p in parts]
        out.session = None if any(x is None for x in sess) else torch.cat(sess)  # type: ignore[arg-type]
        out.rank_options = dict(first.rank_options)
        out._length_host = np.concatenate([p._length_host for p in parts])
        rem = [p._remaining_host for p in parts]
        out._remaining_host = None if any(r is None for r in rem) else np.concatenate(rem)  # type: ignore[arg-type]
        return out

    def head(self, n: int) -> ExampleSource:
        """The first `n` examples."""
        out = ExampleSource.concat([self])
        out.start, out.length, out.target = self.start[:n], self.length[:n], self.target[:n]
        out.session = None if self.session is None else self.session[:n]
        out._length_host = self._length_host[:n]
        out._remaining_host = None if self._remaining_host is None else self._remaining_host[:n]
        return out

    def __len__(self) -> int:
        return int(self._length_host.shape[0])

    def batch(self, index: torch.Tensor | slice, host_index: np.ndarray | slice | None = None) -> Batch:
        """The batch of the examples at `index` (a slice, or a long tensor on the device together
        with the same indices on the host as `host_index`)."""
        hidx = index if host_index is None else host_index
        if isinstance(hidx, torch.Tensor):
            hidx = hidx.cpu().numpy()
        lengths_host = self._length_host[hidx]
        width = int(lengths_host.max()) if lengths_host.size else 1
        start, length = self.start[index], self.length[index]
        seq, mask = pad_prefixes(self.items, start, length, width)
        if self.targets == "remaining":
            assert self._remaining_host is not None
            rem_host = self._remaining_host[hidx]
            t = max(int(rem_host.max()) if rem_host.size else 1, 1)
            col = torch.arange(t, device=start.device)
            rem = torch.as_tensor(rem_host, device=start.device)
            ok = col.unsqueeze(0) < rem.unsqueeze(1)
            pos = (start + length).unsqueeze(1) + col.unsqueeze(0)
            target = self.items[torch.where(ok, pos, 0)] * ok
        else:
            target = self.target[index]
        b = make_batch(seq, length, target, mask, graphs=self.graphs, total=int(lengths_host.sum()))
        b.session = None if self.session is None else self.session[index]
        return b

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None, skip: int = 0
    ) -> Iterator[Batch]:
        """Batches in order, or in a random order drawn from `generator` (on CPU)."""
        n = len(self)
        if generator is not None:
            perm_host = torch.randperm(n, generator=generator)
            perm = perm_host.to(self.start.device)
            perm_np = perm_host.numpy()
            for i in range(skip * batch_size, n, batch_size):
                yield self.batch(perm[i : i + batch_size], perm_np[i : i + batch_size])
        else:
            for i in range(skip * batch_size, n, batch_size):
                yield self.batch(slice(i, i + batch_size))

    def n_batches(self, batch_size: int) -> int:
        """Number of batches of `batch_size` (the last may be smaller)."""
        return -(-len(self) // batch_size)


CUT_RULES = ("random", "last", "all")


class RandomCutSource:
    """One random cut per user per step, as ComiRec's (and MCLSR's) training loop draws examples.

    Each epoch visits every fitted sequence once, in an order drawn from the generator, `batch_size`
    distinct sequences per batch; sequence u of fitted length n is cut at k drawn uniformly from
    {min(min_cut, n−1), …, n−1}: the history is the up-to-`history` items before position k
    (0-based), the target is item k. Sequences shorter than 2 are skipped. `cut="last"` always
    cuts at k = n−1 (one example per user, the last item as target); `cut="all"` makes every
    k in {min(min_cut, n−1), …, n−1} of every sequence an example, shuffled together. Batches carry
    each example's dataset session index (`Batch.session`).
    """

    def __init__(self, items: torch.Tensor, fit: FitSessions, *, history: int, min_cut: int = 4,
                 limit: int | None = None, graphs: bool = False, cut: str = "random") -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        if cut not in CUT_RULES:
            raise SbrError(unknown_name_message("training cut", cut, list(CUT_RULES)))
        keep = np.flatnonzero(fit.lengths >= 2)[:limit]
        self.items = items
        self.history, self.min_cut, self.graphs, self.cut = int(history), int(min_cut), graphs, cut
        self._start = fit.offsets[:-1][keep].astype(np.int64)
        self._len = fit.lengths[keep].astype(np.int64)
        self._session = torch.as_tensor(fit.session[keep].astype(np.int64), device=items.device)
        self._flat = torch.as_tensor(fit.items, dtype=torch.long, device=items.device)
        self._lo = np.minimum(self.min_cut, self._len - 1)
        if cut == "all":  # every (sequence, k) pair
            n_ex = self._len - self._lo
            self._ex_seq = np.repeat(np.arange(self._len.shape[0]), n_ex)
            self._ex_k = np.repeat(self._lo, n_ex) + np.arange(int(n_ex.sum())) - np.repeat(np.cumsum(n_ex) - n_ex, n_ex)

    def __len__(self) -> int:
        return int(self._ex_seq.shape[0]) if self.cut == "all" else int(self._len.shape[0])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
        if self.cut == "random":
            draws = torch.rand(n, generator=generator, dtype=torch.float64).numpy() if generator is not None \
                else np.full(n, 1.0 - 1e-9)
        for i in range(0, n, batch_size):
            j = order[i : i + batch_size]
            if self.cut == "all":
                idx, k = self._ex_seq[j], self._ex_k[j]
            elif self.cut == "last":
                idx = j
                k = self._len[idx] - 1
            else:
                idx = j
                lo = self._lo[idx]
                k = lo + np.floor(draws[idx] * (self._len[idx] - lo)).astype(np.int64)
            yield self._batch(idx, k)

    def _batch(self, idx: np.ndarray, k: np.ndarray) -> Batch:
        h = np.minimum(k, self.history)
        start = torch.as_tensor(self._start[idx] + k - h, device=self.items.device)
        hist = torch.as_tensor(h, device=self.items.device)
        seq, mask = pad_prefixes(self._flat, start, hist, int(h.max()))
        target = self._flat[torch.as_tensor(self._start[idx] + k, device=self.items.device)]
        b = make_batch(seq, hist, target, mask, graphs=self.graphs, total=int(h.sum()))
        b.session = self._session[torch.as_tensor(idx, device=self.items.device)]
        return b


class SessionParallelSource:
    """GRU4Rec's session-parallel mini-batches over the fitted sessions.

    `batch_size` lanes each hold one session; every step yields, per lane, the current item (seq
    (B, 1)) and the next one (targets (B,)); `reset` (B,) marks lanes whose session started at this
    step (the model zeroes their hidden state). A lane whose session ends takes the next session;
    the epoch ends when a lane cannot be refilled, as in the official GRU4Rec. Sessions in their
    stored (time) order, or shuffled by the generator when `shuffle` is set.
    """

    def __init__(self, items: torch.Tensor, fit: FitSessions, *, shuffle: bool = False,
                 limit: int | None = None) -> None:
        keep = np.flatnonzero(fit.lengths >= 2)[:limit]
        self.items = items
        self.shuffle = shuffle
        self._start = fit.offsets[:-1][keep].astype(np.int64)
        self._end = fit.offsets[1:][keep].astype(np.int64)
        self._flat_host = np.asarray(fit.items, dtype=np.int64)
        self._flat = torch.as_tensor(self._flat_host, device=items.device)

    def __len__(self) -> int:
        return int((self._end - self._start - 1).sum())

    def n_batches(self, batch_size: int) -> int:
        return max(len(self) // max(batch_size, 1), 1)

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[Batch]:
        n = self._start.shape[0]
        if n < batch_size:
            raise ValueError(f"session-parallel batches need at least batch_size={batch_size} sessions, got {n}")
        order = (torch.randperm(n, generator=generator).numpy() if (self.shuffle and generator is not None)
                 else np.arange(n))
        lane = np.arange(batch_size)
        nxt = batch_size
        pos = self._start[order[lane]].copy()
        end = self._end[order[lane]].copy()
        reset = np.ones(batch_size, dtype=bool)
        device = self.items.device
        ones = torch.ones(batch_size, 1, dtype=torch.bool, device=device)
        while True:
            steps = int((end - pos).min()) - 1
            for j in range(steps):
                cur = torch.as_tensor(pos + j, device=device)
                yield Batch(seq=self._flat[cur].unsqueeze(1), lengths=torch.ones(batch_size, dtype=torch.long,
                            device=device), targets=self._flat[cur + 1], mask=ones,
                            reset=torch.as_tensor(reset if j == 0 else np.zeros(batch_size, bool), device=device))
            pos += steps
            done = np.flatnonzero(end - pos <= 1)
            for d in done:
                if nxt >= n:
                    return
                pos[d], end[d] = self._start[order[nxt]], self._end[order[nxt]]
                nxt += 1
            reset = np.zeros(batch_size, dtype=bool)
            reset[done] = True


TRAIN_EXAMPLE_KINDS = ("prefix", "random-cut", "session-parallel")


def training_source(model: Any, dataset: ProcessedDataset, splits: Sequence[str], device: torch.device | str,
                    *, items: torch.Tensor | None = None, limit: int | None = None) -> BatchSource:
    """The training examples of a run over its fit `splits`.

    The model may build its own (`Model.example_source`); otherwise the protocol's kind
    (`dataset.info["train_examples"]`, default `prefix`): `prefix` = every (prefix, target)
    example of the fit splits (SR-GNN augmentation; `limit` keeps the first N), `random-cut` =
    `RandomCutSource` (history `dataset.info["history_len"]`, default 50; cut rule
    `dataset.info["train_cut"]`, default `random`; `limit`: first N sequences),
    `session-parallel` = `SessionParallelSource` (`limit`: first N sessions).
    """
    if items is None:
        items = item_tensor(dataset, device)
    own = model.example_source(dataset, tuple(splits), items, limit)
    if own is not None:
        return own
    kind = str(dataset.info.get("train_examples", "prefix"))
    if kind == "prefix":
        parts = [ExampleSource.from_dataset(dataset, s, device, graphs=model.needs_graph, items=items)
                 for s in splits if s in dataset.splits]
        src = ExampleSource.concat(parts) if len(parts) > 1 else parts[0]
        return src.head(limit) if limit is not None and limit < len(src) else src
    fit = dataset.fit_sessions(tuple(splits))
    if kind == "random-cut":
        return RandomCutSource(items, fit, history=int(dataset.info.get("history_len", 50)), limit=limit,
                               graphs=model.needs_graph, cut=str(dataset.info.get("train_cut", "random")),
                               min_cut=int(dataset.info.get("min_cut", 4)))
    if kind == "session-parallel":
        if model.needs_graph:
            raise SbrError(f"{model.name} reads session graphs: it cannot train on session-parallel batches")
        return SessionParallelSource(items, fit, limit=limit)
    raise SbrError(unknown_name_message("kind of training examples", kind, list(TRAIN_EXAMPLE_KINDS)))


def item_tensor(dataset: ProcessedDataset, device: torch.device | str = "cpu") -> torch.Tensor:
    """The dataset's flat item array as a long tensor on `device`."""
    return torch.from_numpy(dataset.items.astype(np.int64)).to(device)

