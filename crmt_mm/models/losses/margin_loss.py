"""Step-1 objective of CRMT: cross-entropy plus the uni-modal margin term.

``L1(x, y) = log(delta + sum_m sum_{k != y} exp(z_k^(m) - z_y^(m)))``, a
smooth maximum of the negative uni-modal margins (crmt.md §3), computed as
``logaddexp(logsumexp(...), log delta)`` so it never overflows. The
mixup form (crmt.md §5) replaces ``z_y`` by ``lam z_ya + (1 - lam) z_yb``
and excludes both targets from the sum.
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmaction.registry import MODELS
from torch import Tensor, nn

from crmt_mm.utils import reject_unknown_keys


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


@MODELS.register_module()
@reject_unknown_keys
class CRMTMarginLoss(nn.Module):
    """CE + rho * uni-modal margin regulariser, with the CRMT variants.

    The variant decides what inputs the loss is evaluated on; the recognizer
    prepares them (adversarial examples or mixup) and calls this module on
    the resulting logits.

    - ``'JT'``: clean inputs.
    - ``'AT'``: adversarial inputs only, from a joint L2 PGD attack on the
      fused cross-entropy (``at_eps``, ``at_steps``, step ``at_eps /
      at_steps``, no random start; crmt.md §4).
    - ``'Mix'``: mixup with one ``lam ~ Beta(mix_alpha, mix_alpha)`` and one
      permutation per batch shared by all modalities; the intended mixup
      margin (crmt.md §5), not the reference's.

    Baselines are configurations: JT = ``ConcatHead`` + ``variant='JT',
    rho=0``; MMAT = ``variant='AT', rho=0``; Mixup = ``variant='Mix', rho=0``.

    Args:
        variant (str): ``'JT'``, ``'AT'`` or ``'Mix'``. Defaults to ``'JT'``.
        rho (float): weight of the margin term, >= 0. Defaults to 2.0.
        margin_floor (float): delta inside the log, >= 0 (0 = unbounded
            below). Defaults to 1e-5.
        at_eps (float): AT joint L2 budget (normalised input space).
            Defaults to 0.1.
        at_steps (int): AT PGD steps. Defaults to 5.
        at_bn (str): BatchNorm during the attack: ``'frozen_stats'`` (train
            mode, running statistics restored afterwards), ``'train'``
            (reference parity: statistics updated), ``'eval'``.
            Defaults to ``'frozen_stats'``.
        at_clamp (bool): clamp adversarial images to the valid pixel range.
            Defaults to False (reference parity).
        mix_alpha (float): Beta parameter of mixup, > 0. Defaults to 1.0.

    Example:
        >>> loss = dict(type='CRMTMarginLoss', variant='AT', rho=2.0,
        ...             at_eps=0.1, at_steps=5)
    """
    VARIANTS = ('JT', 'AT', 'Mix')
    AT_BN = ('frozen_stats', 'train', 'eval')

    def __init__(self, variant: str = 'JT', rho: float = 2.0,
                 margin_floor: float = 1e-5, at_eps: float = 0.1,
                 at_steps: int = 5, at_bn: str = 'frozen_stats',
                 at_clamp: bool = False, mix_alpha: float = 1.0) -> None:
        super().__init__()
        checks = [
            (variant in self.VARIANTS, f'variant must be one of '
             f'{self.VARIANTS}, got {variant!r}'),
            (rho >= 0, f'rho must be >= 0, got {rho}'),
            (margin_floor >= 0, f'margin_floor must be >= 0, got '
             f'{margin_floor}'),
            (at_eps >= 0, f'at_eps must be >= 0, got {at_eps}'),
            (int(at_steps) == at_steps and at_steps >= 1,
             f'at_steps must be a positive integer, got {at_steps}'),
            (at_bn in self.AT_BN, f'at_bn must be one of {self.AT_BN}, got '
             f'{at_bn!r}'),
            (mix_alpha > 0, f'mix_alpha must be > 0, got {mix_alpha}'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f'CRMTMarginLoss: {message}')
        self.variant = variant
        self.rho = float(rho)
        self.margin_floor = float(margin_floor)
        self.at_eps = float(at_eps)
        self.at_steps = int(at_steps)
        self.at_bn = at_bn
        self.at_clamp = bool(at_clamp)
        self.mix_alpha = float(mix_alpha)

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
