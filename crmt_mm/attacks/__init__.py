"""Perturbations for robust evaluation (``docs/evaluation.md``), in plain torch.

Every perturbation follows one contract (:class:`Perturbation`):
``perturb(forward, x, y, spaces)`` returns perturbed modality dicts and
``predict(...)`` the fused logits ``[B, K]`` under the perturbation, where
``forward(x, drop=())`` is the model's fused-logit function. Budgets are
per-sample L2 norms (or, with ``norm='Linf'``, per-element bounds) in the
normalised input space unless ``eps_unit='raw'``. ``APGD``, ``Square`` and the
``MultiModalAutoAttack`` ensemble (:mod:`.autoattack`) are the strong
evaluation; ``attack(..., active=mask)`` runs an attack on a subset.

Imports inside this package are relative only, so it can be loaded without
the rest of ``crmt_mm`` (and without mmengine/mmaction).
"""
from .apgd import APGD
from .autoattack import (EnsembleResult, MultiModalAutoAttack, SweepResult,
                         nested_sweep)
from .base import (BUDGET_SPACE, DESCRIPTION_KEYS, InputSpace, Perturbation,
                   UnknownModalityError, description)
from .builder import PERTURBATION_TYPES, build_perturbations, check_modalities
from .fgm import MultiModalFGM, PerModalityFGM, UniModalFGM
from .balls import GRAD_NORM_GUARD, NORMS, L2Ball, LinfBall
from .ball_attack import AttackOutput, BallAttack, Geometry
from .l2_attack import L2GradientAttack
from .missing import MissingModality
from .noise import GaussianNoise
from .pgd import MultiModalPGD, PerModalityPGD, UniModalPGD
from .square import Square
from .worst_case import WorstCase

__all__ = [
    'InputSpace', 'Perturbation', 'UnknownModalityError', 'description',
    'DESCRIPTION_KEYS', 'BUDGET_SPACE', 'L2Ball',
    'L2GradientAttack', 'GRAD_NORM_GUARD', 'MultiModalFGM', 'UniModalFGM',
    'PerModalityFGM', 'MultiModalPGD', 'UniModalPGD', 'PerModalityPGD',
    'MissingModality', 'GaussianNoise', 'WorstCase', 'PERTURBATION_TYPES',
    'build_perturbations', 'check_modalities', 'LinfBall', 'NORMS',
    'AttackOutput', 'BallAttack', 'Geometry', 'APGD', 'Square',
    'MultiModalAutoAttack', 'EnsembleResult', 'SweepResult', 'nested_sweep'
]
