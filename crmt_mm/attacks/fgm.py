"""Fast Gradient Method in the three budget modes (``docs/method.md`` §10).

FGM (Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
ICLR 2015, arXiv 1412.6572; L2 form as in Miyato et al. 2017): one step of
length ε along the L2-normalised gradient of CE(h(x), y), so the perturbation
lies on the sphere ‖δ‖ = ε unless clamping shortens it. All three classes are
:class:`~.l2_attack.L2GradientAttack` with ``steps=1, step_size=eps``.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from .base import check_modality_name
from .l2_attack import L2GradientAttack, joint_label, per_modality_budgets


class MultiModalFGM(L2GradientAttack):
    """FGM with one joint budget: δ^(m) = ε g^(m) / sqrt(Σ_m' ‖g^(m')‖²).

    Every attacked modality shares the per-sample budget
    ``sqrt(Σ_m ‖δ^(m)‖²) = ε`` (reference ``rob_test.py``, multi-modal FGM).
    Shapes: any ``[B, ...]`` per modality; norms over all non-batch dims.

    Args:
        eps (float): joint L2 budget, >= 0 (0 = no-op).
        modalities (Sequence[str], optional): modalities attacked jointly;
            None = every modality of the input. Defaults to None.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'fgm_joint@<eps>'``.
            Defaults to None.

    Example:
        >>> atk = MultiModalFGM(eps=0.2)
        >>> logits = atk.predict(model.fused_logits, x, y, spaces)
    """

    def __init__(self, eps: float, modalities: Optional[Sequence[str]] = None,
                 clamp: bool = True, eps_unit: str = 'normalized',
                 norm: str = 'L2', name: Optional[str] = None):
        super().__init__([(modalities, eps, eps)], kind='fgm',
                         label=joint_label(modalities),
                         clamp=clamp, eps_unit=eps_unit, norm=norm,
                         name=name)


class UniModalFGM(L2GradientAttack):
    """FGM on one modality: δ^(m) = ε g^(m) / ‖g^(m)‖, others untouched.

    Args:
        modality (str): the attacked modality, e.g. ``'audio'``.
        eps (float): L2 budget of that modality, >= 0 (0 = no-op).
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'fgm_<modality>@<eps>'``.
            Defaults to None.

    Example:
        >>> atk = UniModalFGM('audio', eps=0.5)  # name 'fgm_audio@0.5'
    """

    def __init__(self, modality: str, eps: float, clamp: bool = True,
                 eps_unit: str = 'normalized', norm: str = 'L2',
                 name: Optional[str] = None):
        check_modality_name(modality)
        super().__init__([((modality,), eps, eps)], kind='fgm',
                         label=modality, clamp=clamp, eps_unit=eps_unit,
                         norm=norm, name=name)


class PerModalityFGM(L2GradientAttack):
    """FGM with a budget per modality: δ^(m) = ε_m g^(m) / ‖g^(m)‖.

    Each modality is normalised on its own (reference ``rob_test.py``,
    uni-modal FGM with budgets ``(ε_v, ε_a)``); modalities absent from
    ``eps`` are untouched.

    Args:
        eps (Mapping[str, float]): ``{modality: ε_m}``, each >= 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        norm (str): ``'L2'`` or ``'Linf'`` (sign steps, element-wise
            budget; the name gets ``_linf``). Defaults to ``'L2'``.
        name (str, optional): overrides ``'fgm_visual@0.1+audio@0.5'``.
            Defaults to None.
    """

    def __init__(self, eps: Mapping[str, float], clamp: bool = True,
                 eps_unit: str = 'normalized', norm: str = 'L2',
                 name: Optional[str] = None):
        balls = [((m,), e, e) for m, e in per_modality_budgets(eps).items()]
        super().__init__(balls, kind='fgm', clamp=clamp, eps_unit=eps_unit,
                         norm=norm, name=name)
