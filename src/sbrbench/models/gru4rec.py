"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018), faithful to the official
PyTorch implementation.

Follows `hidasib/GRU4Rec_PyTorch_Official` at commit d1fc31105577665d2f105de1c8d9a38d223a9a22
(`gru4rec_pytorch.py`, `paramfiles/*.py`, README), read for this implementation.

* **Session-parallel mini-batches** (`GRU4RecSource`, the official `SessionDataIterator`):
  `batch_size` lanes each hold one fitted session, sessions in ascending order of their time
  (the official sorts by the first event's time; sbrbench uses the dataset's session time,
  stable, i.e. the stored order where it is missing), never shuffled; each step feeds every lane's
  current item and predicts its next; a lane whose session ends takes the next unused session
  and its hidden state is zeroed; lanes that find no session left are dropped (the batch
  shrinks) and the epoch ends when none is left. The hidden state is detached every step (no
  BPTT). `max_train_examples` keeps the first sessions up to that many targets.
* **Negatives**: the other lanes' targets plus `n_sample` items shared by the mini-batch, drawn
  ∝ support^`sample_alpha` (support = clicks in the fitted sessions) by inverse-CDF search from a
  cache of at most `sample_cache` draws (no more than the epoch still needs), refreshed when used
  up (`SampleCache`), from the epoch's seeded generator. Scores `r = h · W_y[j] + b_y[j]` for the B × (B + n_sample) targets.
* **Losses** (summed over rows, divided by the configured `batch_size`, as the official):
  `cross-entropy` — softmax over the row, −log p of the diagonal (+1e-24), with `logq` > 0
  subtracting logq·log(support) from in-batch columns and logq·α·log(support) from sampled ones
  (the official takes the first `batch_size` columns as "in-batch" even when the batch has
  shrunk; so does this); `bpr-max` — ELU(`elu_param`) (0 = linear) on the scores, softmax
  weights over the non-diagonal columns, −log Σ s_j σ(r_pos − r_j) + `bpreg` Σ s_j r_j².
* **Model** (`GRU4RecModel`): embedding modes `constrained_embedding` (the input embedding *is*
  the output table `W_y`, the tuned choice), `embedding` = k (a separate input table), or
  neither (the one-hot `GRUEmbedding` first layer); dropout `dropout_p_embed` on the input
  and `dropout_p_hidden` on every layer's output (the dropped-out state is carried on, as the
  official); stacked `nn.GRUCell`s; per-item output bias `b_y` (init 0).
* **Optimiser**: `IndexedAdagradM` — Adagrad (ε = 1e-6) with momentum, sparse row updates for the
  embedding tables (`sparse=True`: only rows in the mini-batch move, their momentum too); no
  weight decay (the official removed L2); no learning-rate decay.
* **Initialisation**: the official `compatibility_mode` distributions — every gate block and
  table U(±sqrt(6 / (fan_in + fan_out))), biases 0 — drawn from torch's RNG (the run's seed),
  not numpy's fixed seed 42.
* **Defaults**: the class defaults (layers 100, cross-entropy, batch 64, lr 0.05, 10 epochs,
  n_sample 2048, α 0.5, ...); per dataset the official tuned parameter files
  (`diginetica_bprmax_shared_best.py`; for Yoochoose `rsc15_xe_shared_100_best.py` — the RSC15
  preprocessing, like the SR-GNN protocol's, keeps repeated clicks; the README's RSC15 row
  disagrees with that file (dropout 0.1/0.0, lr 0.1, momentum 0, α 0.75) and the file is used).
