"""Step-1 objective of CRMT: cross-entropy plus the uni-modal margin term.

``L1(x, y) = log(delta + sum_m sum_{k != y} exp(z_k^(m) - z_y^(m)))``, a
smooth maximum of the negative uni-modal margins (Yang et al., ICLR 2024;
``docs/method.md``), computed as ``logaddexp(logsumexp(...), log delta)``
so it never overflows. The mixup form replaces ``z_y`` by
``lam z_ya + (1 - lam) z_yb`` and excludes both targets from the sum.

The loss sees logits only; how the training inputs were perturbed
(adversarial, mixup, noise) is the recognizer's ``train_perturbation``
(:mod:`crmt_mm.models.train_perturbations`).
"""
import functools
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmaction.registry import MODELS
from torch import Tensor, nn

from crmt_mm.utils import reject_unknown_keys
from ..train_perturbations import moved_loss_keys_message


def margin_regularizer(z: Tensor, target: Tensor, excluded: Tensor,
                       floor: float) -> Tensor:
    """Per-sample ``log(floor + sum_{m, k not excluded} exp(z_k^(m) - t^(m)))``.

    Args:
        z (Tensor): uni-modal logits [M, B, K].
        target (Tensor): the reference logit t^(m) per sample [M, B].
        excluded (Tensor): bool [B, K], classes left out of the sum.
        floor (float): delta >= 0. With 0 the term is unbounded below.

    Returns:
        Tensor: [B].
    """
    diff = (z - target[..., None]).masked_fill(excluded, float('-inf'))
    lse = diff.permute(1, 0, 2).flatten(1).logsumexp(dim=1)
    if floor > 0:
        return torch.logaddexp(lse, torch.full_like(lse, math.log(floor)))
    return lse


def _pick(z: Tensor, labels: Tensor) -> Tensor:
    """``z[m, i, labels[i]]`` for every modality: [M, B, K] -> [M, B]."""
    index = labels[None, :, None].expand(z.shape[0], -1, 1)
    return z.gather(2, index).squeeze(2)


def _reject_moved_keys(cls: type) -> type:
    """Old variant keys fail with their new spelling, not as unknown keys.

    Applied outside :func:`reject_unknown_keys`, so it sees them first.
    """
    init = cls.__init__

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        message = moved_loss_keys_message(kwargs)
        if message is not None:
            raise ValueError(f'{type(self).__name__}: {message}')
        init(self, *args, **kwargs)

    cls.__init__ = checked_init
    return cls


@MODELS.register_module()
@_reject_moved_keys
@reject_unknown_keys
class CRMTMarginLoss(nn.Module):
    """CE + rho * uni-modal margin regulariser, from logits only.

    The recognizer evaluates it on the logits of its (possibly perturbed,
    see ``train_perturbation``) training inputs. With mixup it receives
    both targets and the mixing coefficient. Baselines are configurations:
    JT = ``ConcatHead`` + ``rho=0``; MMAT = ``rho=0`` with a
    ``'MultiModalPGD'`` train perturbation; Mixup = ``rho=0`` with
    ``'Mixup'``.

    Args:
        rho (float): weight of the margin term, >= 0. Defaults to 2.0.
        margin_floor (float): delta inside the log, >= 0 (0 = unbounded
            below). Defaults to 1e-5.

    Example:
        >>> loss = dict(type='CRMTMarginLoss', rho=2.0, margin_floor=1e-5)
    """

    def __init__(self, rho: float = 2.0, margin_floor: float = 1e-5) -> None:
        super().__init__()
        checks = [
            (rho >= 0, f'rho must be >= 0, got {rho}'),
            (margin_floor >= 0, f'margin_floor must be >= 0, got '
             f'{margin_floor}'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f'CRMTMarginLoss: {message}')
        self.rho = float(rho)
        self.margin_floor = float(margin_floor)

    def forward(self, z: Tensor, fused: Tensor, labels: Tensor,
                labels_b: Optional[Tensor] = None,
                lam: float = 1.0) -> Dict[str, Tensor]:
        """Loss parts, each averaged over the batch.

        Args:
            z (Tensor): uni-modal logits [M, B, K].
            fused (Tensor): fused logits [B, K].
            labels (Tensor): targets y (mixup: y_a) [B].
            labels_b (Tensor, optional): mixup partner targets y_b [B].
            lam (float): mixup coefficient of ``labels``. Defaults to 1.0.

        Returns:
            dict: ``loss_cls`` and, when rho > 0, ``loss_margin`` (already
            multiplied by rho).
        """
        if labels_b is None:
            labels_b, lam = labels, 1.0
        loss_cls = lam * F.cross_entropy(fused, labels)
        if lam < 1.0:
            loss_cls = loss_cls + (1 - lam) * F.cross_entropy(fused, labels_b)
        losses = dict(loss_cls=loss_cls)
        if self.rho > 0:
            target = (lam * _pick(z, labels) +
                      (1 - lam) * _pick(z, labels_b))
            excluded = torch.zeros_like(fused, dtype=torch.bool)
            excluded.scatter_(1, labels[:, None], True)
            excluded.scatter_(1, labels_b[:, None], True)
            margin = margin_regularizer(z, target, excluded,
                                        self.margin_floor)
            losses['loss_margin'] = self.rho * margin.mean()
        return losses
