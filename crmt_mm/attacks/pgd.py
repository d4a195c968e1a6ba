"""Projected Gradient Descent in the three budget modes (docs/method.md §10).

PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018, arXiv 1706.06083), L2 form: ``steps`` ascent steps along
the L2-normalised gradient of CE(h(x+δ), y), each projected onto the budget
ball(s) and clamped to the valid range. Protocol defaults: 4 steps of ε/3, no
random start. All classes are :class:`~.l2_attack.L2GradientAttack`.
"""
from __future__ import annotations

from numbers import Real
from typing import Mapping, Optional, Sequence, Union

from .base import check_modality_name
from .l2_attack import L2GradientAttack, joint_label, per_modality_budgets

#: Default step as a fraction of ε: the protocol's "4 steps of ε/3".
DEFAULT_STEP_FRACTION = 1 / 3


def _step_size(eps, step_size, what='step_size'):
    """``step_size`` if given (a number), else ε/3 (checked by the base)."""
    if step_size is None:
        # A bad eps is reported by the base class; avoid a TypeError here.
        return eps * DEFAULT_STEP_FRACTION if isinstance(eps, Real) else eps
    return step_size


class MultiModalPGD(L2GradientAttack):
    """PGD-L2 with one joint budget over several modalities.

    Step: δ^(m) += α g^(m) / sqrt(Σ_m' ‖g^(m')‖²); then projection onto the
    joint ball sqrt(Σ_m ‖δ^(m)‖²) <= ε and clamping (reference
    ``rob_test.py``, multi-modal PGD). Shapes: any ``[B, ...]`` per modality.

    Args:
        eps (float): joint L2 budget, >= 0 (0 = no-op).
        modalities (Sequence[str], optional): modalities attacked jointly;
            None = every modality of the input. Defaults to None.
        steps (int): ascent steps. Defaults to 4.
        step_size (float, optional): α in the units of ``eps``; None = ε/3.
            Defaults to None.
        random_start (bool): start uniformly in direction inside the ball.
            Defaults to False.
        restarts (int): runs per batch, keeping per sample the first that
            fools the model (else the last); > 1 needs ``random_start``.
            Defaults to 1.
        seed (int): seed of the random start (re-seeded every call).
            Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds after each step.
            Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'pgd_joint@<eps>'``.
            Defaults to None.

    Example:
        >>> atk = MultiModalPGD(eps=0.2)  # 4 steps of 0.2 / 3
        >>> x_adv = atk.perturb(model.fused_logits, x, y, spaces)
    """

    def __init__(self, eps: float, modalities: Optional[Sequence[str]] = None,
                 steps: int = 4, step_size: Optional[float] = None,
                 random_start: bool = False, restarts: int = 1, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 norm: str = 'L2', name: Optional[str] = None):
        super().__init__([(modalities, eps, _step_size(eps, step_size))],
                         kind='pgd', label=joint_label(modalities),
                         steps=steps,
                         random_start=random_start, restarts=restarts,
                         seed=seed, clamp=clamp, eps_unit=eps_unit,
                         norm=norm, name=name)


class UniModalPGD(L2GradientAttack):
    """PGD-L2 on one modality; the other modalities are untouched.

    Step: δ^(m) += α g^(m) / ‖g^(m)‖, projection onto ‖δ^(m)‖ <= ε, clamp.
    Same arguments as :class:`MultiModalPGD` with ``modality`` instead of
    ``modalities``.

    Args:
        modality (str): the attacked modality, e.g. ``'audio'``.
        eps (float): L2 budget of that modality, >= 0 (0 = no-op).
        steps (int): ascent steps. Defaults to 4.
        step_size (float, optional): α; None = ε/3. Defaults to None.
        random_start (bool): random start in the ball. Defaults to False.
        restarts (int): runs per batch (see :class:`MultiModalPGD`).
            Defaults to 1.
        seed (int): seed of the random start. Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'pgd_<modality>@<eps>'``.
            Defaults to None.

    Example:
        >>> atk = UniModalPGD('audio', eps=0.5)  # name 'pgd_audio@0.5'
    """

    def __init__(self, modality: str, eps: float, steps: int = 4,
                 step_size: Optional[float] = None,
                 random_start: bool = False, restarts: int = 1, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 norm: str = 'L2', name: Optional[str] = None):
        check_modality_name(modality)
        super().__init__([((modality,), eps, _step_size(eps, step_size))],
                         kind='pgd', label=modality, steps=steps,
                         random_start=random_start, restarts=restarts,
                         seed=seed, clamp=clamp, eps_unit=eps_unit,
                         norm=norm, name=name)


class PerModalityPGD(L2GradientAttack):
    """PGD-L2 with a budget per modality, all attacked at once.

    Step: δ^(m) += α_m g^(m) / ‖g^(m)‖ for each m, then each modality is
    projected onto its own ball ‖δ^(m)‖ <= ε_m. The reference projects onto
    the joint ball sqrt(Σ ε_m²) instead; both agree when one modality is
    attacked (``docs/method.md`` §12 #17).

    Args:
        eps (Mapping[str, float]): ``{modality: ε_m}``, each >= 0.
        steps (int): ascent steps. Defaults to 4.
        step_size (float | Mapping[str, float], optional): α for every
            modality, or ``{modality: α_m}`` with the keys of ``eps``;
            None = ε_m / 3 each. Defaults to None.
        random_start (bool): random start in each ball. Defaults to False.
        restarts (int): runs per batch (see :class:`MultiModalPGD`).
            Defaults to 1.
        seed (int): seed of the random start. Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'pgd_visual@0.1+audio@0.5'``.
            Defaults to None.

    Example:
        >>> atk = PerModalityPGD(dict(visual=0.0, audio=0.1))
    """

    def __init__(self, eps: Mapping[str, float], steps: int = 4,
                 step_size: Union[None, float, Mapping[str, float]] = None,
                 random_start: bool = False, restarts: int = 1, seed: int = 0,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 norm: str = 'L2', name: Optional[str] = None):
        eps = per_modality_budgets(eps)
        if isinstance(step_size, Mapping):
            if set(step_size) != set(eps):
                raise ValueError(
                    f'step_size keys {sorted(step_size)} must match the eps '
                    f'keys {sorted(eps)}')
            sizes = dict(step_size)
        else:
            sizes = {m: step_size for m in eps}
        balls = [((m,), e, _step_size(e, sizes[m])) for m, e in eps.items()]
        super().__init__(balls, kind='pgd', steps=steps,
                         random_start=random_start, restarts=restarts,
                         seed=seed, clamp=clamp, eps_unit=eps_unit,
                         norm=norm, name=name)
