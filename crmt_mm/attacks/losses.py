"""Per-sample attack losses on fused logits ``[B, K]`` (all maximised).

CE, the DLR loss and its targeted form are those of Croce & Hein,
"Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; the margin is the loss of the Square
attack (Andriushchenko et al., ECCV 2020). DLR is invariant to shifting and
scaling the logits, so it keeps a useful gradient where the softmax
saturates in float32 and CE's gradient vanishes.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

#: Keeps the DLR denominator away from 0 (equal top logits).
DLR_GUARD = 1e-12

LOSSES = ('ce', 'dlr', 'dlr-targeted')


def _true_logit(z: Tensor, y: Tensor) -> Tensor:
    return z.gather(1, y[:, None])[:, 0]


def best_other_logit(z: Tensor, y: Tensor) -> Tensor:
    """``max_{i != y} z_i`` per sample ``[B]``."""
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(),
                         float('-inf')).amax(dim=1)


def margin(z: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{i != y} z_i`` ``[B]``: < 0 exactly when misclassified
    (the Square attack minimises it)."""
    return _true_logit(z, y) - best_other_logit(z, y)


def ce_loss(z: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy ``[B]``."""
    return F.cross_entropy(z, y, reduction='none')


def dlr_loss(z: Tensor, y: Tensor) -> Tensor:
    """``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` ``[B]``.

    ``pi`` sorts the logits in decreasing order. Needs K >= 3.
    """
    if z.shape[1] < 3:
        raise ValueError(f'the DLR loss needs >= 3 classes, got {z.shape[1]}')
    top = z.topk(3, dim=1).values
    return -margin(z, y) / (top[:, 0] - top[:, 2] + DLR_GUARD)


def targeted_dlr_loss(z: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` ``[B]``.

    Needs K >= 4.
    """
    if z.shape[1] < 4:
        raise ValueError(
            f'the targeted DLR loss needs >= 4 classes, got {z.shape[1]}')
    top = z.topk(4, dim=1).values
    return -(_true_logit(z, y) - _true_logit(z, target)) / (
        top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + DLR_GUARD)


def attack_loss(name: str, z: Tensor, y: Tensor,
                target: Optional[Tensor] = None) -> Tensor:
    """The loss ``name`` (one of :data:`LOSSES`) per sample ``[B]``."""
    if name == 'ce':
        return ce_loss(z, y)
    if name == 'dlr':
        return dlr_loss(z, y)
    return targeted_dlr_loss(z, y, target)


def top_targets(z: Tensor, y: Tensor, n: int) -> Tensor:
    """The ``n`` highest-scoring classes other than ``y``, ``[B, n]``
    (column 0 the most likely), as AutoAttack chooses its targets."""
    others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float('-inf'))
    return others.topk(n, dim=1).indices


__all__ = ['LOSSES', 'DLR_GUARD', 'ce_loss', 'dlr_loss', 'targeted_dlr_loss',
           'margin', 'best_other_logit', 'attack_loss', 'top_targets']
