"""Certified lower bound r(x) on the L2 perturbation radius.

The bound and its per-modality form are derived in ``docs/method.md`` §6.

For fused logits ``h_k = sum_m a_k^(m) z_k^(m) + b_k`` where each uni-modal
logit ``z_k^(m)`` is ``tau_k^(m)``-Lipschitz (L2) in ``x^(m)``, the prediction
stays ``y`` for every joint perturbation with ``||eps|| < r(x)``::

    r(x) = min_{k != y} (h_y - h_k) / sqrt(sum_m c_{y,k}^(m) ** 2),
    c_{y,k}^(m) = |a_y^(m)| tau_y^(m) + |a_k^(m)| tau_k^(m).

Shapes: ``z`` [M, B, K] (modalities stacked in the model's order), ``a`` and
``tau`` [M, K], ``b`` [K], ``labels`` [B] (LongTensor). Radii are in the units
of the inputs the Lipschitz constants were measured in (the normalised input
space for crmt_mm models).
"""
from typing import Tuple

import torch
from torch import Tensor

COMPETITORS = ('min', 'runner_up')


def margin_matrix(z: Tensor, a: Tensor, b: Tensor, labels: Tensor,
                  tau: Tensor, abs_weights: bool = True
                  ) -> Tuple[Tensor, Tensor]:
    """Fused margins ``h_y - h_k`` and per-modality slopes ``c_{y,k}^(m)``.

    Returns:
        tuple: margins [B, K] (0 at k = y) and slopes [M, B, K].
    """
    h = (a[:, None, :] * z).sum(0) + b
    h_y = h.gather(1, labels[:, None])
    margins = h_y - h
    weights = a.abs() if abs_weights else a
    slope = weights * tau                                   # [M, K]
    slopes = slope[:, labels][:, :, None] + slope[:, None, :]  # [M, B, K]
    return margins, slopes


def _ratio(margins: Tensor, scale: Tensor, labels: Tensor) -> Tensor:
    """``margins / scale`` with k = y masked to +inf and 0 scale handled.

    A zero slope means the logit difference cannot change at all, so the
    radius is +inf for a positive margin and -inf for a negative one.
    """
    inf = torch.full_like(margins, float('inf'))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    ratio = torch.where(scale > 0, margins / safe,
                        torch.where(margins > 0, inf,
                                    torch.where(margins < 0, -inf,
                                                torch.zeros_like(margins))))
    return ratio.scatter(1, labels[:, None], float('inf'))


def _reduce(ratio: Tensor, margins: Tensor, labels: Tensor,
            competitor: str) -> Tensor:
    if competitor == 'min':
        return ratio.min(dim=1).values
    # The reference's choice: the class with the largest fused logit other
    # than y (smallest margin), which can over-state the minimum ratio.
    masked = margins.scatter(1, labels[:, None], float('inf'))
    runner_up = masked.argmin(dim=1, keepdim=True)
    return ratio.gather(1, runner_up).squeeze(1)


def _check(competitor: str) -> None:
    if competitor not in COMPETITORS:
        raise ValueError(f'competitor must be one of {COMPETITORS}, '
                         f'got {competitor!r}')


def certified_radius(z: Tensor, a: Tensor, b: Tensor, tau: Tensor,
                     labels: Tensor, competitor: str = 'min',
                     abs_weights: bool = True) -> Tensor:
    """Joint certified radius r(x) for every sample, signed.

    ``r > 0`` exactly when the sample is classified correctly; certification
    clips at 0, the step-2 objective keeps the sign.

    Args:
        z (Tensor): uni-modal logits [M, B, K].
        a (Tensor): integration weights [M, K].
        b (Tensor): shared bias [K].
        tau (Tensor): Lipschitz constants of ``z`` w.r.t. each modality
            input [M, K].
        labels (Tensor): classes to certify [B].
        competitor (str): ``'min'`` (the bound: min over every k != y) or
            ``'runner_up'`` (reference parity; not a valid bound in general).
            Defaults to ``'min'``.
        abs_weights (bool): use ``|a|`` in the denominator (valid for any
            sign). False reproduces the reference (valid only for a >= 0).
            Defaults to True.

    Returns:
        Tensor: radii [B].
    """
    _check(competitor)
    margins, slopes = margin_matrix(z, a, b, labels, tau, abs_weights)
    return _reduce(_ratio(margins, _safe_norm(slopes), labels), margins,
                   labels, competitor)


def _safe_norm(slopes: Tensor) -> Tensor:
    """L2 norm over modalities whose gradient stays finite at 0.

    ``sqrt`` has an infinite derivative at 0, which turns into NaN (0 * inf)
    in the integration weights' gradient once a clamp drives them to 0.
    """
    squared = slopes.pow(2).sum(0)
    positive = squared > 0
    root = torch.where(positive, squared, torch.ones_like(squared)).sqrt()
    return torch.where(positive, root, torch.zeros_like(root))


def modality_radii(z: Tensor, a: Tensor, b: Tensor, tau: Tensor,
                   labels: Tensor, competitor: str = 'min') -> Tensor:
    """Per-modality radii r^(m)(x): only modality m is perturbed.

    Returns:
        Tensor: radii [M, B]; for correctly classified samples
        ``certified_radius <= min_m modality_radii``.
    """
    _check(competitor)
    margins, slopes = margin_matrix(z, a, b, labels, tau, True)
    return torch.stack([
        _reduce(_ratio(margins, slopes[m].abs(), labels), margins, labels,
                competitor) for m in range(z.shape[0])
    ])
