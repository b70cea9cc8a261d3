r"""The optimiser of every neural run, and gradient transformations for models' `clip_gradients()`.

`make_optimizer` is Adam with L2 as weight decay (the SR-GNN family's choice).

`adaptive_grad_clip_` is Adaptive Gradient Clipping (AGC, Brock et al. 2021, "High-Performance
Large-Scale Image Recognition Without Normalization", the NFNets paper): every *unit* of a
parameter (one output row of a weight, or the whole of a bias/gain vector) has its gradient
rescaled so that ``||G_i|| / max(||W_i||, eps) <= clipping``:

.. math::
    G_i \leftarrow \begin{cases} \lambda \frac{\max(\|W_i\|, \epsilon)}{\|G_i\|} G_i
    & \text{if } \frac{\|G_i\|}{\max(\|W_i\|, \epsilon)} > \lambda \\ G_i & \text{otherwise}\end{cases}

NFNets' JAX code stores linear weights as (in, out) and reduces over axis 0, i.e. one norm per
output unit; PyTorch stores them as (out, in, ...), so the unit here is the first axis (rows of
a Linear or Embedding weight, output channels of a convolution). The TAGNN++ release ships a port
(`agc.py`, from vballoli/nfnets-pytorch) that reduces 2-D weights over dim 0 (per *input*
column in PyTorch's layout) and rescales the units whose gradient is *below* the threshold; it is
never called during training there. This implementation follows the NFNets paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["adaptive_grad_clip_", "make_optimizer", "unitwise_norm"]


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm per unit: the whole tensor for ndim <= 1, else one norm per index of axis 0.

    The result broadcasts against `x` (shape `()` or `(n, 1, ..., 1)`).
    """
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1).reshape(-1, *([1] * (x.ndim - 1)))


@torch.no_grad()
def adaptive_grad_clip_(
    parameters: Iterable[torch.Tensor] | torch.Tensor, clipping: float = 0.01, eps: float = 1e-3
) -> None:
    """Clip the gradients of `parameters` in place, unit-wise, relative to the parameter norms.

    `clipping` is lambda (NFNets uses 0.01 to 0.16; TAGNN++ 0.01); `eps` floors the parameter norm
    so units initialised at zero can still move. Parameters without a gradient are skipped.
    """
    if clipping <= 0:
        raise ValueError(f"AGC clipping must be > 0, got {clipping}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            raise ValueError("adaptive_grad_clip_ does not support sparse gradients")
        max_norm = unitwise_norm(p.detach()).clamp(min=eps) * clipping
        g_norm = unitwise_norm(g)
        scale = max_norm / g_norm.clamp(min=1e-6)
        g.mul_(torch.where(g_norm > max_norm, scale, torch.ones_like(scale)))


def make_optimizer(model: torch.nn.Module, lr: float, l2: float) -> torch.optim.Optimizer:
    """Adam with L2 as weight decay; the fused kernel when torch has one for the device (same maths)."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=l2, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=l2)