* **Evaluation**: the GRU runs over each test prefix from a zero state (what the official
  session-parallel `batch_eval` computes for every event after a session's first), scores all
  items; items never clicked in the fitted sessions — outside the official item map — score
  -1e30 (`mask_unseen`).

Deviations: a test event whose prefix contains an item unseen in training is scored with that
item's untrained input embedding (the official drops such events from the test data); a test
target unseen in training counts as a miss (the official drops it); ranks are sbrbench's
pessimistic ones (the official `batch_eval` default is `conservative`, the same); the sample cache
is per epoch (the official keeps it across epochs); with fewer fitted sessions than `batch_size`,
only that many lanes run (the official fails). Early stopping and epoch selection are sbrbench's
(the official trains a fixed number of epochs); set `patience` ≥ `epochs` to turn them off.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbrbench.batching import Batch
from sbrbench.errors import SbrError
from sbrbench.models.base import Model, register_model

if TYPE_CHECKING:
    from pathlib import Path

    from sbrbench.data.dataset import FitSessions, ProcessedDataset

LOSSES = ("cross-entropy", "bpr-max")
UNSEEN_SCORE = -1e30


@dataclass
class GRU4RecParams:
    """GRU4Rec hyper-parameters (defaults: the official class defaults)."""

    layers: str = "100"  # hidden layer sizes, e.g. "512" or "100,100" (the official "100/100")
    loss: str = "cross-entropy"  # or "bpr-max"
    dropout_p_embed: float = 0.0
    dropout_p_hidden: float = 0.0
    momentum: float = 0.0
    n_sample: int = 2048
    sample_alpha: float = 0.5
    embedding: int = 0  # size of a separate input embedding (0: none)
    constrained_embedding: bool = True  # the input embedding is the output table W_y
    bpreg: float = 1.0
    elu_param: float = 0.5
    logq: float = 0.0
    sample_cache: int = 10_000_000  # negative draws generated at once (no effect on the distribution)
    sparse: bool = True  # sparse embedding gradients and row-wise optimiser updates, as the official
    mask_unseen: bool = True  # items with no fitted click score -1e30 (outside the official item map)


def parse_layers(layers: str) -> list[int]:
    """`"512"`, `"100,100"` or `"100/100"` → [sizes]; one-line error otherwise."""
    try:
        out = [int(x) for x in str(layers).replace("/", ",").split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise SbrError(f"gru4rec hyper-parameter 'layers' must be sizes >= 1 like 512 or 100,100, got {layers!r}")
    return out


def init_parameter_matrix_(t: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """U(±sqrt(6 / (fan_in + fan_out))), the official `_init_numpy_weights` distribution."""
    sigma = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        t.uniform_(-sigma, sigma)


class IndexedAdagradM(torch.optim.Optimizer):
    """The official optimiser: Adagrad with momentum; a sparse gradient updates only its rows.

    Per parameter: `acc += g²`; with momentum m: `mom = m·mom − lr·g / sqrt(acc + ε)`, `p += mom`;
    without: `p −= lr·g / sqrt(acc + ε)`. For a sparse (row) gradient the same on the rows it holds
    only: other rows keep their accumulator and momentum and do not move.
    """

    def __init__(self, params: Any, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0.0 or momentum < 0.0 or eps <= 0.0:
            raise SbrError(f"IndexedAdagradM needs lr > 0, momentum >= 0 and eps > 0 (got {lr}, {momentum}, {eps})")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    def _state(self, p: torch.Tensor, momentum: float) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if "acc" not in state:
            state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if momentum > 0:
                state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self._state(p, momentum)
                if grad.is_sparse:
                    grad = grad.coalesce()
                    idx, vals = grad._indices()[0], grad._values()
                    accs = state["acc"][idx] + vals.pow(2)
                    state["acc"].index_copy_(0, idx, accs)
                    step = vals / accs.add_(eps).sqrt_().mul_(-1.0 / lr)
                    if momentum > 0:
                        mom = state["mom"][idx].mul_(momentum).add_(step)
                        state["mom"].index_copy_(0, idx, mom)
                        p.index_add_(0, idx, mom)
                    else:
                        p.index_add_(0, idx, step)
                else:
                    state["acc"].add_(grad.pow(2))
                    denom = state["acc"].add(eps).sqrt_()
                    if momentum > 0:
                        state["mom"].mul_(momentum).addcdiv_(grad, denom, value=-lr)
                        p.add_(state["mom"])
                    else:
                        p.addcdiv_(grad, denom, value=-lr)
        return loss


@dataclass
class LaneBatch(Batch):
    """A session-parallel step: `seq` (B, 1) current items, `targets` (B,) next items, `reset` (B,)
    lanes whose session starts here, `lanes` (B,) each row's lane (rows of dropped lanes are gone),
    `negatives` (S,) the shared sampled items, `n_lanes` the configured batch size."""

    lanes: torch.Tensor | None = None
    negatives: torch.Tensor | None = None
    n_lanes: int = 0


class SampleCache:
    """Negative items drawn ∝ the sampling weights by inverse-CDF search, `n_sample` per batch,
    generated `rows` batches at a time from `generator` (the official `SampleCache`)."""

    def __init__(self, cdf: torch.Tensor, n_sample: int, cache: int, generator: torch.Generator | None,
                 expected: int | None = None) -> None:
        self.cdf, self.n_sample = cdf, n_sample
        self.max_rows = max(cache // max(n_sample, 1), 1)
        self.expected = expected  # batches the epoch is expected to need: no larger first refill
        self.generator = generator
        self.rows = self.pointer = self.used = 0
        self.samples: torch.Tensor | None = None

    def get(self) -> torch.Tensor:
        if self.pointer >= self.rows:
            left = None if self.expected is None else self.expected - self.used
            self.rows = self.max_rows if left is None else max(min(self.max_rows, left + 8), 1)
            u = torch.rand(self.rows * self.n_sample, generator=self.generator).to(self.cdf.device)
            self.samples = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.cdf.shape[0] - 1)
            self.samples = self.samples.view(self.rows, self.n_sample)
            self.pointer = 0
        self.used += 1
        assert self.samples is not None
        out = self.samples[self.pointer]
        self.pointer += 1
        return out


class GRU4RecSource:
    """The official session-parallel iterator over the fitted sessions (see the module docstring)."""

    def __init__(self, fit: FitSessions, order: np.ndarray, device: torch.device | str, *,
                 cdf: torch.Tensor | None = None, n_sample: int = 0, sample_cache: int = 10_000_000,
                 limit: int | None = None) -> None:
        lengths = fit.lengths
        order = order[lengths[order] >= 2]  # a one-click session yields no step
        if limit is not None:
            cum = np.cumsum(lengths[order] - 1)
            order = order[: int(np.searchsorted(cum, limit)) + 1]
        self.start = fit.offsets[:-1][order].astype(np.int64)
        self.end = fit.offsets[1:][order].astype(np.int64)
        self.flat = torch.as_tensor(fit.items, dtype=torch.long, device=device)
        self.device = device
        self.cdf, self.n_sample, self.sample_cache = cdf, int(n_sample), int(sample_cache)

    def __len__(self) -> int:
        return int((self.end - self.start - 1).sum())

    def n_batches(self, batch_size: int) -> int:
        return max(-(-len(self) // max(batch_size, 1)), 1)

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None) -> Iterator[LaneBatch]:
        n = self.start.shape[0]
        width = min(int(batch_size), n)
        if width < 1:
            return
        cache = (SampleCache(self.cdf, self.n_sample, self.sample_cache, generator, self.n_batches(width))
                 if self.n_sample > 0 and self.cdf is not None else None)
        dev = self.device
        iters = np.arange(width)
        maxiter = width - 1
        lanes = np.arange(width)
        start, end = self.start[iters].copy(), self.end[iters].copy()
        reset = np.ones(width, dtype=bool)
        consts: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        while True:
            b = start.shape[0]
            if b not in consts:
                consts[b] = (torch.ones(b, dtype=torch.long, device=dev), torch.ones(b, 1, dtype=torch.bool, device=dev),
                             torch.zeros(b, dtype=torch.bool, device=dev))
            ones, mask, no_reset = consts[b]
            lane_t = torch.as_tensor(lanes, device=dev)
            minlen = int((end - start).min())
            pos = torch.as_tensor(start, device=dev)
            cur = self.flat[pos]
            for i in range(minlen - 1):
                nxt = self.flat[pos + (i + 1)]
                yield LaneBatch(seq=cur.unsqueeze(1), lengths=ones, targets=nxt, mask=mask,
                                reset=torch.as_tensor(reset, device=dev) if i == 0 else no_reset,
                                lanes=lane_t, negatives=cache.get() if cache is not None else None,
                                n_lanes=width)
                cur = nxt
            start = start + minlen - 1
            finished = end - start <= 1
            n_fin = int(finished.sum())
            iters[finished] = maxiter + np.arange(1, n_fin + 1)
            maxiter += n_fin
            valid = iters < n
            if not valid.any():
                return
            refill = finished & valid
            start[refill] = self.start[iters[refill]]
            end[refill] = self.end[iters[refill]]
            reset = refill[valid]
            iters, start, end, lanes = iters[valid], start[valid], end[valid], lanes[valid]


class GRUEmbedding(nn.Module):
    """The official one-hot first layer: a GRU layer whose input weights are an item table."""

    def __init__(self, n_items: int, dim: int, sparse: bool) -> None:
        super().__init__()
        self.Wx0 = nn.Embedding(n_items, 3 * dim, sparse=sparse)
        self.Wrz0 = nn.Parameter(torch.empty(dim, 2 * dim))
        self.Wh0 = nn.Parameter(torch.empty(dim, dim))
        self.Bh0 = nn.Parameter(torch.zeros(3 * dim))
        self.n_items, self.dim = n_items, dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Compatibility-mode blocks: three (n_items, d), two (d, d), one (d, d); bias 0."""
        d = self.dim
        for k in range(3):
            init_parameter_matrix_(self.Wx0.weight.data[:, k * d : (k + 1) * d], self.n_items, d)
        for k in range(2):
            init_parameter_matrix_(self.Wrz0.data[:, k * d : (k + 1) * d], d, d)
        init_parameter_matrix_(self.Wh0, d, d)
        with torch.no_grad():
            self.Bh0.zero_()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        vx = self.Wx0(x) + self.Bh0
        vrz = h @ self.Wrz0
        vx_x, vx_r, vx_z = vx.chunk(3, 1)
        vh_r, vh_z = vrz.chunk(2, 1)
        r = torch.sigmoid(vx_r + vh_r)
        z = torch.sigmoid(vx_z + vh_z)
        cand = torch.tanh((r * h) @ self.Wh0 + vx_x)
        return (1.0 - z) * h + z * cand


@register_model("gru4rec")
class GRU4Rec(Model):
    """GRU4Rec: session-parallel GRU with sampled negatives, cross-entropy or BPR-max, Adagrad."""

    Params: ClassVar[type] = GRU4RecParams
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 10, "batch_size": 64, "lr": 0.05, "lr_dc": 1.0, "l2": 0.0, "patience": 10,
    }
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "diginetica": {  # paramfiles/diginetica_bprmax_shared_best.py
            "loss": "bpr-max", "constrained_embedding": True, "embedding": 0, "elu_param": 1.0, "layers": "512",
            "epochs": 10, "batch_size": 128, "dropout_p_embed": 0.5, "dropout_p_hidden": 0.3, "lr": 0.05,
            "momentum": 0.15, "n_sample": 2048, "sample_alpha": 0.3, "bpreg": 0.9, "logq": 0.0,
        },
        "yoochoose": {  # paramfiles/rsc15_xe_shared_100_best.py
            "loss": "cross-entropy", "constrained_embedding": True, "embedding": 0, "elu_param": 0.0, "layers": "100",
            "epochs": 10, "batch_size": 32, "dropout_p_embed": 0.0, "dropout_p_hidden": 0.4, "lr": 0.2,
            "momentum": 0.2, "n_sample": 2048, "sample_alpha": 0.5, "bpreg": 0.0, "logq": 1.0,
        },
    }

    def __init__(self, n_items: int, params: GRU4RecParams | None = None) -> None:
        super().__init__(n_items, params)
        p: GRU4RecParams = self.params
        self.sizes = parse_layers(p.layers)
        if p.loss not in LOSSES:
            raise SbrError(f"gru4rec hyper-parameter 'loss' must be one of {', '.join(LOSSES)}, got {p.loss!r}")
        if not (0 <= p.dropout_p_embed < 1 and 0 <= p.dropout_p_hidden < 1):
            raise SbrError("gru4rec dropouts must be in [0, 1)")
        if p.n_sample < 0 or p.sample_cache < 1 or p.embedding < 0 or p.momentum < 0:
            raise SbrError("gru4rec needs n_sample >= 0, sample_cache >= 1, embedding >= 0 and momentum >= 0")
        if p.bpreg < 0 or p.elu_param < 0 or p.logq < 0 or p.sample_alpha < 0:
            raise SbrError("gru4rec needs bpreg, elu_param, logq and sample_alpha >= 0")
        sizes = self.sizes
        self.start = 0
        self.E: nn.Embedding | None = None
        self.GE: GRUEmbedding | None = None
        if p.constrained_embedding:
            n_input = sizes[-1]
        elif p.embedding:
            self.E = nn.Embedding(n_items, p.embedding, sparse=p.sparse)
            n_input = p.embedding
        else:
            self.GE = GRUEmbedding(n_items, sizes[0], p.sparse)
            n_input = n_items
            self.start = 1
        self.DE = nn.Dropout(p.dropout_p_embed)
        self.G = nn.ModuleList(
            [nn.GRUCell(sizes[i - 1] if i > 0 else n_input, sizes[i]) for i in range(self.start, len(sizes))])
        self.D = nn.ModuleList([nn.Dropout(p.dropout_p_hidden) for _ in range(self.start, len(sizes))])
        self.Wy = nn.Embedding(n_items, sizes[-1], sparse=p.sparse)
        self.By = nn.Embedding(n_items, 1, sparse=p.sparse)
        # Fitted-data statistics (`prepare`): click support per item; defaults make an unprepared
        # model usable (uniform sampling, nothing masked).
        support = torch.ones(n_items)
        support[0] = 0
        self.register_buffer("support", support, persistent=False)
        self.register_buffer("sample_cdf", self._cdf(support), persistent=False)
        self._state: list[torch.Tensor] | None = None
        self.reset_parameters()

    # ---- set-up -----------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The official compatibility-mode distributions (see the module docstring)."""
        sizes, n = self.sizes, self.n_items
        if self.E is not None:
            init_parameter_matrix_(self.E.weight, n, self.E.weight.shape[1])
        if self.GE is not None:
            self.GE.reset_parameters()
        for cell in self.G:
            h, n_in = cell.hidden_size, cell.input_size
            for k in range(3):
                init_parameter_matrix_(cell.weight_ih.data[k * h : (k + 1) * h], n_in, h)
            for k in range(3):
                init_parameter_matrix_(cell.weight_hh.data[k * h : (k + 1) * h], h, h)
            with torch.no_grad():
                cell.bias_ih.zero_()
                cell.bias_hh.zero_()
        init_parameter_matrix_(self.Wy.weight, n, sizes[-1])
        with torch.no_grad():
            self.By.weight.zero_()

    def _cdf(self, support: torch.Tensor) -> torch.Tensor:
        w = support.double().pow(self.params.sample_alpha) * (support > 0)
        total = w.sum()
        cdf = (w.cumsum(0) / total if total > 0 else torch.linspace(0, 1, support.shape[0], dtype=torch.float64))
        cdf[-1] = 1.0
        return cdf.float()

    def prepare(self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None) -> None:
        """Item support (clicks in the fitted sessions): the sampling distribution, logQ and the
        item map (items without support are not scored)."""
        fit = dataset.fit_sessions(splits)
        support = torch.from_numpy(np.bincount(fit.items, minlength=self.n_items)[: self.n_items].astype(np.float32))
        support[0] = 0
        self.support = support.to(self.support.device)
        self.sample_cdf = self._cdf(support).to(self.support.device)

    def example_source(self, dataset: ProcessedDataset, splits: tuple[str, ...], items: torch.Tensor,
                       limit: int | None) -> GRU4RecSource:
        """The official session-parallel mini-batches over the fitted sessions, in time order."""
        fit = dataset.fit_sessions(splits)
        order = np.arange(len(fit))
        if dataset.session_time is not None:
            t = dataset.session_time[fit.session]
            if np.isfinite(t).all():
                order = np.argsort(t, kind="stable")
        p: GRU4RecParams = self.params
        return GRU4RecSource(fit, order, items.device, cdf=self.sample_cdf.to(items.device), n_sample=p.n_sample,
                             sample_cache=p.sample_cache, limit=limit)

    def configure_optimizer(self, lr: float, l2: float) -> torch.optim.Optimizer:
        """The official `IndexedAdagradM` (lr, momentum); GRU4Rec has no L2 regularisation."""
        if l2 > 0:
            raise SbrError("gru4rec has no L2 regularisation (the official code removed it; dropout regularises): "
                           f"leave l2 at 0, got {l2}")
        return IndexedAdagradM(self.parameters(), lr=lr, momentum=self.params.momentum)

    # ---- the network ------------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, hidden: list[torch.Tensor], training: bool,
              embedded: torch.Tensor | None = None) -> torch.Tensor:
        """One GRU step for items `x` (B,) (or their looked-up input vectors `embedded`); updates
        `hidden` in place of its list entries and returns the top layer's output."""
        if self.GE is not None:
            e = self.GE(x, hidden[0])
        elif embedded is not None:
            e = embedded
        elif self.E is not None:
            e = self.E(x)
        else:
            e = self.Wy(x)
        if training:
            e = self.DE(e)
        if self.GE is not None:
            hidden[0] = e
        out = e
        for j, cell in enumerate(self.G):
            i = j + self.start
            out = cell(out, hidden[i])
            if training:
                out = self.D[j](out)
            hidden[i] = out
        return out

    def _run_prefixes(self, batch: Batch, training: bool) -> torch.Tensor:
        """The top layer's state after each prefix, the GRU run from a zero state (B, H_last).

        A row whose prefix is a prefix of the row before it (the prefixes of one session, longest
        first, as the protocols store them) reads its state from that row's run: the GRU runs once
        per chain of such rows, as the official session-parallel evaluation runs once per session.
        """
        seq, lengths = batch.seq, batch.lengths
        bsz = seq.shape[0]
        ids = torch.arange(bsz, device=seq.device)
        if bsz > 1:
            inside = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0) < lengths[1:].unsqueeze(1)
            same = ((seq[:-1] * inside) == seq[1:]).all(1) & (lengths[1:] <= lengths[:-1])
            new = torch.cat([same.new_ones(1), ~same])
        else:
            new = torch.ones(bsz, dtype=torch.bool, device=seq.device)
        roots = ids[new]
        chain = torch.cumsum(new.long(), 0) - 1  # each row's chain (its root's index among the roots)
        rseq, rlen = seq[roots], lengths[roots]
        dtype = self.Wy.weight.dtype
        hidden = [torch.zeros(rseq.shape[0], s, device=seq.device, dtype=dtype) for s in self.sizes]
        tops = []
        for t in range(rseq.shape[1]):
            before = list(hidden)
            self._step(rseq[:, t], hidden, training)
            live = (rlen > t).unsqueeze(1)
            for i in range(len(hidden)):
                hidden[i] = torch.where(live, hidden[i], before[i])
            tops.append(hidden[-1])
        return torch.stack(tops, 1)[chain, lengths - 1]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores (B, n_items) of the state after each prefix; column 0 -inf, unseen items -1e30."""
        h = self._run_prefixes(batch, self.training)
        scores = h @ self.Wy.weight.t() + self.By.weight.t()
        if self.params.mask_unseen:
            scores = scores.masked_fill(self.support == 0, UNSEEN_SCORE)
        scores[:, 0] = float("-inf")
        return scores

    # ---- training ---------------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        """The official sampled loss of one session-parallel step (or of hand-made prefix batches:
        the GRU over each prefix, negatives drawn from torch's RNG)."""
        p: GRU4RecParams = self.params
        if isinstance(batch, LaneBatch) and batch.lanes is not None:
            return self._lane_loss(batch)
        h = self._run_prefixes(batch, True)
        neg = None
        if p.n_sample > 0:
            u = torch.rand(p.n_sample, device=self.sample_cdf.device)
            neg = torch.searchsorted(self.sample_cdf, u, right=True).clamp_(max=self.n_items - 1)
        y = batch.targets if neg is None else torch.cat([batch.targets, neg])
        out = self.Wy(y)
        r = h @ out.t() + self.By(y).t()
        return self.sampled_loss(r, y, len(batch)) / len(batch)

    def carried_state(self) -> dict[str, torch.Tensor]:
        """Each layer's hidden states of the session-parallel lanes, carried between steps."""
        return {f"hidden{k}": h.detach() for k, h in enumerate(self._state or [])}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        device = self.Wy.weight.device
        self._state = [state[f"hidden{k}"].to(device) for k in range(len(state))] or None

    def _lane_loss(self, batch: LaneBatch) -> torch.Tensor:
        assert batch.lanes is not None and batch.reset is not None
        width = batch.n_lanes
        x = batch.seq[:, 0]
        y = batch.targets if batch.negatives is None else torch.cat([batch.targets, batch.negatives])
        dtype = self.Wy.weight.dtype
        if self._state is None or self._state[0].shape[0] != width or self._state[0].device != x.device:
            self._state = [torch.zeros(width, s, device=x.device, dtype=dtype) for s in self.sizes]
        keep = (~batch.reset).unsqueeze(1).to(dtype)
        hidden = [s[batch.lanes] * keep for s in self._state]
        if self.params.constrained_embedding:  # one lookup of inputs and outputs, as the official
            both = self.Wy(torch.cat([x, y]))
            emb, out = both[: x.shape[0]], both[x.shape[0] :]
            top = self._step(x, hidden, True, embedded=emb)
        else:
            top = self._step(x, hidden, True)
            out = self.Wy(y)
        r = top @ out.t() + self.By(y).t()
        with torch.no_grad():
            for s, h in zip(self._state, hidden):
                s[batch.lanes] = h.detach()
        return self.sampled_loss(r, y, width) / width

    def sampled_loss(self, r: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
        """The official loss (summed over rows) of scores `r` (B, B + S) whose diagonal holds the
        targets; `y` the column items, `m` the official `M` (the configured batch size)."""
        p: GRU4RecParams = self.params
        if p.loss == "cross-entropy":
            if p.logq > 0:
                logs = torch.log(self.support[y].clamp(min=1.0))
                logs = torch.cat([logs[:m], logs[m:] * p.sample_alpha])
                r = r - p.logq * logs
            x = torch.exp(r - r.max(dim=1, keepdim=True)[0])
            x = x / x.sum(dim=1, keepdim=True)
            return -torch.sum(torch.log(torch.diagonal(x) + 1e-24))
        if p.elu_param > 0:
            r = F.elu(r, p.elu_param)
        hm = 1.0 - torch.eye(*r.shape, dtype=r.dtype, device=r.device)
        masked = r * hm
        e = torch.exp(masked - masked.max(dim=1, keepdim=True)[0]) * hm
        s = e / e.sum(dim=1, keepdim=True)
        target = torch.diagonal(r).unsqueeze(1)
        return torch.sum(-torch.log(torch.sum(torch.sigmoid(target - r) * s, dim=1) + 1e-24)
                         + p.bpreg * torch.sum(r.pow(2) * s, dim=1))
