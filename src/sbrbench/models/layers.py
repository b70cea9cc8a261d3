"""Shared neural building blocks: the SR-GNN gated graph cell and the soft-attention readout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GatedGraphCell(nn.Module):
    r"""The SR-GNN gated graph cell (GGNN with separate incoming and outgoing adjacency).

    .. math::
        a^{in} = A^{in} (W^{in} h + b^{in}_e) + b^{in}, \quad a^{out} = A^{out} (W^{out} h + b^{out}_e) + b^{out}

        r = \sigma(W_{ir} a + b_{ir} + W_{hr} h + b_{hr}), \; z = \sigma(W_{iz} a + b_{iz} + W_{hz} h + b_{hz})

        n = \tanh(W_{in} a + b_{in} + r \odot (W_{hn} h + b_{hn})), \quad h' = n + z \odot (h - n)

    with `a = [a^{in}; a^{out}]`, applied `steps` times.

    Shapes:
        adj_in, adj_out (B, N, N); hidden (B, N, d) → (B, N, d).
    """

    def __init__(self, dim: int, steps: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.steps = steps
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)
        self.b_in = nn.Parameter(torch.empty(dim))
        self.b_out = nn.Parameter(torch.empty(dim))
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))

    def step(self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One propagation step."""
        a_in = torch.matmul(adj_in, self.edge_in(hidden)) + self.b_in
        a_out = torch.matmul(adj_out, self.edge_out(hidden)) + self.b_out
        gi = F.linear(torch.cat([a_in, a_out], 2), self.w_ih, self.b_ih)
        gh = F.linear(hidden, self.w_hh, self.b_hh)
        i_r, i_z, i_n = gi.chunk(3, 2)
        h_r, h_z, h_n = gh.chunk(3, 2)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (hidden - new)

    def forward(self, adj_in: torch.Tensor, adj_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """`steps` propagation steps."""
        for _ in range(self.steps):
            hidden = self.step(adj_in, adj_out, hidden)
        return hidden


class SoftAttentionReadout(nn.Module):
    r"""SR-GNN readout: sigmoid attention of every position on the last one, plus a hybrid layer.

    .. math::
        \alpha_i = q^\top \sigma(W_1 h_{last} + W_2 h_i + c), \quad s_g = \sum_i \alpha_i h_i,
        \quad s_h = W_3 [s_g; h_{last}] \text{ (hybrid) or } s_g

    No softmax over positions (as in the official code); padded positions are masked out.

    Shapes:
        seq_hidden (B, L, d); mask (B, L) bool; lengths (B,) → (B, d).
    """

    def __init__(self, dim: int, hybrid: bool = True, use_global: bool = True) -> None:
        super().__init__()
        self.hybrid = hybrid
        self.use_global = use_global
        self.w_last = nn.Linear(dim, dim) if use_global else None
        self.w_pos = nn.Linear(dim, dim) if use_global else None
        self.q = nn.Linear(dim, 1, bias=False) if use_global else None
        self.transform = nn.Linear(2 * dim, dim) if hybrid else None

    def forward(self, seq_hidden: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The session representation."""
        bsz = seq_hidden.shape[0]
        last = seq_hidden[torch.arange(bsz, device=seq_hidden.device), lengths - 1]
        if self.q is not None and self.w_last is not None and self.w_pos is not None:
            alpha = self.q(torch.sigmoid(self.w_last(last).unsqueeze(1) + self.w_pos(seq_hidden)))
            s_g = (alpha * seq_hidden * mask.unsqueeze(2).to(seq_hidden.dtype)).sum(1)
        else:
            s_g = torch.zeros_like(last)
        if self.transform is not None:
            return self.transform(torch.cat([s_g, last], 1))
        return s_g


def uniform_init_(module: nn.Module, dim: int) -> None:
    """SR-GNN initialisation: every parameter ~ U(-1/sqrt(d), 1/sqrt(d))."""
    stdv = 1.0 / math.sqrt(dim)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-stdv, stdv)
