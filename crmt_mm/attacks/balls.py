"""Budget balls over one or several modalities: the L2 and L∞ threat models.

A budget is "a ball over some modalities": one ball over every modality
(joint budget), one ball over a single modality (uni-modal), or one ball per
modality (per-modality budgets). Every attack of this package steps, projects
and samples through these two classes, so a threat model is implemented once.

All tensors are ``{modality: [B, ...]}`` dicts of perturbations δ (in the
attack's budget units, see :class:`~.ball_attack.BallAttack`); norms are per
sample over every non-batch dim of the ball's modalities.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .base import per_sample, sq_norm

#: Floor on a gradient norm before dividing by it. A gradient with norm
#: below it (in practice only an exactly zero gradient: a saturated or
#: unused modality) gives a proportionally shorter step instead of 0/0 = NaN.
GRAD_NORM_GUARD = 1e-12

#: Threat models, as spelled in configs.
NORMS = ('L2', 'Linf')

Step = Union[float, Tensor]  # a number, or a per-sample ``[B]`` tensor


def _step(step: Step, like: Tensor) -> Union[float, Tensor]:
    return per_sample(step, like) if isinstance(step, Tensor) else step


class L2Ball:
    """Per-sample L2 ball over the concatenation of some modalities.

    Holds ``sqrt(sum_m ||delta^(m)||^2) <= eps`` for every sample, each norm
    over all non-batch dims of that modality's tensor (any rank).

    Args:
        modalities (tuple[str]): modalities sharing the budget.
        eps (float): radius, > 0 (a zero budget is dropped by the attacks).
        step_size (float, optional): PGD step length (L2, same units as
            ``eps``); attacks with their own schedule pass the step to
            :meth:`ascent`. Defaults to None.
    """

    norm_name = 'L2'

    def __init__(self, modalities: Tuple[str, ...], eps: float,
                 step_size: Optional[float] = None):
        self.modalities = modalities
        self.eps = eps
        self.step_size = step_size

    def norm(self, t: Mapping[str, Tensor]) -> Tensor:
        """Joint per-sample norm ``[B]`` of the ball's modalities in ``t``."""
        return torch.sqrt(sum(sq_norm(t[m]) for m in self.modalities))

    def ascent(self, grads: Mapping[str, Tensor],
               step: Optional[Step] = None) -> Dict[str, Tensor]:
        """``step * g^(m) / sqrt(sum_m' ||g^(m')||^2)`` per modality.

        The joint normalisation is what makes the step follow the steepest
        L2 ascent for the whole ball, rather than giving every modality a
        unit step of its own. ``step`` (a float or per-sample ``[B]``)
        defaults to ``step_size``.
        """
        step = self.step_size if step is None else step
        n = self.norm(grads).clamp_min(GRAD_NORM_GUARD)
        scale = step / n
        return {m: grads[m] * per_sample(scale, grads[m])
                for m in self.modalities}

    def project(self, delta: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Scale each sample's joint delta back onto the ball if outside."""
        n = self.norm(delta)
        # eps / max(n, eps) is 1 inside the ball and never divides by 0.
        factor = self.eps / n.clamp_min(self.eps)
        return {m: delta[m] * per_sample(factor, delta[m])
                for m in self.modalities}

    def to_boundary(self, delta: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Scale each sample's joint delta onto the sphere ``||δ|| = eps``."""
        factor = self.eps / self.norm(delta).clamp_min(GRAD_NORM_GUARD)
        return {m: delta[m] * per_sample(factor, delta[m])
                for m in self.modalities}

    def sample(self, like: Mapping[str, Tensor], generator: torch.Generator,
               boundary: bool = False) -> Dict[str, Tensor]:
        """Random start: uniform direction, radius ``eps * U(0, 1)``.

        The radius is uniform (as in torchattacks' PGDL2), not uniform in
        volume: in 10^5 dimensions a volume-uniform draw lies on the sphere.
        ``boundary=True`` puts it on the sphere (APGD's start).
        """
        ref = like[self.modalities[0]]
        z = {m: torch.randn(like[m].shape, generator=generator,
                            device=like[m].device, dtype=like[m].dtype)
             for m in self.modalities}
        radius = self.eps * torch.rand(ref.shape[0], generator=generator,
                                       device=ref.device, dtype=ref.dtype)
        if boundary:
            radius = torch.full_like(radius, self.eps)
        scale = radius / self.norm(z).clamp_min(GRAD_NORM_GUARD)
        return {m: z[m] * per_sample(scale, z[m]) for m in self.modalities}


class LinfBall(L2Ball):
    """Per-sample L∞ ball: ``|δ^(m)_i| <= eps`` for every element.

    A joint L∞ ball over several modalities is the same as one ball of the
    same radius per modality; the class accepts both forms so that budgets
    are written the same way for either norm. The steepest L∞ ascent is the
    gradient's sign, so :meth:`ascent` needs no joint normalisation.

    Args:
        modalities (tuple[str]): modalities sharing the budget.
        eps (float): radius, > 0, per element.
        step_size (float, optional): PGD step per element. Defaults to None.
    """

    norm_name = 'Linf'

    def norm(self, t: Mapping[str, Tensor]) -> Tensor:
        """Per-sample max-abs ``[B]`` over the ball's modalities."""
        return torch.stack([t[m].reshape(t[m].shape[0], -1).abs().amax(dim=1)
                            for m in self.modalities]).amax(dim=0)

    def ascent(self, grads: Mapping[str, Tensor],
               step: Optional[Step] = None) -> Dict[str, Tensor]:
        """``step * sign(g^(m))`` per modality (0 where the gradient is 0)."""
        step = self.step_size if step is None else step
        return {m: torch.sign(grads[m]) * _step(step, grads[m])
                for m in self.modalities}

    def project(self, delta: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Clip every element to ``[-eps, eps]``."""
        return {m: delta[m].clamp(-self.eps, self.eps)
                for m in self.modalities}

    def to_boundary(self, delta: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Scale each sample so that its largest element is ``eps``."""
        factor = self.eps / self.norm(delta).clamp_min(GRAD_NORM_GUARD)
        return {m: delta[m] * per_sample(factor, delta[m])
                for m in self.modalities}

    def sample(self, like: Mapping[str, Tensor], generator: torch.Generator,
               boundary: bool = False) -> Dict[str, Tensor]:
        """Uniform in the cube; ``boundary=True`` rescales so max = eps."""
        u = {m: self.eps * (2 * torch.rand(
            like[m].shape, generator=generator, device=like[m].device,
            dtype=like[m].dtype) - 1) for m in self.modalities}
        return self.to_boundary(u) if boundary else u


BALLS = dict(L2=L2Ball, Linf=LinfBall)


def check_norm(norm) -> str:
    """Return ``norm`` if it is ``'L2'`` or ``'Linf'``, else raise."""
    if norm not in NORMS:
        raise ValueError(f'norm must be one of {NORMS}, got {norm!r}')
    return norm
